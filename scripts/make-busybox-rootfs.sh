#!/usr/bin/env bash
# Makes a busybox root file system from Debian's busybox-static: DIR/bin/busybox plus one symlink per applet,
# /etc/passwd and /etc/group with root and nobody. Usage: make-busybox-rootfs.sh DIR
set -euo pipefail
dir=${1:?usage: make-busybox-rootfs.sh DIR}
[ -x /bin/busybox ] || { apt-get update -qq && apt-get install -y -qq busybox-static >/dev/null; }
rm -rf "$dir"
mkdir -p "$dir"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,root,var}
chmod 1777 "$dir/tmp"
cp /bin/busybox "$dir/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$dir/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$dir/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$dir/etc/group"
