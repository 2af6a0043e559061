#!/usr/bin/env bash
# Compose lifecycle benchmark: `up -d`, `down -t 0` and `down` (with a stop grace period) of generated
# busybox projects, berth against Docker Compose v2 (`docker compose` on Debian's dockerd) and
# podman-compose (on Debian's podman and crun), in the same run, with hyperfine.
#
# Projects (one service per container, default network, no ports, image localhost/busybox:latest):
#   bench3     3 services running `sleep infinity`
#   bench20    20 services running `sleep infinity`
#   benchterm  20 services that ignore SIGTERM (`sh -c 'trap "" TERM; sleep infinity & wait'`) with
#         stop_grace_period 2s, so a plain `down` must wait the grace period once, then SIGKILL.
# `sleep infinity` as PID 1 ignores SIGTERM too (the kernel drops signals without a handler sent to a
# PID namespace's init), so bench3 and bench20 are only taken down with `-t 0`; benchterm ignores it
# explicitly, so it does not depend on what each engine runs as PID 1.
#
# Usage: sudo bash scripts/bench-compose.sh     (root, Debian 12; not run by CI)
# It installs what is missing: docker.io, podman, crun, hyperfine, busybox-static, iptables, nftables
# with apt; Docker Compose v2 with scripts/setup-reference.sh (copied to
# ~/.docker/cli-plugins/docker-compose); podman-compose from PyPI in a venv under /opt/berth-peers.
# It starts its own dockerd (own data root, exec root and socket under $BENCH_DIR) unless one already
# answers on /var/run/docker.sock, and gives podman its own storage and network config the same way.
# At the end it takes every project down, stops the dockerd it started (by PID), and puts back what
# the engines changed on the host: firewall tables (dockerd sets the FORWARD policy to DROP),
# forwarding sysctls, bridges, the hugetlb cgroup mount crun needs on this hybrid host, and runtime
# directories that were not there before.
#
# Env: RUNS=5 WARMUP=1  BERTH=path (default: target/release/berth, built here)
#      BERTH_ROOT=/tmp/berth-bench-compose  BENCH_DIR=/tmp/berth-bench-compose.work (projects, JSON)
#      SKIP_DOCKER=1  SKIP_PODMAN=1  SKIP_BERTH=1  GRACE=2 (seconds, the term project's grace period)
# Command lines are kept as strings and split on spaces on purpose, as hyperfine -N splits them.
# shellcheck disable=SC2086,SC2046
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
GRACE=${GRACE:-2}
BERTH_ROOT=${BERTH_ROOT:-/tmp/berth-bench-compose}
BENCH_DIR=${BENCH_DIR:-/tmp/berth-bench-compose.work}
SKIP_DOCKER=${SKIP_DOCKER:-0}
SKIP_PODMAN=${SKIP_PODMAN:-0}
SKIP_BERTH=${SKIP_BERTH:-0}
PEERS_VENV=${BERTH_PEERS:-/opt/berth-peers}
DOCKER=/usr/bin/docker                                 # Debian's CLI, the same version as dockerd
PODMAN_COMPOSE=$PEERS_VENV/podman-compose/bin/podman-compose
[ "$(id -u)" = 0 ] || { echo "bench-compose: run as root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive

# ------------------------------------------------------------------------------------ packages
need=()
[ -x /bin/busybox ] || need+=(busybox-static)
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v iptables >/dev/null || need+=(iptables)
command -v nft >/dev/null || need+=(nftables)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "$SKIP_DOCKER" != 1 ]; then [ -x /usr/sbin/dockerd ] && [ -x $DOCKER ] || need+=(docker.io); fi
if [ "$SKIP_PODMAN" != 1 ]; then
  command -v podman >/dev/null || need+=(podman)
  command -v crun >/dev/null || need+=(crun)
