#!/usr/bin/env bash
# Record expected outputs for the compose loader conformance fixtures from the
# reference Docker Compose v2 binary.
#
# Usage:
#   compose-fixtures/record.sh                 # record every case
#   compose-fixtures/record.sh CASE [CASE...]  # e.g. merge-ports-dedup invalid/dependency-cycle
#
# Environment:
#   COMPOSE_BIN   reference binary (default /usr/local/bin/docker-compose)
#
# For each valid case (a folder directly under compose-fixtures/, except invalid/):
#   runs   env -i PATH=... HOME=/root <env lines> $COMPOSE_BIN <args line 1> config --format json <args line 2>
#   in the case folder (or in the `cwd` subfolder), requires exit status 0 and writes
#   expected.json (stdout) and, when stderr is not empty, compose-stderr.txt.
# For each invalid case (folder under compose-fixtures/invalid/):
#   same command, requires a non-zero exit status and writes compose-error.txt (stderr).
#
# In all recorded files the case folder's absolute path is replaced by the
# literal ${FIXTURE_DIR}; in cases whose files contain "~", the home directory
# (/root) is replaced by ${HOME} where it starts a path; logrus timestamps
# (time="...") in stderr are replaced by time="${TIME}".
set -euo pipefail

COMPOSE_BIN=${COMPOSE_BIN:-/usr/local/bin/docker-compose}
FIXTURES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REC_HOME=/root
REC_PATH=/usr/local/bin:/usr/bin:/bin

if [[ ! -x "$COMPOSE_BIN" ]]; then
  echo "record.sh: reference binary $COMPOSE_BIN not found" >&2
  exit 2
fi

# split_args LINE -> prints NUL-separated words (POSIX shell quoting rules, no expansion)
split_args() {
  python3 -c 'import shlex,sys; sys.stdout.write("".join(a + "\0" for a in shlex.split(sys.argv[1])))' "$1"
}

# placeholders FILE CASE_DIR [home]: in-place path replacement
placeholders() {
  python3 - "$1" "$2" "$REC_HOME" "${3:-}" <<'PY'
import re, sys
path, case_dir, home = sys.argv[1], sys.argv[2], sys.argv[3]
with open(path, encoding="utf-8") as f:
    text = f.read()
text = text.replace(case_dir, "${FIXTURE_DIR}")
# logrus timestamps in warnings are not reproducible
text = re.sub(r'time="[0-9T:.+-]+Z?"', 'time="${TIME}"', text)
# home directory: only for cases that use "~" (see record_case), and only where
# it starts a path (start of a JSON string / message word) as a whole component
if len(sys.argv) > 4 and sys.argv[4] == "home":
    text = re.sub(r'(?<=["\s=:(])' + re.escape(home) + r'(?=[/"\s:]|$)', "${HOME}", text)
with open(path, "w", encoding="utf-8") as f:
    f.write(text)
PY
}

record_case() {
  local rel=$1
  local dir="$FIXTURES/$rel"
  local kind=valid
  [[ "$rel" == invalid/* ]] && kind=invalid
  if [[ ! -d "$dir" ]]; then
    echo "record.sh: no such case: $rel" >&2
    return 1
  fi
  dir=$(cd "$dir" && pwd -P)

  local -a pre=() post=() envs=()
  if [[ -f "$dir/args" ]]; then
    local l1 l2
    l1=$(sed -n 1p "$dir/args")
    l2=$(sed -n 2p "$dir/args")
    [[ -n "$l1" ]] && mapfile -d '' -t pre < <(split_args "$l1")
    [[ -n "$l2" ]] && mapfile -d '' -t post < <(split_args "$l2")
  fi
  if [[ -f "$dir/env" ]]; then
    local line
    while IFS= read -r line || [[ -n "$line" ]]; do
      [[ -z "$line" ]] && continue
      envs+=("$line")
    done < "$dir/env"
  fi
  local run_dir="$dir"
  if [[ -f "$dir/cwd" ]]; then
    run_dir="$dir/$(head -n1 "$dir/cwd")"
  fi

  # cases that use "~" get /root replaced by ${HOME}
  local home_flag=""
  if grep -rqsI --exclude=expected.json --exclude='compose-*.txt' -e '~' "$dir"; then
    home_flag=home
  fi

  local out err rc
  out=$(mktemp) err=$(mktemp)
  set +e
  (cd "$run_dir" && env -i PATH="$REC_PATH" HOME="$REC_HOME" ${envs[@]+"${envs[@]}"} \
      "$COMPOSE_BIN" ${pre[@]+"${pre[@]}"} config --format json ${post[@]+"${post[@]}"}) >"$out" 2>"$err"
  rc=$?
  set -e

  if [[ $kind == valid ]]; then
    if [[ $rc -ne 0 ]]; then
      echo "FAIL $rel: reference exited $rc for a valid case:" >&2
      cat "$err" >&2
      rm -f "$out" "$err"
      return 1
    fi
    if [[ ! -s "$out" ]]; then
      echo "FAIL $rel: empty output" >&2
      rm -f "$out" "$err"
      return 1
    fi
    # the binary prints no trailing newline; add one
    { cat "$out"; [[ -n "$(tail -c1 "$out")" ]] && echo; } > "$dir/expected.json"
    placeholders "$dir/expected.json" "$dir" "$home_flag"
    if ! python3 -m json.tool "$dir/expected.json" >/dev/null; then
      echo "FAIL $rel: expected.json is not valid JSON" >&2
      rm -f "$out" "$err"
      return 1
    fi
    if [[ -s "$err" ]]; then
      cp "$err" "$dir/compose-stderr.txt"
      placeholders "$dir/compose-stderr.txt" "$dir" "$home_flag"
    else
      rm -f "$dir/compose-stderr.txt"
    fi
    echo "ok   $rel"
  else
    if [[ $rc -eq 0 ]]; then
      echo "FAIL $rel: reference exited 0 for an invalid case" >&2
      rm -f "$out" "$err"
      return 1
    fi
    cp "$err" "$dir/compose-error.txt"
    placeholders "$dir/compose-error.txt" "$dir" "$home_flag"
    echo "ok   $rel (exit $rc)"
  fi
  rm -f "$out" "$err"
}

cases=()
if [[ $# -gt 0 ]]; then
  for c in "$@"; do cases+=("${c%/}"); done
else
  for d in "$FIXTURES"/*/; do
    n=$(basename "$d")
    [[ $n == invalid ]] && continue
    cases+=("$n")
  done
  for d in "$FIXTURES"/invalid/*/; do
    [[ -d "$d" ]] && cases+=("invalid/$(basename "$d")")
  done
fi

failed=0
for c in "${cases[@]}"; do
  record_case "$c" || failed=$((failed + 1))
done
echo "recorded $(( ${#cases[@]} - failed )) of ${#cases[@]} case(s)"
[[ $failed -eq 0 ]]
