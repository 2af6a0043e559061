#!/usr/bin/env bash
# Dockerfile build benchmark: a 10-step Dockerfile on the busybox base, built cold (no cache) and
# rebuilt fully cached (nothing changed), berth's `image build` against Docker's classic builder,
# dockerd's built-in BuildKit and `podman build`, in the same run, with hyperfine.
#
# The Dockerfile (written to $BENCH_DIR/context, with five small files and a config file):
#   ENV, WORKDIR (new directory), COPY files/, RUN (writes files), COPY config.ini, RUN (copies, writes),
#   LABEL, EXPOSE, RUN (writes 100 files), CMD: 10 steps after FROM, 6 of them change the file system.
# Cold: `--no-cache` for every engine. Cached: the same command without it, after one priming build,
# so every step comes from the cache; the image id must not change.
#
# Usage: sudo bash scripts/bench-build.sh     (root, Debian 12; not run by CI)
# It installs what is missing with apt: docker.io, podman, crun, hyperfine, busybox-static, iptables,
# nftables. The base image is the busybox archive of scripts/make-images.sh (busybox:latest), loaded
# into each engine (`image load`, `docker load`, `podman load`) and tagged localhost/busybox:latest.
# It starts its own dockerd (own data root, exec root and socket under $BENCH_DIR) unless one already
# answers on /var/run/docker.sock, and gives podman its own storage and network config the same way.
# At the end it stops the dockerd it started (by PID) and puts back what the engines changed on the
# host: firewall tables (dockerd sets the FORWARD policy to DROP), forwarding sysctls, bridges, the
# hugetlb cgroup mount crun needs on this hybrid host, and runtime directories that were not there.
#
# Env: RUNS=5 WARMUP=1  BERTH=path (default: target/release/berth, built here)
#      BERTH_ROOT=/tmp/berth-bench-build  BENCH_DIR=/tmp/berth-bench-build.work (context, JSON)
#      SKIP_DOCKER=1  SKIP_BUILDKIT=1 (only the classic builder)  SKIP_PODMAN=1  SKIP_BERTH=1
# Command lines are kept as strings and split on spaces on purpose, as hyperfine -N splits them.
# shellcheck disable=SC2086,SC2046
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
BERTH_ROOT=${BERTH_ROOT:-/tmp/berth-bench-build}
BENCH_DIR=${BENCH_DIR:-/tmp/berth-bench-build.work}
SKIP_DOCKER=${SKIP_DOCKER:-0}
SKIP_BUILDKIT=${SKIP_BUILDKIT:-0}
SKIP_PODMAN=${SKIP_PODMAN:-0}
SKIP_BERTH=${SKIP_BERTH:-0}
DOCKER=/usr/bin/docker                  # Debian's CLI, the same version as dockerd (BuildKit without buildx)
IMG=localhost/busybox:latest
TAG=bench/build:latest
CTX=$BENCH_DIR/context
[ "$(id -u)" = 0 ] || { echo "bench-build: run as root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive

# ------------------------------------------------------------------------------------ packages
need=()
[ -x /bin/busybox ] || need+=(busybox-static)
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v iptables >/dev/null || need+=(iptables)
command -v nft >/dev/null || need+=(nftables)
if [ "$SKIP_DOCKER" != 1 ]; then [ -x /usr/sbin/dockerd ] && [ -x $DOCKER ] || need+=(docker.io); fi
if [ "$SKIP_PODMAN" != 1 ]; then
  command -v podman >/dev/null || need+=(podman)
  command -v crun >/dev/null || need+=(crun)
fi
if ((${#need[@]})); then apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; fi
if [ "$SKIP_BERTH" != 1 ] && [ -z "${BERTH:-}" ]; then
  cargo build --release -q
  BERTH=$REPO/target/release/berth
fi
BERTH=${BERTH:-$REPO/target/release/berth}

# ------------------------------------------------------------------- host state, and its restore
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
case $BENCH_DIR in /tmp/?*|/var/tmp/?*) ;; *) echo "bench-build: BENCH_DIR must be below /tmp or /var/tmp" >&2; exit 1 ;; esac
stop_pid "$BENCH_DIR/docker/started.pid"
umount_under "$BENCH_DIR"
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"/{results,host}
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
RUNDIRS=(/run/docker /run/containerd /run/crun /run/containers /run/libpod /run/netns /run/mount
  /var/lib/containers /var/lib/docker /var/lib/cni /etc/cni)
for d in "${RUNDIRS[@]}"; do [ -e "$d" ] && echo "$d"; done >"$H/dirs"
mountpoint -q /run/netns && touch "$H/netns-was-mounted"
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
  if [ "$SKIP_PODMAN" != 1 ] && [ -n "${CONTAINERS_STORAGE_CONF:-}" ]; then
    podman rm -af -t 0 >/dev/null 2>&1
    umount_under "$BENCH_DIR/podman"
    rm -rf "$BENCH_DIR/podman"
  fi
  if [ -s "$BENCH_DIR/docker/started.pid" ]; then
    echo "cleanup: stopping dockerd $(cat "$BENCH_DIR/docker/started.pid")"
    stop_pid "$BENCH_DIR/docker/started.pid"
    cp "$BENCH_DIR/docker/dockerd.log" "$BENCH_DIR/results/"
    umount_under "$BENCH_DIR/docker"
    rm -rf "$BENCH_DIR/docker"
  elif [ -n "${DOCKER_HOST:-}" ]; then
    # The dockerd that was running: our images go, the busybox tags we moved come back.
    $DOCKER rmi -f $TAG >/dev/null 2>&1
    $DOCKER image prune -f --filter label=org.example.bench=build >/dev/null 2>&1
    for t in busybox:latest $IMG; do
      f=$H/tag.$(echo "$t" | tr '/:' '__')
      if [ -s "$f" ]; then $DOCKER tag "$(cat "$f")" "$t"; else $DOCKER rmi "$t" >/dev/null 2>&1; fi
    done
  fi
  if [ -e "$H/berth-root-is-ours" ] && [ -d "$BERTH_ROOT" ]; then
    if findmnt -rn -o TARGET | grep -q "^$BERTH_ROOT/"; then
      echo "cleanup: WARNING: mounts left under $BERTH_ROOT; not removed" >&2
    else
      rm -rf "$BERTH_ROOT"
    fi
  fi
  restore_host
  rm -rf "$H" "$BENCH_DIR/images"
  echo "results (hyperfine JSON) and the context: $BENCH_DIR/results, $CTX"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------- the context
mkdir -p "$CTX/files"
for i in 1 2 3 4 5; do
  printf 'small file %s\n%s\n' "$i" "$(seq -s ' ' 1 $((i * 20)))" >"$CTX/files/f$i.txt"
done
printf '[app]\nname = bench\nworkers = 4\n' >"$CTX/config.ini"
cat >"$CTX/Dockerfile" <<'EOF'
FROM localhost/busybox:latest
ENV APP_HOME=/app MODE=bench
WORKDIR /app
COPY files/ /app/files/
RUN mkdir -p /app/data && for i in 1 2 3 4 5; do echo "line $i" >> /app/data/lines.txt; done
COPY config.ini /app/config.ini
RUN cp /app/config.ini /app/data/config.copy && echo built > /app/data/stamp
LABEL org.example.bench=build
EXPOSE 8080
RUN i=0; while [ $i -lt 100 ]; do echo $i > /app/data/n$i; i=$((i + 1)); done
CMD ["cat", "/app/data/stamp"]
EOF

# ---------------------------------------------------------------------------------- the engines
bash scripts/make-images.sh "$BENCH_DIR/images" >/dev/null
ARCHIVE=$BENCH_DIR/images/busybox.tar
ENGINES=()

cmd() {  # cmd ENGINE cold|cached: the build command line for one engine
  local nc=
  [ "$2" = cold ] && nc="--no-cache "
  case $1 in
    berth) echo "$BERTH --root $BERTH_ROOT image build -q ${nc}-t $TAG -f $CTX/Dockerfile $CTX" ;;
    docker-classic) echo "env DOCKER_BUILDKIT=0 $DOCKER build -q ${nc}-t $TAG -f $CTX/Dockerfile $CTX" ;;
    docker-buildkit) echo "env DOCKER_BUILDKIT=1 $DOCKER build -q ${nc}-t $TAG -f $CTX/Dockerfile $CTX" ;;
    podman) echo "podman build -q ${nc}-t $TAG -f $CTX/Dockerfile $CTX" ;;
  esac
}
check() {  # check ENGINE: what the built image prints (berth: that it exists)
  case $1 in
    berth) $BERTH --root "$BERTH_ROOT" image inspect $TAG >/dev/null && echo built ;;
    docker-*) $DOCKER run --rm $TAG ;;
    podman) podman run --rm $TAG ;;
  esac
}

