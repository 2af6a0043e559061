#!/usr/bin/env bash
# Makes the base images of the tests and benchmarks locally (nothing can come from Docker Hub), as
# `docker save` archives that `berth image load` (and `docker load`) read:
#   OUTDIR/busybox.tar  busybox:latest, one layer from Debian's busybox-static (always)
#   OUTDIR/debian.tar   debian:bookworm, one layer from `debootstrap --variant=minbase` (--debian)
#   OUTDIR/bench.tar    bench:5layers, the Debian root split into 5 gzip layers, ~100 MB (--bench)
# The debootstrap root is cached in ${BERTH_IMAGE_CACHE:-/var/cache/berth-images}, so only the first
# run downloads packages (from $BERTH_DEBIAN_MIRROR, default deb.debian.org). Usage: make-images.sh OUTDIR [--debian] [--bench]
set -euo pipefail
out=${1:?usage: make-images.sh OUTDIR [--debian] [--bench]}
shift
debian=0 bench=0
for a in "$@"; do
  case $a in
    --debian) debian=1 ;;
    --bench) bench=1 ;;
    *) echo "unknown flag $a" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${BERTH_IMAGE_CACHE:-/var/cache/berth-images}
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-make-images.XXXXXX")
trap 'rm -rf "$work"' EXIT

bash "$here/make-busybox-rootfs.sh" "$work/busybox"
python3 "$here/docker-save.py" "$out/busybox.tar" busybox:latest '["sh"]' "$work/busybox"
echo "$out/busybox.tar"

if ((debian || bench)); then
  root=$cache/bookworm-minbase
  if [[ ! -e $root/.complete ]]; then
    command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
    rm -rf "$root"
    mkdir -p "$cache"
    debootstrap --variant=minbase bookworm "$root" "${BERTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1 ||
      { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    touch "$root/.complete"
  fi
fi
if ((debian)); then
  python3 "$here/docker-save.py" "$out/debian.tar" debian:bookworm '["bash"]' "$root"
  echo "$out/debian.tar"
fi
if ((bench)); then
  # Five layers of similar size: the Debian root split by directory, plus /usr/lib copied as a fifth
  # so the image is about 100 MB unpacked.
  mkdir -p "$work"/l{1,2,3,4,5}
  for d in "$root"/*; do
    case ${d##*/} in
      usr) ;;
      *) cp -a "$d" "$work/l1/" ;;
    esac
  done
  mkdir -p "$work"/l{2,3,4}/usr
  for d in "$root"/usr/*; do
    case ${d##*/} in
      lib) cp -a "$d" "$work/l2/usr/" ;;
      bin | sbin) cp -a "$d" "$work/l3/usr/" ;;
      *) cp -a "$d" "$work/l4/usr/" ;;
    esac
  done
  mkdir -p "$work/l5/opt"
  cp -a "$root/usr/lib" "$work/l5/opt/lib-copy"
  python3 "$here/docker-save.py" "$out/bench.tar" bench:5layers '["bash"]' --gzip "$work"/l{1,2,3,4,5}
  echo "$out/bench.tar"
fi