fi
if ((${#need[@]})); then apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; fi
if [ "$SKIP_DOCKER" != 1 ]; then
  bash scripts/setup-reference.sh >/dev/null            # Compose v2.40.3, the conformance reference
  mkdir -p ~/.docker/cli-plugins
  real=$(readlink -f "$(command -v docker-compose)")
  cmp -s "$real" ~/.docker/cli-plugins/docker-compose || cp "$real" ~/.docker/cli-plugins/docker-compose
fi
if [ "$SKIP_PODMAN" != 1 ] && ! [ -x "$PODMAN_COMPOSE" ]; then
  python3 -m venv "$PEERS_VENV/podman-compose"
  "$PEERS_VENV/podman-compose/bin/pip" install -q podman-compose==1.6.0
fi
if [ "$SKIP_BERTH" != 1 ] && [ -z "${BERTH:-}" ]; then
  cargo build --release -q
  BERTH=$REPO/target/release/berth
fi
BERTH=${BERTH:-$REPO/target/release/berth}

# ------------------------------------------------------------------- host state, and its restore
# Stop a leftover dockerd of an interrupted earlier run of this script (its PID file is ours).
stop_pid() {  # stop_pid PIDFILE: TERM, wait up to 30 s, then KILL; only the process named in the file
  local f=$1 p
  [ -s "$f" ] || return 0
  p=$(cat "$f")
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p"
    for _ in $(seq 1 60); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  fi
  rm -f "$f"
}
umount_under() {  # unmount everything mounted below DIR (the engines' own mounts there), deepest first
  findmnt -rn -o TARGET | awk -v d="$1/" 'index($0, d) == 1' | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}
case $BENCH_DIR in /tmp/?*|/var/tmp/?*) ;; *) echo "bench-compose: BENCH_DIR must be below /tmp or /var/tmp" >&2; exit 1 ;; esac
stop_pid "$BENCH_DIR/docker/started.pid"
umount_under "$BENCH_DIR"
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"/{projects,results,host}
H=$BENCH_DIR/host
SYSCTLS=(net.ipv4.ip_forward net.ipv6.conf.all.forwarding net.ipv6.conf.default.forwarding
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)
for s in "${SYSCTLS[@]}"; do
  v=$(sysctl -n "$s" 2>/dev/null) && echo "$s=$v"
done >"$H/sysctl"
nft list ruleset >"$H/nft" 2>/dev/null || true
nft list tables >"$H/nft-tables" 2>/dev/null || true
iptables-save >"$H/ipt" 2>/dev/null || true
ip6tables-save >"$H/ip6t" 2>/dev/null || true
ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort >"$H/links"
# Runtime directories the engines create even with private roots; removed at the end if new.
RUNDIRS=(/run/docker /run/containerd /run/crun /run/containers /run/libpod /run/netns /run/mount
  /var/lib/containers /var/lib/docker /var/lib/cni /etc/cni)
for d in "${RUNDIRS[@]}"; do [ -e "$d" ] && echo "$d"; done >"$H/dirs"
mountpoint -q /run/netns && touch "$H/netns-was-mounted"
# Parent cgroups dockerd (cgroupfs driver) and podman (libpod_parent, with conmon's) leave in every
# hierarchy; removed at the end if new (a bound v1 hugetlb hierarchy cannot go away while they exist).
CGPARENTS=(docker libpod_parent berth)
for h in /sys/fs/cgroup/*/; do for c in "${CGPARENTS[@]}"; do [ -d "$h$c" ] && echo "$h$c"; done; done >"$H/cgroups" || true
[ "$BERTH_ROOT" != / ] && ! [ -e "$BERTH_ROOT" ] && touch "$H/berth-root-is-ours"

restore_host() {
  # Firewall: tables the engines created are deleted; tables that were there get their saved rules
  # back (this also puts the FORWARD policy back, which dockerd sets to DROP).
  if [ "$(nft list ruleset 2>/dev/null)" != "$(cat "$H/nft")" ]; then
    nft list tables 2>/dev/null | while read -r _ fam name; do
      grep -qx "table $fam $name" "$H/nft-tables" || nft delete table "$fam" "$name" 2>/dev/null || true
    done
    [ -s "$H/ipt" ] && iptables-restore <"$H/ipt" 2>/dev/null
    [ -s "$H/ip6t" ] && ip6tables-restore <"$H/ip6t" 2>/dev/null
    if [ "$(nft list ruleset 2>/dev/null)" = "$(cat "$H/nft")" ]; then
      echo "host: firewall rules restored"
    else
      echo "host: WARNING: the firewall differs from before the run:" >&2
      diff <(cat "$H/nft") <(nft list ruleset) | head -20 >&2 || true
    fi
  fi
  while IFS='=' read -r s v; do
    [ "$(sysctl -n "$s" 2>/dev/null)" = "$v" ] || { sysctl -qw "$s=$v" && echo "host: $s back to $v"; }
  done <"$H/sysctl"
  # Bridges and veths of docker and podman (docker0, br-<id>, podman<N>, cni-podman<N>, veth*) that
  # appeared during the run.
  ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort | comm -13 "$H/links" - |
    grep -E '^(docker0|br-[0-9a-f]{12}|podman[0-9]+|cni-podman[0-9]+|veth[0-9a-f]+)$' |
    while read -r l; do ip link delete "$l" 2>/dev/null && echo "host: removed link $l"; done
  for h in /sys/fs/cgroup/*/; do
    for c in "${CGPARENTS[@]}"; do
      [ -d "$h$c" ] && ! grep -qx "$h$c" "$H/cgroups" && find "$h$c" -depth -type d -exec rmdir {} + 2>/dev/null
    done
  done
  if [ -e "$H/hugetlb-mounted" ]; then
    # hugetlb goes back to the cgroup2 mount only when its v1 hierarchy dies, which the kernel does at
    # the unmount only if no child cgroup is left, not even one just removed: retry until it has.
    # The hierarchy dies asynchronously, a few hundred ms after the unmount.
    umount /sys/fs/cgroup/hugetlb && rmdir /sys/fs/cgroup/hugetlb
    for i in $(seq 1 20); do
      sleep 0.5
      [ "$(awk '$1 == "hugetlb" {print $2}' /proc/cgroups)" = 0 ] && break
      if ((i % 6 == 0)); then
        mkdir -p "$H/hugetlb" && mount -t cgroup -o hugetlb cgroup "$H/hugetlb" && umount "$H/hugetlb"
      fi
    done
    if [ "$(awk '$1 == "hugetlb" {print $2}' /proc/cgroups)" = 0 ]; then
      echo "host: hugetlb back on the cgroup2 mount"
    else
      echo "host: WARNING: the v1 hugetlb hierarchy is still bound (a cgroup left in it?)" >&2
    fi
  fi
  if ! [ -e "$H/netns-was-mounted" ] && mountpoint -q /run/netns && [ -z "$(ls -A /run/netns)" ]; then
    umount /run/netns
  fi
  for d in "${RUNDIRS[@]}"; do
    [ -e "$d" ] && ! grep -qx "$d" "$H/dirs" && ! findmnt -rn -o TARGET | grep -q "^$d" && rm -rf "$d"
  done
  return 0
}

