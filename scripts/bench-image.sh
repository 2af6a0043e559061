#!/usr/bin/env bash
# Pull benchmark: a ~100 MB, 5-layer image from Debian's docker-registry on 127.0.0.1, cold (empty
# store) and warm (everything present), berth against `skopeo copy` to an OCI layout (and
# `podman pull` when podman is installed), in the same run; then berth's unpack throughput.
#
# Usage: sudo bash scripts/bench-image.sh [RUNS]   (needs docker-registry, skopeo, hyperfine,
# debootstrap; installs the missing ones with apt)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS=${1:-10}
need=()
for p in docker-registry:docker-registry skopeo:skopeo hyperfine:hyperfine debootstrap:debootstrap; do
  command -v "${p%%:*}" >/dev/null || need+=("${p##*:}")
done
if ((${#need[@]})); then apt-get install -y -qq "${need[@]}" >/dev/null; fi
cargo build --release -q
BERTH=$PWD/target/release/berth
W=$(mktemp -d /tmp/berth-bench-image.XXXXXX)
cleanup() { [[ -n ${REG_PID:-} ]] && kill "$REG_PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

bash scripts/make-images.sh "$W/images" --bench >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$W/registry.yml" <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $W/registry}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$PORT}
EOF
docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
REF=127.0.0.1:$PORT/bench:5layers
$BERTH --root "$W/seed" image load -q -i "$W/images/bench.tar" >/dev/null
$BERTH --root "$W/seed" image tag bench:5layers "$REF"
$BERTH --root "$W/seed" image push -q "$REF" >/dev/null
COMPRESSED=$(du -sb "$W/registry" | cut -f1)
UNPACKED=$($BERTH --root "$W/seed" image inspect "$REF" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Size"])')
echo "image: $REF, 5 layers, $((COMPRESSED / 1000000)) MB in the registry, $((UNPACKED / 1000000)) MB unpacked"

cmds=(
  -n "berth cold" --prepare "rm -rf $W/b" "$BERTH --root $W/b image pull -q $REF"
  -n "skopeo cold" --prepare "rm -rf $W/s" "skopeo copy -q --src-tls-verify=false docker://$REF oci:$W/s:bench"
)
# Pull leaves unpacking to the first container; this one includes it, for peers that unpack on pull.
cmds+=(-n "berth cold+unpack" --prepare "rm -rf $W/c" "sh -c '$BERTH --root $W/c image pull -q $REF && $BERTH --root $W/c container create $REF true >/dev/null'")
if command -v podman >/dev/null; then
  cmds+=(-n "podman cold" --prepare "rm -rf $W/p" "podman --root $W/p --runroot $W/pr pull -q --tls-verify=false $REF")
fi
hyperfine -N -w 1 -r "$RUNS" --export-json "$W/cold.json" "${cmds[@]}"

$BERTH --root "$W/b" image pull -q "$REF" >/dev/null
skopeo copy -q --src-tls-verify=false "docker://$REF" "oci:$W/s:bench"
warm=(
  -n "berth warm" "$BERTH --root $W/b image pull -q $REF"
  -n "skopeo warm" "skopeo copy -q --src-tls-verify=false docker://$REF oci:$W/s:bench"
)
if command -v podman >/dev/null; then
  podman --root "$W/p" --runroot "$W/pr" pull -q --tls-verify=false "$REF" >/dev/null
  warm+=(-n "podman warm" "podman --root $W/p --runroot $W/pr pull -q --tls-verify=false $REF")
fi
hyperfine -N -w 1 -r "$RUNS" --export-json "$W/warm.json" "${warm[@]}"

# Unpack throughput: import the image's layers as one uncompressed tarball (no network, no gzip).
mkdir -p "$W/flat"
for d in "$W"/seed/images/layers/*/; do cp -a "$d." "$W/flat/"; done
tar -C "$W/flat" --numeric-owner -cf "$W/flat.tar" .
FLAT=$(stat -c %s "$W/flat.tar")
hyperfine -N -w 1 -r "$RUNS" --export-json "$W/unpack.json" \
  -n "berth import (unpack)" --prepare "rm -rf $W/u" "$BERTH --root $W/u image import $W/flat.tar flat:v1"

python3 - "$W" "$FLAT" <<'PY'
import json, sys
w, flat = sys.argv[1], int(sys.argv[2])
def means(f):
    return {r["command"]: r["mean"] for r in json.load(open(f"{w}/{f}"))["results"]}
for kind in ("cold", "warm"):
    m = means(f"{kind}.json")
    base = m[f"berth {kind}"]
    for name, t in m.items():
        print(f"{kind}: {name:14s} {t*1000:8.1f} ms   ratio berth/{name.split()[0]}: {base/t:.2f}")
u = means("unpack.json")["berth import (unpack)"]
print(f"unpack: {flat/1e6:.0f} MB tar in {u*1000:.0f} ms = {flat/1e6/u:.0f} MB/s")
PY
