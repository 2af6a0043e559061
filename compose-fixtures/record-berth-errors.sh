#!/usr/bin/env bash
# Writes expected-error.txt for invalid cases that lack one, from berth's own stderr, so a reviewer
# can read and commit it. Usage: compose-fixtures/record-berth-errors.sh [CASE...]
# Existing files are kept; delete one to re-record it. BERTH defaults to target/debug/berth.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
berth=${BERTH:-$here/../target/debug/berth}
cases=("$@")
[ ${#cases[@]} -gt 0 ] || mapfile -t cases < <(cd "$here/invalid" && ls -d */ | tr -d /)
for c in "${cases[@]}"; do
  d="$here/invalid/$c"
  [ -f "$d/expected-error.txt" ] && continue
  before=$(sed -n 1p "$d/args" 2>/dev/null || true)
  after=$(sed -n 2p "$d/args" 2>/dev/null || true)
  cwd=$d; [ -f "$d/cwd" ] && cwd="$d/$(cat "$d/cwd")"
  envs=(); [ -f "$d/env" ] && mapfile -t envs < "$d/env"
  set +e
  err=$(cd "$cwd" && eval "env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root ${envs[*]:-} \"$berth\" $before config --format json $after" 2>&1 >/dev/null)
  rc=$?
  set -e
  if [ $rc -eq 0 ]; then echo "$c: berth succeeded; not recording" >&2; continue; fi
  printf '%s\n' "${err//$d/\$\{FIXTURE_DIR\}}" > "$d/expected-error.txt"
  echo "$c: $(cat "$d/expected-error.txt")"
done