cleanup() {
  set +e
  echo "cleanup: taking the projects down"
  for p in bench3 bench20 benchterm; do
    [ -f "$BENCH_DIR/projects/$p/compose.yaml" ] || continue
    for e in "${ENGINES[@]}"; do timeout 120 $(cmd "$e" "$p" "down -t 0") >/dev/null 2>&1; done
  done
  if [ "$SKIP_PODMAN" != 1 ] && [ -n "${CONTAINERS_STORAGE_CONF:-}" ]; then
    podman rm -af -t 0 >/dev/null 2>&1; podman pod rm -af >/dev/null 2>&1; podman network prune -f >/dev/null 2>&1
    umount_under "$BENCH_DIR/podman"
    rm -rf "$BENCH_DIR/podman"
  fi
  if [ -s "$BENCH_DIR/docker/started.pid" ]; then
    echo "cleanup: stopping dockerd $(cat "$BENCH_DIR/docker/started.pid")"
    stop_pid "$BENCH_DIR/docker/started.pid"
    cp "$BENCH_DIR/docker/dockerd.log" "$BENCH_DIR/results/"
    umount_under "$BENCH_DIR/docker"
    rm -rf "$BENCH_DIR/docker"
  elif [ -e "$H/docker-image-is-ours" ]; then
    $DOCKER rmi localhost/busybox:latest >/dev/null 2>&1
  fi
  if [ -e "$H/berth-root-is-ours" ] && [ -d "$BERTH_ROOT" ]; then
    if findmnt -rn -o TARGET | grep -q "^$BERTH_ROOT/"; then
      echo "cleanup: WARNING: mounts left under $BERTH_ROOT (berth down left containers?); not removed" >&2
    else
      rm -rf "$BERTH_ROOT"
    fi
  fi
  restore_host
  rm -rf "$H" "$BENCH_DIR/busybox.tar"
  echo "results (hyperfine JSON) and projects: $BENCH_DIR/results, $BENCH_DIR/projects"
}
ENGINES=()
trap cleanup EXIT

