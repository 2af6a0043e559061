#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit, integration and conformance tests.
# Needs the reference Docker Compose v2 binary (scripts/setup-reference.sh installs it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-reference.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
