#!/usr/bin/env bash
# Makes the base images of the tests and benchmarks locally (nothing can come from Docker Hub), as
# `docker save` archives (Docker's classic layout) that `berth image load` and `docker load` read,
# written reproducibly by scripts/docker-save.py:
#   OUTDIR/busybox.tar  busybox:latest, one layer from Debian's busybox-static, CMD ["sh"] (always;
#                       about 2.5 MB)
#   OUTDIR/debian.tar   debian:bookworm, one layer: `debootstrap --variant=minbase bookworm`,
#                       CMD ["bash"] (--debian; about 120 MB)
#   OUTDIR/bench.tar    bench:5layers, the same Debian root cut into 5 layers of similar size
#                       (~23 MB each, ~115 MB unpacked), gzip-compressed layers as a pushed image has
#                       them (--bench; about 40 MB)
# The debootstrap root is cached in ${BERTH_IMAGE_CACHE:-/var/cache/berth-images}/bookworm-minbase, so
# only the first run downloads packages, from $BERTH_DEBIAN_MIRROR or else apt's own Debian mirror.
# debian.tar and bench.tar are rewritten only when older than that root or these scripts;
# busybox.tar (small) always. Prints the path of each archive. Needs root (debootstrap, device nodes).
#
# Usage: make-images.sh OUTDIR [--debian] [--bench]
set -euo pipefail
usage='usage: make-images.sh OUTDIR [--debian] [--bench]'
out=${1:?$usage}
shift
debian=0 bench=0
for a in "$@"; do
  case $a in
    --debian) debian=1 ;;
    --bench) bench=1 ;;
    *) echo "make-images.sh: unknown flag $a; $usage" >&2; exit 2 ;;
  esac
done
umask 022
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
writer=$here/docker-save.py
cache=${BERTH_IMAGE_CACHE:-/var/cache/berth-images}
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-make-images.XXXXXX")
trap 'rm -rf "$work"' EXIT

bash "$here/make-busybox-rootfs.sh" "$work/busybox"
python3 "$writer" "$out/busybox.tar" busybox:latest '["sh"]' "$work/busybox"
echo "$out/busybox.tar"
((debian || bench)) || exit 0

# apt's own Debian mirror (the first `.../debian` source), unless BERTH_DEBIAN_MIRROR says otherwise.
apt_mirror() {
  { grep -rhE '^[[:space:]]*(URIs:|deb[[:space:]])' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
    grep -oE 'https?://[^[:space:]]+/debian/?([[:space:]]|$)' | head -1 | tr -d '[:space:]'; } || true
}
root=$cache/bookworm-minbase
done_mark=$cache/bookworm-minbase.complete
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9 # concurrent runs debootstrap once
if [[ ! -e $done_mark ]]; then
  if [[ ! -e $root/.complete ]]; then # (an older version of this script marked the root inside)
    command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
    mirror=${BERTH_DEBIAN_MIRROR:-$(apt_mirror)}
    mirror=${mirror:-http://deb.debian.org/debian}
    rm -rf "$root"
    start=$SECONDS
    debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
      { tail -20 "$work/debootstrap.log" >&2; echo "make-images.sh: debootstrap from $mirror failed" >&2; exit 1; }
    echo "make-images.sh: debootstrap from $mirror took $((SECONDS - start)) s" >&2
  fi
  # What an image has no use for, or that is the build machine's: downloaded packages, apt lists,
  # debootstrap's log, the host name and resolver (the runtime writes its own).
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
    "$root"/var/log/bootstrap.log "$root"/etc/hostname "$root"/etc/resolv.conf "$root/.complete"
  touch "$done_mark"
fi
flock -u 9

# Whether archive $1 must be (re)written: missing, or older than the root or the scripts.
stale() { [[ ! -s $1 || $done_mark -nt $1 || $writer -nt $1 || ${BASH_SOURCE[0]} -nt $1 ]]; }
# /dev, /proc and /sys are empty directories in an image, as in Docker's Debian images.
empty=(--empty dev --empty proc --empty sys)
if ((debian)); then
  stale "$out/debian.tar" && python3 "$writer" "$out/debian.tar" debian:bookworm '["bash"]' "${empty[@]}" "$root"
  echo "$out/debian.tar"
fi
if ((bench)); then
  stale "$out/bench.tar" &&
    python3 "$writer" "$out/bench.tar" bench:5layers '["bash"]' "${empty[@]}" --gzip --split 5 --min-bytes 100000000 "$root"
  echo "$out/bench.tar"
fi