# ---------------------------------------------------------------------------------- the engines
cmd() {  # cmd ENGINE PROJECT "ARGS": the command line for one engine
  local f=$BENCH_DIR/projects/$2/compose.yaml
  case $1 in
    berth) echo "$BERTH --root $BERTH_ROOT -f $f -p $2 $3" ;;
    docker) echo "$DOCKER compose -f $f -p $2 $3" ;;
    podman) echo "$PODMAN_COMPOSE -f $f -p $2 $3" ;;
  esac
}
count() {  # count ENGINE PROJECT [-a]: the project's containers (running ones without -a)
  local n=$2
  case $1 in
    berth) $BERTH --root "$BERTH_ROOT" container ps ${3:-} | awk 'NR > 1 {print $NF}' | grep -c "^$n-" ;;
    docker) $DOCKER ps -q ${3:-} --filter "label=com.docker.compose.project=$n" | wc -l ;;
    podman) podman ps -q ${3:-} --filter "label=io.podman.compose.project=$n" | wc -l ;;
  esac
}

bash scripts/make-busybox-rootfs.sh "$BENCH_DIR/rootfs"
tar --numeric-owner -C "$BENCH_DIR/rootfs" -cf "$BENCH_DIR/busybox.tar" .
rm -rf "$BENCH_DIR/rootfs"
IMG=localhost/busybox:latest

if [ "$SKIP_BERTH" != 1 ]; then
  ENGINES+=(berth)
  $BERTH --root "$BERTH_ROOT" image inspect $IMG >/dev/null 2>&1 ||
    $BERTH --root "$BERTH_ROOT" image import -c 'CMD ["/bin/sh"]' "$BENCH_DIR/busybox.tar" $IMG >/dev/null
fi

start_dockerd() {  # our own dockerd: data root, exec root (with its containerd) and socket in $BENCH_DIR
  local D=$BENCH_DIR/docker
  mkdir -p "$D"
  /usr/sbin/dockerd --data-root "$D/data" --exec-root "$D/exec" --pidfile "$D/dockerd.pid" \
    -H "unix://$D/docker.sock" >>"$D/dockerd.log" 2>&1 </dev/null &
  echo $! >"$D/started.pid"
  export DOCKER_HOST=unix://$D/docker.sock
  for _ in $(seq 1 60); do $DOCKER version >/dev/null 2>&1 && break; sleep 0.5; done
  $DOCKER version >/dev/null || { tail -20 "$D/dockerd.log" >&2; exit 1; }
}

if [ "$SKIP_DOCKER" != 1 ]; then
  ENGINES+=(docker)
  if DOCKER_HOST=unix:///var/run/docker.sock $DOCKER version >/dev/null 2>&1; then
    export DOCKER_HOST=unix:///var/run/docker.sock
    echo "docker: using the dockerd already running on /var/run/docker.sock (left running)"
  else
    start_dockerd
  fi
  if ! $DOCKER image inspect $IMG >/dev/null 2>&1; then
    $DOCKER import --change 'CMD ["/bin/sh"]' "$BENCH_DIR/busybox.tar" $IMG >/dev/null
    touch "$H/docker-image-is-ours"
  fi
  $DOCKER run --rm $IMG true
fi

if [ "$SKIP_PODMAN" != 1 ]; then
  ENGINES+=(podman)
  # crun 1.8 refuses this hybrid host while the cgroup2 mount still holds hugetlb: give hugetlb a v1
  # hierarchy (as ../shared/peers/setup-peers.sh and bench-runtime.sh do); unmounted at the end.
  # (Test the file with grep alone: cgroupfs files have size 0, so `[ -s ]` is always false.)
  if grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null && ! mountpoint -q /sys/fs/cgroup/hugetlb; then
    mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
    touch "$H/hugetlb-mounted"
  fi
  # Own storage, run dir and network config; ulimits within the hard RLIMIT_NOFILE (no
  # CAP_SYS_RESOURCE here: podman's default nofile=1048576 fails in setrlimit).
  Pd=$BENCH_DIR/podman
  mkdir -p "$Pd"
  hn=$(ulimit -Hn); [ "$hn" = unlimited ] && hn=1048576
  cat >"$Pd/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$hn:$hn", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "crun"
tmp_dir = "$Pd/tmp"
[network]
network_config_dir = "$Pd/networks"
EOF
  cat >"$Pd/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$Pd/storage"
runroot = "$Pd/run"
EOF
  export CONTAINERS_CONF=$Pd/containers.conf CONTAINERS_STORAGE_CONF=$Pd/storage.conf
  podman import -q --change 'CMD ["/bin/sh"]' "$BENCH_DIR/busybox.tar" $IMG >/dev/null
  podman run --rm $IMG true
