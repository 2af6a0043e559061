#!/usr/bin/env python3
"""Writes a compose project with N services to DIR (default 1000 services), for the loader benchmark.

Every service uses a mix of short syntax the loader must normalise: ports, volumes, environment
lists, depends_on, healthchecks, labels, networks, extends and interpolated values, plus an
override file and a .env, so the benchmark exercises every phase.
"""
import os
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
out = sys.argv[2] if len(sys.argv) > 2 else "bench-project"
os.makedirs(out, exist_ok=True)
lines = ["name: bench", "x-common: &common", "  restart: unless-stopped",
         "  logging: {driver: json-file, options: {max-size: 10m}}", "services:",
         "  base:", "    image: busybox:${TAG:-latest}", "    environment: [BASE=1]"]
for i in range(n):
    lines += [
        f"  svc{i}:",
        "    <<: *common",
        "    extends: base" if i % 10 == 0 else f"    image: registry.local/app{i % 17}:${{TAG:-latest}}",
        f"    command: sh -c 'echo service {i} && sleep infinity'",
        f"    ports: ['{10000 + i}:80', '127.0.0.1:{20000 + i}:443/tcp']",
        f"    volumes: ['./data/{i}:/data:ro', 'vol{i % 50}:/var/lib/app', '/cache']",
        f"    environment: [INDEX={i}, 'NAME=svc{i}', 'URL=http://svc{max(i - 1, 0)}:80', HOME]",
        f"    labels: {{com.example.index: '{i}', com.example.tier: 'tier{i % 5}'}}",
        "    healthcheck: {test: 'wget -q -O- localhost', interval: 30s, timeout: 5s, retries: 3}",
        f"    networks: [front, back{i % 4}]",
        "    mem_limit: 256m",
        "    deploy: {resources: {limits: {cpus: '0.5', memory: 256M}}}",
    ]
    if i > 0:
        lines.append(f"    depends_on: [svc{i - 1}]" if i % 3 else
                     f"    depends_on: {{svc{i - 1}: {{condition: service_healthy}}}}")
lines.append("networks:")
lines += ["  front: {}"] + [f"  back{k}: {{driver: bridge}}" for k in range(4)]
lines.append("volumes:")
lines += [f"  vol{k}: {{}}" for k in range(50)]
with open(os.path.join(out, "compose.yaml"), "w") as f:
    f.write("\n".join(lines) + "\n")
over = ["services:"]
for i in range(0, n, 7):
    over += [f"  svc{i}:", "    environment: [OVERRIDDEN=1]", f"    ports: ['{30000 + i}:8080']"]
with open(os.path.join(out, "compose.override.yaml"), "w") as f:
    f.write("\n".join(over) + "\n")
with open(os.path.join(out, ".env"), "w") as f:
    f.write("TAG=1.2.3\n")
