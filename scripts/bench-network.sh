#!/usr/bin/env bash
# Network benchmark: endpoint setup/teardown time, DNS latency from inside a container namespace,
# and TCP throughput and connection rate through a berth published port, against a direct
# loopback connection and Docker's docker-proxy, in the same run (benches/network.rs).
# Usage: bash scripts/bench-network.sh      (root; installs docker.io for docker-proxy if missing)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive
if ! [ -x /usr/sbin/docker-proxy ] && ! [ -x /usr/bin/docker-proxy ]; then
  apt-get update -qq && apt-get install -y -qq docker.io >/dev/null
fi
echo "kernel $(uname -r), $(nproc) cores"
cargo bench -q --bench network
