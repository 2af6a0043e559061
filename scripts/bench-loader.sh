#!/usr/bin/env bash
# Loader benchmark: load and normalise a generated N-service project (default 1000) with
# `berth config` and with Docker Compose v2's `docker-compose config`, in the same run, and
# report the time ratio. Target: berth ≤ 0.05× Compose.
# Usage: scripts/bench-loader.sh [N] [RUNS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n=${1:-1000}
runs=${2:-10}
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null; }
bash scripts/setup-reference.sh >/dev/null
cargo build --release -q
dir=$(mktemp -d /tmp/berth-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
python3 scripts/gen-project.py "$n" "$dir/project"
berth=$PWD/target/release/berth
cd "$dir/project"
# Both must load the project, and agree on it, before timing means anything.
"$berth" config --format json > "$dir/berth.json"
docker-compose config --format json > "$dir/compose.json"
python3 - "$dir/berth.json" "$dir/compose.json" <<'PY'
import json, sys
def norm(v):  # the allowed differences of docs/conformance.md: key order, null/{} vs absent
    if isinstance(v, dict):
        o = {k: norm(x) for k, x in v.items()}
        o = {k: x for k, x in o.items() if x is not None}
        return o or None
    if isinstance(v, list):
        return [norm(x) for x in v]
    return v
a, b = (norm(json.load(open(p))) for p in sys.argv[1:3])
if a != b:
    sys.exit("bench-loader: berth and docker-compose disagree on the generated project")
PY
hyperfine --warmup 2 --runs "$runs" -N --export-json "$dir/times.json" \
  -n berth "$berth config --format json" \
  -n docker-compose "docker-compose config --format json" >&2
python3 - "$dir/times.json" "$n" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
b, c = r["berth"], r["docker-compose"]
ratio = b["median"] / c["median"]
print(f"services={sys.argv[2]} berth median={b['median']*1000:.1f} ms (stddev {b['stddev']*1000:.1f}) "
      f"docker-compose median={c['median']*1000:.1f} ms (stddev {c['stddev']*1000:.1f}) ratio={ratio:.4f} "
      f"target<=0.05 {'MET' if ratio <= 0.05 else 'MISSED'}")
PY