if [ "$SKIP_BERTH" != 1 ]; then
  ENGINES+=(berth)
  $BERTH --root "$BERTH_ROOT" image load -q -i "$ARCHIVE" >/dev/null
  $BERTH --root "$BERTH_ROOT" image tag busybox:latest $IMG
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
  if DOCKER_HOST=unix:///var/run/docker.sock $DOCKER version >/dev/null 2>&1; then
    export DOCKER_HOST=unix:///var/run/docker.sock
    echo "docker: using the dockerd already running on /var/run/docker.sock (left running)"
    for t in busybox:latest $IMG; do
      $DOCKER image inspect -f '{{.Id}}' "$t" >"$H/tag.$(echo "$t" | tr '/:' '__')" 2>/dev/null || true
    done
  else
    start_dockerd
  fi
  $DOCKER load -q -i "$ARCHIVE" >/dev/null
  $DOCKER tag busybox:latest $IMG
  $DOCKER run --rm $IMG true
  ENGINES+=(docker-classic)
  if [ "$SKIP_BUILDKIT" != 1 ]; then
    # dockerd's BuildKit takes a base image from the local store unless told to pull; check it does.
    if DOCKER_BUILDKIT=1 $DOCKER build -q -t bench/probe:latest - >"$BENCH_DIR/results/buildkit-probe.log" 2>&1 <<<"FROM $IMG