fi
((${#ENGINES[@]})) || { echo "bench-compose: every engine skipped" >&2; exit 1; }

# ---------------------------------------------------------------------------------- the projects
gen() {  # gen NAME SERVICES plain|term
  mkdir -p "$BENCH_DIR/projects/$1"
  {
    echo "services:"
    for i in $(seq -w 1 "$2"); do
      echo "  s$i:"
      echo "    image: $IMG"
      if [ "$3" = term ]; then
        echo "    command: [\"sh\", \"-c\", \"trap '' TERM; sleep infinity & wait\"]"
        echo "    stop_grace_period: ${GRACE}s"
      else
        echo '    command: ["sleep", "infinity"]'
      fi
    done
  } >"$BENCH_DIR/projects/$1/compose.yaml"
}
gen bench3 3 plain
gen bench20 20 plain
gen benchterm 20 term

# ------------------------------------------------------------------------------------ the runs
echo "machine: $(uname -r), $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg) at start"
for e in "${ENGINES[@]}"; do
  case $e in
    berth) echo "berth: $($BERTH version) ($BERTH)" ;;
    docker) echo "docker: dockerd $($DOCKER version -f '{{.Server.Version}}'), $($DOCKER compose version), $(runc --version | head -1)" ;;
    podman) echo "podman: $(podman --version), $($PODMAN_COMPOSE --version 2>/dev/null | head -1), $(crun --version | head -1)" ;;
  esac
done
HF=(hyperfine -N --style basic --warmup "$WARMUP" --runs "$RUNS")
LIMIT=$(((RUNS + WARMUP) * 150))   # seconds for one hyperfine call, so a hung engine cannot stall the run
: >"$BENCH_DIR/results/commands"
: >"$BENCH_DIR/results/notes"

last_words() {  # last_words CMD...: run it once more, print its exit code and last non-empty line
  local out rc=0
  out=$(timeout 120 "$@" 2>&1) || rc=$?
  printf 'exit %s: %s' "$rc" "$(printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -1 || true)"
}

# bench SCENARIO ENGINE PROJECT PREPARE_ARGS ARGS WANT_RUNNING
bench() {
  local sc=$1 e=$2 p=$3 prep sut out=$BENCH_DIR/results/$1.$2 rc=0 c
  prep=$(cmd "$e" "$p" "$4")
  sut=$(cmd "$e" "$p" "$5")
  local line=("${HF[@]}" --export-json "$out.json" -n "$e $sc" --prepare "$prep" "$sut")
  local a q=()
  for a in "${line[@]}"; do [[ $a =~ ^[A-Za-z0-9_./:=,+-]+$ ]] && q+=("$a") || q+=("'$a'"); done
  echo "${q[*]}" >>"$BENCH_DIR/results/commands"
  echo; echo "== $sc: $e"
  timeout -k 10 "$LIMIT" "${line[@]}" 2>"$out.err" || rc=$?
  cat "$out.err" >&2
  [ -s "$out.err" ] || rm -f "$out.err"
  if [ "$rc" != 0 ]; then
    rm -f "$out.json"
    # hyperfine hides the command's output: run the prepare step and the command once more to say why.
    local why
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
      why="timed out after ${LIMIT}s"
    elif grep -q 'preparation command' "$out.err"; then
      why=$(last_words $prep)
      if [[ $why == "exit 0:"* ]]; then   # it failed after a timed run: do that sequence again
        timeout 120 $sut >/dev/null 2>&1 || true
        why=$(last_words $prep)
      fi
      why="prepare '$4' failed: $why"
    else
      timeout 120 $prep >/dev/null 2>&1 || true
      why="'$5' failed: $(last_words $sut)"
    fi
    echo "$sc $e FAILED ${why:0:300}" >>"$BENCH_DIR/results/notes"
    echo "FAILED: $why" >&2
    # dockerd 20.10 sometimes keeps a removed container's endpoint in the network (moby/moby#42119:
    # "network ... has active endpoints"), and then fails every later down of that project until it
    # restarts. Restart our own dockerd after a failed docker row so the next rows start clean.
    if [ "$e" = docker ] && [ -s "$BENCH_DIR/docker/started.pid" ]; then
      stop_pid "$BENCH_DIR/docker/started.pid"
      start_dockerd
      timeout 120 $(cmd docker "$p" "down -t 0") >/dev/null 2>&1 || true
      echo "$sc $e dockerd restarted after this failure" >>"$BENCH_DIR/results/notes"
    fi
    return 0
  fi
  # Check the end state: the project's containers running after up, none left after down.
  c=$(count "$e" "$p" -a) || true
  if [ "$6" -gt 0 ]; then c=$(count "$e" "$p") || true; fi
  if [ "${c:-x}" != "$6" ]; then
    echo "$sc $e WRONG after the last run: ${c:-?} containers of the project, expected $6" >>"$BENCH_DIR/results/notes"
    echo "WRONG: ${c:-?} containers of the project after the last run, expected $6" >&2
  fi
}

