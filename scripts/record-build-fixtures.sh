#!/usr/bin/env bash
# Records what Docker's own builders make of the Dockerfiles in tests/fixtures/build/<case>/, the
# reference for berth's `image build`: for each case and builder, the image config's run config,
# author and history (docker-<builder>[-<variant>].json), the files of each layer the build added
# (docker-<builder>[-<variant>]-layers.txt), and for a build that fails, Docker's error
# (docker-<builder>[-<variant>]-error.txt). The dockerignore case also records what its image's
# /listing says (listing.txt). tests/fixtures/build/README.md describes the files and what they show.
#
# Builders: the classic builder (DOCKER_BUILDKIT=0) and dockerd's built-in BuildKit (DOCKER_BUILDKIT=1),
# both through Debian's docker CLI, the same version as dockerd (a newer CLI wants the buildx plugin
# for BuildKit). Each build is `docker build --no-cache` from a copy of the case folder that leaves
# out the recorded files. The base image is localhost/busybox:latest, the busybox archive of
# scripts/make-images.sh loaded with `docker load` and tagged so (the archive names it busybox:latest).
#
# Usage: sudo bash scripts/record-build-fixtures.sh [CASE...]    (root, Debian 12; default: every case)
# It installs what is missing with apt (docker.io, busybox-static, iptables, nftables). It starts its
# own dockerd (own data root, exec root and socket under $WORK) unless one already answers on
# /var/run/docker.sock; with one that answers, it puts back the busybox tags it moved and removes the
# images it built (BuildKit's cache of those builds stays). At the end it stops the dockerd it
# started (by PID) and puts back what dockerd changed on the host, as scripts/bench-compose.sh does:
# firewall tables, forwarding sysctls, bridges, cgroup parents, runtime directories that are new.
#
# Env: WORK=/tmp/berth-record-build.work (build contexts, logs, our dockerd)
# shellcheck disable=SC2086
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
FIX=$REPO/tests/fixtures/build
WORK=${WORK:-/tmp/berth-record-build.work}
DOCKER=/usr/bin/docker                                 # Debian's CLI, the same version as dockerd
IMG=localhost/busybox:latest
ALL_CASES=(config shellform chmod multistage args dockerignore heredoc)
CASES=("$@")
((${#CASES[@]})) || CASES=("${ALL_CASES[@]}")
for c in "${CASES[@]}"; do
  [ -f "$FIX/$c/Dockerfile" ] || { echo "record-build-fixtures: no case $c ($FIX/$c/Dockerfile)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "record-build-fixtures: run as root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive

# ------------------------------------------------------------------------------------ packages
need=()
[ -x /bin/busybox ] || need+=(busybox-static)
command -v iptables >/dev/null || need+=(iptables)
command -v nft >/dev/null || need+=(nftables)
[ -x /usr/sbin/dockerd ] && [ -x $DOCKER ] || need+=(docker.io)
if ((${#need[@]})); then apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; fi

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
umount_under() {  # unmount everything mounted below DIR (dockerd's own mounts there), deepest first
  findmnt -rn -o TARGET | awk -v d="$1/" 'index($0, d) == 1' | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}
case $WORK in /tmp/?*|/var/tmp/?*) ;; *) echo "record-build-fixtures: WORK must be below /tmp or /var/tmp" >&2; exit 1 ;; esac
# A leftover dockerd of an interrupted earlier run of this script (its PID file is ours).
stop_pid "$WORK/docker/started.pid"
umount_under "$WORK"
rm -rf "$WORK"
mkdir -p "$WORK"/{ctx,logs,host}
H=$WORK/host
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
RUNDIRS=(/run/docker /run/containerd /run/netns /run/mount /var/lib/docker /etc/docker)
for d in "${RUNDIRS[@]}"; do [ -e "$d" ] && echo "$d"; done >"$H/dirs"
mountpoint -q /run/netns && touch "$H/netns-was-mounted"
CGPARENTS=(docker)
for h in /sys/fs/cgroup/*/; do for c in "${CGPARENTS[@]}"; do [ -d "$h$c" ] && echo "$h$c"; done; done >"$H/cgroups" || true

restore_host() {
  # Firewall: tables dockerd created are deleted; tables that were there get their saved rules back
  # (this also puts the FORWARD policy back, which dockerd sets to DROP).
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
  ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort | comm -13 "$H/links" - |
    grep -E '^(docker0|br-[0-9a-f]{12}|veth[0-9a-f]+)$' |
    while read -r l; do ip link delete "$l" 2>/dev/null && echo "host: removed link $l"; done
  for h in /sys/fs/cgroup/*/; do
    for c in "${CGPARENTS[@]}"; do
      [ -d "$h$c" ] && ! grep -qx "$h$c" "$H/cgroups" && find "$h$c" -depth -type d -exec rmdir {} + 2>/dev/null
    done
  done
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
  if [ -s "$WORK/docker/started.pid" ]; then
    echo "cleanup: stopping dockerd $(cat "$WORK/docker/started.pid")"
    stop_pid "$WORK/docker/started.pid"
    cp "$WORK/docker/dockerd.log" "$WORK/logs/"
    umount_under "$WORK/docker"
    rm -rf "$WORK/docker"
  elif [ -n "${DOCKER_HOST:-}" ]; then
    # The dockerd that was running: our images go, the busybox tags we moved come back.
    $DOCKER images -q --filter 'reference=berth-fixture/*' | sort -u | xargs -r $DOCKER rmi -f >/dev/null 2>&1
    for t in busybox:latest $IMG; do
      f=$H/tag.$(echo "$t" | tr '/:' '__')
      if [ -s "$f" ]; then $DOCKER tag "$(cat "$f")" "$t"; else $DOCKER rmi "$t" >/dev/null 2>&1; fi
    done
  fi
  restore_host
  rm -rf "$H" "$WORK/ctx" "$WORK/save.tar"
  echo "logs: $WORK/logs"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------- the engine
start_dockerd() {  # our own dockerd: data root, exec root (with its containerd) and socket in $WORK
  local D=$WORK/docker
  mkdir -p "$D"
  /usr/sbin/dockerd --data-root "$D/data" --exec-root "$D/exec" --pidfile "$D/dockerd.pid" \
    -H "unix://$D/docker.sock" >>"$D/dockerd.log" 2>&1 </dev/null &
  echo $! >"$D/started.pid"
  export DOCKER_HOST=unix://$D/docker.sock
  for _ in $(seq 1 60); do $DOCKER version >/dev/null 2>&1 && break; sleep 0.5; done
  $DOCKER version >/dev/null || { tail -20 "$D/dockerd.log" >&2; exit 1; }
}
if DOCKER_HOST=unix:///var/run/docker.sock $DOCKER version >/dev/null 2>&1; then
  export DOCKER_HOST=unix:///var/run/docker.sock
  echo "docker: using the dockerd already running on /var/run/docker.sock (left running)"
  for t in busybox:latest $IMG; do
    $DOCKER image inspect -f '{{.Id}}' "$t" >"$H/tag.$(echo "$t" | tr '/:' '__')" 2>/dev/null || true
  done
else
  start_dockerd
fi
VERSION=$($DOCKER version -f '{{.Server.Version}}')
echo "docker: dockerd $VERSION, CLI $($DOCKER version -f '{{.Client.Version}}'), $(runc --version | head -1)"

bash scripts/make-images.sh "$WORK/images" >/dev/null
$DOCKER load -q -i "$WORK/images/busybox.tar" >/dev/null
$DOCKER tag busybox:latest $IMG
$DOCKER run --rm $IMG true

# ----------------------------------------------------------------------------- the recording
# fixture.py SAVE.tar OUT.json LAYERS.txt BUILDER VERSION ARGS_JSON: the fixture files of one image.
cat >"$WORK/fixture.py" <<'PY'
import json, sys, tarfile
save, out_json, out_layers, builder, version, args = sys.argv[1:7]
t = tarfile.open(save)
manifest = json.load(t.extractfile("manifest.json"))[0]
blob = json.load(t.extractfile(manifest["Config"]))
cfg = blob.get("config") or {}
KEYS = ["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels",
        "StopSignal", "Healthcheck", "Shell", "OnBuild", "ArgsEscaped"]
history = [{"created_by": h.get("created_by"), "empty_layer": bool(h.get("empty_layer", False)),
            "comment": h.get("comment")} for h in blob.get("history", [])]
record = {
    "builder": builder,
    "docker_version": version,
    "build_args": json.loads(args),
    "author": blob.get("author"),
    "config": {k: cfg.get(k) for k in KEYS},
    "layers": len(blob["rootfs"]["diff_ids"]),
    "history": history,
}
with open(out_json, "w") as f:
    json.dump(record, f, indent=2, sort_keys=False)
    f.write("\n")
# The layers, matched to the history entries that are not empty layers; the base image's layer is
# not listed. One line a tar entry, in the layer's order, without times: type, permission bits (the
# mode fields of Docker's layers also carry the file type bits, as Go's archive/tar writes them),
# uid:gid, size, path (and link target).
kinds = {tarfile.REGTYPE: "f", tarfile.AREGTYPE: "f", tarfile.DIRTYPE: "d", tarfile.SYMTYPE: "l",
         tarfile.LNKTYPE: "h", tarfile.CHRTYPE: "c", tarfile.BLKTYPE: "b", tarfile.FIFOTYPE: "p"}
steps = [h for h in history if not h["empty_layer"]]
lines = []
if len(steps) != len(manifest["Layers"]):
    lines.append(f"# WARNING: {len(steps)} history entries with a layer, {len(manifest['Layers'])} layers")
for i, (layer, h) in enumerate(zip(manifest["Layers"], steps)):
    lines.append(f"# layer {i + 1}: {h['created_by']}")
    if i == 0:
        lines.append("(the base image's layer, not listed)")
        continue
    members = tarfile.open(fileobj=t.extractfile(layer)).getmembers()
    if not members:
        lines.append("(empty)")
    for m in members:
        line = f"{kinds.get(m.type, '?')} {m.mode & 0o7777:04o} {m.uid}:{m.gid} {m.size} {m.name}"
        if m.issym() or m.islnk():
            line += f" -> {m.linkname}"
        lines.append(line)
with open(out_layers, "w") as f:
    f.write("\n".join(lines) + "\n")
PY

# Recorded files of the cases to (re)record go first, so none is left from an earlier run.
for c in "${CASES[@]}"; do rm -f "$FIX/$c"/docker-*.json "$FIX/$c"/docker-*.txt "$FIX/$c"/listing*.txt; done
: >"$WORK/logs/summary"

# record CASE BUILDER VARIANT [BUILD_ARGS...]: build the case with one builder, write its files.
record() {
  local c=$1 b=$2 v=$3 bk name tag log out rc=0
  shift 3
  case $b in classic) bk=0 ;; buildkit) bk=1 ;; esac
  name=docker-$b${v:+-$v}
  tag=berth-fixture/$c:$b${v:+-$v}
  log=$WORK/logs/$c.$name.log
  out=$FIX/$c/$name
  # The context: the case folder without the recorded files.
  rm -rf "$WORK/ctx/$c"
  cp -a "$FIX/$c" "$WORK/ctx/$c"
  rm -f "$WORK/ctx/$c"/docker-*.json "$WORK/ctx/$c"/docker-*.txt "$WORK/ctx/$c"/listing*.txt
  echo "== $c: $b${v:+ ($v)}${*:+: $*}"
  DOCKER_BUILDKIT=$bk $DOCKER build --no-cache -t "$tag" "$@" "$WORK/ctx/$c" >"$log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    # The error Docker prints last, without BuildKit's progress lines.
    grep -v '^\(#\|---\|$\| >\)' "$log" | tail -1 >"$out-error.txt"
    echo "$c $name FAILED: $(cat "$out-error.txt")" | tee -a "$WORK/logs/summary"
    return 0
  fi
  $DOCKER save "$tag" >"$WORK/save.tar"
  python3 "$WORK/fixture.py" "$WORK/save.tar" "$out.json" "$out-layers.txt" "$b" "$VERSION" \
    "$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@")"
  if [ "$c" = dockerignore ]; then
    $DOCKER run --rm "$tag" cat /listing >"$WORK/listing.$b"
  fi
  echo "$c $name ok" >>"$WORK/logs/summary"
}

for c in "${CASES[@]}"; do
  for b in classic buildkit; do
    record "$c" "$b" ""
    case $c in
      multistage) record "$c" "$b" target-build --target build ;;
      args) record "$c" "$b" build-arg --build-arg GREETING=hi ;;
    esac
  done
  if [ "$c" = dockerignore ]; then
    # Both builders should see the same context; one listing.txt when they do.
    if [ -s "$WORK/listing.classic" ] && [ -s "$WORK/listing.buildkit" ] && cmp -s "$WORK/listing.classic" "$WORK/listing.buildkit"; then
      cp "$WORK/listing.classic" "$FIX/$c/listing.txt"
    else
      for b in classic buildkit; do [ -s "$WORK/listing.$b" ] && cp "$WORK/listing.$b" "$FIX/$c/listing-$b.txt"; done
      echo "dockerignore: the builders' listings differ (listing-classic.txt, listing-buildkit.txt)" | tee -a "$WORK/logs/summary"
    fi
  fi
done

echo
echo "Docker $VERSION; recorded into $FIX:"
cat "$WORK/logs/summary"