RUN true"; then
      ENGINES+=(docker-buildkit)
      $DOCKER rmi bench/probe:latest >/dev/null
    else
      echo "docker: BuildKit cannot build on the local $IMG, skipped: $(tail -1 "$BENCH_DIR/results/buildkit-probe.log")" >&2
    fi
  fi
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
  podman load -q -i "$ARCHIVE" >/dev/null
  podman tag busybox:latest $IMG
  podman run --rm $IMG true
fi
((${#ENGINES[@]})) || { echo "bench-build: every engine skipped" >&2; exit 1; }

# ------------------------------------------------------------------------------------ the runs
echo "machine: $(uname -r), $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg) at start"
for e in "${ENGINES[@]}"; do
  case $e in
    berth) echo "berth: $($BERTH version) ($BERTH)" ;;
    docker-classic) echo "docker: dockerd $($DOCKER version -f '{{.Server.Version}}'), $(runc --version | head -1)" ;;
    podman) echo "podman: $(podman --version), $(crun --version | head -1)" ;;
  esac
done
HF=(hyperfine -N --style basic --warmup "$WARMUP" --runs "$RUNS")
LIMIT=$(((RUNS + WARMUP) * 120))   # seconds for one hyperfine call, so a hung engine cannot stall the run
: >"$BENCH_DIR/results/commands"
: >"$BENCH_DIR/results/notes"

last_words() {  # last_words CMD...: run it once more, print its exit code and last non-empty line
  local out rc=0
  out=$(timeout 300 "$@" 2>&1) || rc=$?
  printf 'exit %s: %s' "$rc" "$(printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -1 || true)"
}