for e in "${ENGINES[@]}"; do bench up3 "$e" bench3 "down -t 0" "up -d" 3; done
for e in "${ENGINES[@]}"; do bench down0-3 "$e" bench3 "up -d" "down -t 0" 0; done
for e in "${ENGINES[@]}"; do bench up20 "$e" bench20 "down -t 0" "up -d" 20; done
for e in "${ENGINES[@]}"; do bench down0-20 "$e" bench20 "up -d" "down -t 0" 0; done
for e in "${ENGINES[@]}"; do bench downterm "$e" benchterm "up -d" "down" 0; done
echo "load $(cut -d' ' -f1-3 /proc/loadavg) at the end of the runs"

# ---------------------------------------------------------------------------------- the report
python3 - "$BENCH_DIR/results" "$GRACE" "$RUNS" "$WARMUP" <<'PY'
import json, os, sys
res, grace, runs, warmup = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
notes = {}
for line in open(f"{res}/notes"):
    sc, e, msg = line.rstrip("\n").split(" ", 2)
    notes.setdefault((sc, e), []).append(msg)
rows = [("up3", "up -d, 3 services"), ("up20", "up -d, 20 services"),
        ("down0-3", "down -t 0, 3 services"), ("down0-20", "down -t 0, 20 services"),
        ("downterm", f"down, 20 services ignoring SIGTERM, grace {grace:g}s")]
engines = ["berth", "docker", "podman"]
def result(sc, e):
    f = f"{res}/{sc}.{e}.json"
    return json.load(open(f))["results"][0] if os.path.exists(f) else None
present = [e for e in engines if any(os.path.exists(f"{res}/{sc}.{e}.json") or (sc, e) in notes for sc, _ in rows)]
def cell(sc, e):
    r = result(sc, e)
    if r is None:
        return "FAILED" if (sc, e) in notes else "-"
    mark = " (!)" if (sc, e) in notes else ""
    return f"{r['median']:.3f} s{mark}"
def ratio(sc, a, b):
    ra, rb = result(sc, a), result(sc, b)
    if ra is None or rb is None:
        return "-"
    return f"{ra['median'] / rb['median']:.2f}"
print(f"\nMedians of {runs} runs after {warmup} warm-up (hyperfine -N); (!) = see the notes below.\n")
head = ["scenario"] + [f"{e} median" for e in present]
if "berth" in present:
    head += [f"berth/{e}" for e in present if e != "berth"]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for sc, label in rows:
    line = [label] + [cell(sc, e) for e in present]
    if "berth" in present:
        line += [ratio(sc, "berth", e) for e in present if e != "berth"]
    print("| " + " | ".join(line) + " |")
print("\nSpread (min … max, mean ± σ):")
for sc, label in rows:
    for e in present:
        r = result(sc, e)
        if r is None:
            continue
        extra = ""
        if sc == "downterm":
            # Docker and podman wait the grace period; berth kills at once a process that
            # ignores the signal, since waiting could only end in SIGKILL (docs/compose.md).
            extra = ("  waited the grace period" if r["min"] >= grace
                     else f"  did not wait the grace period (fastest run {r['min']:.2f} s < {grace:g} s)")
        print(f"  {label:48s} {e:7s} {r['min']:7.3f} … {r['max']:7.3f} s, {r['mean']:.3f} ± {r['stddev'] or 0:.3f} s{extra}")
if notes:
    print("\nNotes:")
    for (sc, e), msgs in notes.items():
        for m in msgs:
            print(f"  {sc} {e}: {m}")
PY

echo
echo "Commands, as run (the environment: DOCKER_HOST=${DOCKER_HOST:-unset}, CONTAINERS_CONF=${CONTAINERS_CONF:-unset},"
echo "CONTAINERS_STORAGE_CONF=${CONTAINERS_STORAGE_CONF:-unset}, which this script sets up and removes; re-run it to reproduce):"
cat "$BENCH_DIR/results/commands"
