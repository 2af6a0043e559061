#!/usr/bin/env python3
"""Writes a `docker save`-format archive (classic layout: manifest.json, repositories, <config>.json,
<n>/layer.tar) from root file system directories, one layer per directory, without Docker.

Usage: docker-save.py OUT.tar TAG CMD_JSON [--gzip] DIR...

Layers are reproducible: entries sorted, owners 0:0 unless the file says otherwise (numeric ids kept),
mtimes fixed. With --gzip the layer files are gzip-compressed (docker load accepts that too); the
diff_ids are always the digests of the uncompressed tars.
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

MTIME = 1700000000


def layer_tar(root: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                paths.append(os.path.join(dirpath, name))
        for path in sorted(paths, key=lambda p: os.path.relpath(p, root)):
            info = tar.gettarinfo(path, arcname=os.path.relpath(path, root))
            info.mtime = MTIME
            info.uname = info.gname = ""
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def main() -> None:
    args = sys.argv[1:]
    compress = "--gzip" in args
    args = [a for a in args if a != "--gzip"]
    out, tag, cmd, dirs = args[0], args[1], json.loads(args[2]), args[3:]
    layers, diff_ids, history = [], [], []
    for i, d in enumerate(dirs):
        raw = layer_tar(d)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        data = gzip.compress(raw, compresslevel=6, mtime=0) if compress else raw
        layers.append((f"{i}/layer.tar", data))
        history.append({"created": "2023-11-14T22:13:20Z", "created_by": f"berth make-images: layer {i + 1} of {len(dirs)}"})
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    repo, _, version = tag.rpartition(":")
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [n for n, _ in layers]}]
    files = [(config_name, config_bytes)] + layers + [
        ("manifest.json", json.dumps(manifest).encode()),
        ("repositories", json.dumps({repo: {version: config_name[:-5]}}).encode()),
    ]
    tmp = out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = MTIME
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