# bench SCENARIO ENGINE: one hyperfine call; the built image is checked afterwards, and for the cached
# scenario, that the rebuild gave the image of the priming build.
bench() {
  local sc=$1 e=$2 sut out=$BENCH_DIR/results/$1.$2 rc=0 first="" again
  sut=$(cmd "$e" "$sc")
  if [ "$sc" = cached ]; then
    first=$(timeout 300 $sut 2>"$out.prime.err") || {
      echo "$sc $e FAILED the priming build: $(tail -1 "$out.prime.err")" >>"$BENCH_DIR/results/notes"
      echo "FAILED: the priming build: $(tail -1 "$out.prime.err")" >&2
      return 0
    }
    rm -f "$out.prime.err"
  fi
  local line=("${HF[@]}" --export-json "$out.json" -n "$e $sc" "$sut")
  local a q=()
  for a in "${line[@]}"; do [[ $a =~ ^[A-Za-z0-9_./:=,+-]+$ ]] && q+=("$a") || q+=("'$a'"); done
  echo "${q[*]}" >>"$BENCH_DIR/results/commands"
  echo; echo "== $sc: $e"
  timeout -k 10 "$LIMIT" "${line[@]}" 2>"$out.err" || rc=$?
  cat "$out.err" >&2
  [ -s "$out.err" ] || rm -f "$out.err"
  if [ "$rc" != 0 ]; then
    rm -f "$out.json"
    local why
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then why="timed out after ${LIMIT}s"; else why=$(last_words $sut); fi
    echo "$sc $e FAILED ${why:0:300}" >>"$BENCH_DIR/results/notes"
    echo "FAILED: $why" >&2
    return 0
  fi
  local said
  said=$(check "$e" 2>&1) || true
  if [ "$said" != built ]; then
    echo "$sc $e WRONG: the built image printed '${said:0:200}', expected 'built'" >>"$BENCH_DIR/results/notes"
    echo "WRONG: the built image printed '${said:0:200}'" >&2
  fi
  if [ "$sc" = cached ]; then
    again=$(timeout 300 $sut 2>/dev/null) || true
    if [ "$again" != "$first" ]; then
      echo "$sc $e WRONG: the rebuild printed '${again:0:80}', the priming build '${first:0:80}' (not all cached?)" >>"$BENCH_DIR/results/notes"
      echo "WRONG: the rebuild gave another image than the priming build" >&2
    fi
  fi
}

for e in "${ENGINES[@]}"; do bench cold "$e"; done
for e in "${ENGINES[@]}"; do bench cached "$e"; done
echo "load $(cut -d' ' -f1-3 /proc/loadavg) at the end of the runs"

# ---------------------------------------------------------------------------------- the report
python3 - "$BENCH_DIR/results" "$RUNS" "$WARMUP" <<'PY'
import json, os, sys
res, runs, warmup = sys.argv[1], sys.argv[2], sys.argv[3]
notes = {}
for line in open(f"{res}/notes"):
    sc, e, msg = line.rstrip("\n").split(" ", 2)
    notes.setdefault((sc, e), []).append(msg)
rows = [("cold", "cold build (--no-cache)"), ("cached", "fully cached rebuild")]
engines = ["berth", "docker-classic", "docker-buildkit", "podman"]
def result(sc, e):
    f = f"{res}/{sc}.{e}.json"
    return json.load(open(f))["results"][0] if os.path.exists(f) else None
present = [e for e in engines if any(os.path.exists(f"{res}/{sc}.{e}.json") or (sc, e) in notes for sc, _ in rows)]
def cell(sc, e):
    r = result(sc, e)
    if r is None:
        return "FAILED" if (sc, e) in notes else "-"
    mark = " (!)" if (sc, e) in notes else ""
    return f"{r['mean'] * 1000:.0f} ms{mark}"
def ratio(sc, a, b):
    ra, rb = result(sc, a), result(sc, b)
    if ra is None or rb is None:
        return "-"
    return f"{ra['mean'] / rb['mean']:.2f}"
print(f"\nMeans of {runs} runs after {warmup} warm-up (hyperfine -N); (!) = see the notes below.\n")
head = ["scenario"] + [f"{e} mean" for e in present]
if "berth" in present:
    head += [f"berth/{e}" for e in present if e != "berth"]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for sc, label in rows:
    line = [label] + [cell(sc, e) for e in present]
    if "berth" in present:
        line += [ratio(sc, "berth", e) for e in present if e != "berth"]
    print("| " + " | ".join(line) + " |")
print("\nSpread (min … max, mean ± σ, median):")
for sc, label in rows:
    for e in present:
        r = result(sc, e)
        if r is not None:
            print(f"  {label:26s} {e:16s} {r['min'] * 1000:7.0f} … {r['max'] * 1000:7.0f} ms, "
                  f"{r['mean'] * 1000:.0f} ± {(r['stddev'] or 0) * 1000:.0f} ms, median {r['median'] * 1000:.0f} ms")
r = result("cached", "berth")
if r is not None:
    verdict = "meets" if r["mean"] <= 0.100 else "MISSES"
    print(f"\nberth fully cached rebuild: {r['mean'] * 1000:.0f} ms mean ({verdict} the target of 100 ms)")
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
