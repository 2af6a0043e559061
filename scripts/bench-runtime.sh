#!/usr/bin/env bash
# Runtime benchmark: create+start+wait+delete of /bin/true, N times in a row, berth against crun and runc on
# the same busybox rootfs, in the same run; then the supervisor's resident memory and exec latency.
# Usage: bash scripts/bench-runtime.sh [N=100]      (root; installs crun, runc, hyperfine, busybox-static)
#        ROUNDS=20 (environment): rounds of N containers per runtime
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-100}
export DEBIAN_FRONTEND=noninteractive
need=""
for p in crun runc hyperfine; do command -v $p >/dev/null || need="$need $p"; done
[ -x /bin/busybox ] || need="$need busybox-static"
[ -z "$need" ] || { apt-get update -qq && apt-get install -y -qq $need >/dev/null; }
# crun refuses a hybrid host whose cgroup2 still holds hugetlb: give hugetlb a v1 hierarchy (as peers/setup-peers.sh).
if [ -s /sys/fs/cgroup/unified/cgroup.controllers ] && grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers \
   && ! mountpoint -q /sys/fs/cgroup/hugetlb; then
  mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
fi
cargo build --release -q
BERTH=$PWD/target/release/berth
W=$(mktemp -d /tmp/berth-bench-rt.XXXXXX)
trap 'rm -rf "$W"' EXIT
bash scripts/make-busybox-rootfs.sh "$W/rootfs"
for rt in crun runc; do
  mkdir -p "$W/$rt"
  (cd "$W/$rt" && $rt spec)
  python3 - "$W/$rt/config.json" "$W/rootfs" <<'PY'
import json, sys
p, root = sys.argv[1], sys.argv[2]
c = json.load(open(p))
c['process']['args'] = ['/bin/true']
c['process']['terminal'] = False
c['root'] = {'path': root, 'readonly': True}
json.dump(c, open(p, 'w'), indent=1)
PY
done
cat > "$W/loop.sh" <<LOOP
#!/usr/bin/env bash
# One benchmark sample: N containers of /bin/true in a row with the runtime named by \$1.
set -e
for i in \$(seq 1 $N); do
  case "\$1" in
    berth) $BERTH --root $W/state container run --rm --rootfs $W/rootfs /bin/true ;;
    crun) crun --cgroup-manager=disabled run -b $W/crun b\$i ;;
    crun-cgroupfs) crun run -b $W/crun b\$i ;;
    runc) runc run -b $W/runc b\$i ;;
  esac
done
LOOP
# Rounds alternate between the runtimes (berth, crun, runc, berth, ...), so a noisy spell on this shared VM hits
# all of them alike; the ratio is the median of the per-round ratios. Each round starts after a pause: the kernel
# frees namespaces and mounts in background workers for a while after a runtime's last container, and that work
# must not land on whichever runtime happens to go next.
python3 - "$W/loop.sh" "$N" "${ROUNDS:-20}" <<'PY'
import os, statistics, subprocess, sys, time
loop, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = {"berth": "berth", "crun": "crun-cgroupfs", "runc": "runc"}
times = {k: [] for k in names}
cpu = {k: [] for k in names}
hz = os.sysconf("SC_CLK_TCK")
def busy():
    # CPU time of the whole machine (user, nice, system, irq, softirq, steal), in clock ticks.
    v = list(map(int, open("/proc/stat").readline().split()[1:]))
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
for _ in range(rounds + 1):
    for k, arg in names.items():
        time.sleep(1)
        b, t = busy(), time.perf_counter()
        subprocess.run(["bash", loop, arg], check=True)
        times[k].append((time.perf_counter() - t) / n * 1000)
        cpu[k].append((busy() - b) / hz / n * 1000)
times = {k: v[1:] for k, v in times.items()}  # the first round warms up
cpu = {k: v[1:] for k, v in cpu.items()}
for k, v in times.items():
    print(f"{k}: median {statistics.median(v):.2f} ms per container, min {min(v):.2f} ms ({rounds} rounds of {n});"
          f" CPU {statistics.median(cpu[k]):.2f} ms per container (whole machine, median)")
    print("  rounds: " + " ".join(f"{t:.2f}" for t in v))
for peer in ("crun", "runc"):
    r = [a / b for a, b in zip(times["berth"], times[peer])]
    print(f"ratio berth/{peer}: median {statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f})")
PY
# Supervisor memory with 10 running containers: RSS, and PSS/USS, which count shared binary pages fairly.
ids=()
for i in $(seq 1 10); do ids+=("$($BERTH --root "$W/state" container run -d --rootfs "$W/rootfs" sleep 1000)"); done
sleep 0.5   # a supervisor sheds its start-up pages 50 ms after the start; measure the steady state
rss=0; pss=0; uss=0
for id in "${ids[@]}"; do
  sp=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['supervisor_pid'])" "$W/state/containers/$id/state.json")
  rss=$((rss + $(awk '/^Rss:/{print $2}' /proc/$sp/smaps_rollup)))
  pss=$((pss + $(awk '/^Pss:/{print $2}' /proc/$sp/smaps_rollup)))
  uss=$((uss + $(awk '/^Private_(Clean|Dirty):/{s+=$2} END{print s}' /proc/$sp/smaps_rollup)))
done
echo "supervisor memory, average of 10: RSS $((rss / 10)) kB, PSS $((pss / 10)) kB, USS $((uss / 10)) kB"
hyperfine -N --warmup 3 --runs 50 -n exec "$BERTH --root $W/state container exec ${ids[0]} true"
for id in "${ids[@]}"; do $BERTH --root "$W/state" container rm -f "$id" >/dev/null; done
