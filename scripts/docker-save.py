#!/usr/bin/env python3
"""Writes a `docker save` archive (Docker's classic layout) from root file system directories,
without Docker. Standard library only.

Usage:
  docker-save.py OUT.tar TAG CMD_JSON [options] DIR...

One layer per DIR, or with --split N the one DIR split into N layers of similar size. Options:
  --gzip            gzip the layer files (as a pushed image's layers are; `docker load` reads
                    them too); the diff_ids are always the digests of the uncompressed tars
  --empty REL       keep directory REL (relative to the root) but none of its contents, e.g. dev
  --split N         split the one DIR into N layers: the tree is cut into whole subtrees (cutting
                    big directories further) dealt largest first to the lightest layer; each layer
                    also holds the parent directories of what it has, as Docker's layers do
  --min-bytes B     with --split: pad with deterministic, compressible files under /berth-pad/
                    when the root has fewer than B bytes of file data

The archive holds `manifest.json` ([{"Config": "<hex>.json", "RepoTags": [TAG], "Layers":
["<id>/layer.tar", ...]}]), the config `<hex>.json`, one `<id>/` per layer with `VERSION`, `json`
(the v1 layer metadata) and `layer.tar`, and `repositories` ({repo: {tag: <top layer id>}}). The
layer ids are sha256 chains of the diff_ids (Docker derives its own differently; nothing reads them
but `repositories`).

Output is reproducible: entries sorted by path, mtimes fixed, owners numeric (as on disk, names
dropped), hard links kept within a layer, device nodes and FIFOs kept, sockets skipped, extended
attributes kept as SCHILY.xattr PAX records. The archive is written to OUT.tar.tmp and renamed.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import random
import stat
import tarfile

MTIME = 1700000000
CREATED = "2023-11-14T22:13:20Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PAD_DIR = "berth-pad"
PAD_CHUNK = 8 << 20


def walk(root: str, empty: set) -> list:
    """Every path under root, relative, sorted; the contents of the `empty` directories left out."""
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir in empty:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            paths.append(os.path.normpath(os.path.join(rel_dir, name)))
    return sorted(paths)


def entry_size(root: str, rel: str) -> int:
    st = os.lstat(os.path.join(root, rel))
    return 512 + (st.st_size if stat.S_ISREG(st.st_mode) else 0)


def pad_bytes(index: int, size: int) -> bytes:
    """Deterministic filler that compresses about 3:1, like text."""
    rng = random.Random(index)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(4096)]
    out = io.StringIO()
    n = 0
    while n < size:
        line = " ".join(rng.choice(words) for _ in range(12)) + "\n"
        out.write(line)
        n += len(line)
    return out.getvalue().encode()[:size]


def layer_tar(root: str, paths: list, pads: list) -> bytes:
    """A layer: `paths` (relative to root, parents first) and the padding files, sorted by name."""
    entries = [(rel, None) for rel in paths]
    if pads:
        entries.append((PAD_DIR, None))
        entries += [(f"{PAD_DIR}/{index:03}.txt", (index, size)) for index, size in pads]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, pad in sorted(entries):
            if rel == PAD_DIR or pad is not None:
                info = tarfile.TarInfo(rel)
                info.mode, info.mtime = (0o755 if pad is None else 0o644), MTIME
                if pad is None:
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                else:
                    data = pad_bytes(*pad)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                continue
            full = os.path.join(root, rel)
            info = tar.gettarinfo(full, arcname=rel)
            if info is None:  # a socket
                continue
            info.mtime = MTIME
            info.uname = info.gname = ""
            xattrs = {}
            try:
                for name in sorted(os.listxattr(full, follow_symlinks=False)):
                    value = os.getxattr(full, name, follow_symlinks=False)
                    xattrs["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
            except OSError:
                pass
            # (A value that is not UTF-8, like security.capability, makes tarfile add the standard
            # `hdrcharset=BINARY` record too.)
            info.pax_headers = xattrs
            if info.isreg():
                with open(full, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def split(root: str, paths: list, n: int, min_bytes: int) -> list:
    """Cuts the tree into n groups of similar size: [(paths, pads)] per layer."""
    sizes = {p: entry_size(root, p) for p in paths}
    subtree = dict(sizes)
    for p in paths:  # add each entry's size to every ancestor
        parent = os.path.dirname(p)
        while parent:
            subtree[parent] += sizes[p]
            parent = os.path.dirname(parent)
    total = sum(sizes.values())
    target = max(total, min_bytes) / n
    children = {}
    for p in paths:
        children.setdefault(os.path.dirname(p), []).append(p)
    # Units are whole subtrees; a directory bigger than half a layer is cut into its children (its
    # own entry then goes with every layer that has some of them, as a parent).
    units, todo = [], list(children.get("", []))
    while todo:
        p = todo.pop()
        if subtree[p] > target / 2 and children.get(p):
            todo.extend(children[p])
        else:
            units.append(p)
    groups = [{"units": [], "size": 0, "pads": []} for _ in range(n)]
    for u in sorted(units, key=lambda u: (-subtree[u], u)):
        g = min(groups, key=lambda g: g["size"])
        g["units"].append(u)
        g["size"] += subtree[u]
    pad_index = 0
    while sum(g["size"] for g in groups) < min_bytes:
        g = min(groups, key=lambda g: g["size"])
        size = min(PAD_CHUNK, min_bytes - sum(g["size"] for g in groups))
        g["pads"].append((pad_index, size))
        g["size"] += size
        pad_index += 1
    layers = []
    for g in groups:
        units = set(g["units"])
        parents = set()
        for u in units:
            parent = os.path.dirname(u)
            while parent:
                parents.add(parent)
                parent = os.path.dirname(parent)
        layers.append(([p for p in paths if p in parents or in_subtree(p, units)], g["pads"]))
    return layers


def in_subtree(path: str, units: set) -> bool:
    while path:
        if path in units:
            return True
        path = os.path.dirname(path)
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description="Writes a docker save archive from directories.")
    ap.add_argument("out")
    ap.add_argument("tag")
    ap.add_argument("cmd", type=json.loads)
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--gzip", action="store_true")
    ap.add_argument("--empty", action="append", default=[])
    ap.add_argument("--split", type=int, default=0)
    ap.add_argument("--min-bytes", type=int, default=0)
    args = ap.parse_args()
    empty = {os.path.normpath(e.strip("/")) for e in args.empty}
    if args.split:
        if len(args.dirs) != 1:
            ap.error("--split takes one directory")
        root = args.dirs[0]
        plan = [(root, paths, pads) for paths, pads in split(root, walk(root, empty), args.split, args.min_bytes)]
    else:
        plan = [(d, walk(d, empty), []) for d in args.dirs]

    layers, diff_ids, history, ids = [], [], [], []
    parent = ""
    for i, (root, paths, pads) in enumerate(plan):
        raw = layer_tar(root, paths, pads)
        diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
        diff_ids.append(diff_id)
        layer_id = hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()
        ids.append(layer_id)
        data = gzip.compress(raw, compresslevel=6, mtime=0) if args.gzip else raw
        layers.append((layer_id, parent, data))
        parent = layer_id
        history.append({"created": CREATED, "created_by": f"berth make-images: layer {i + 1} of {len(plan)}"})
    image_config = {"Env": [PATH_ENV], "Cmd": args.cmd}
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    repo, _, version = args.tag.rpartition(":")
    manifest = [{"Config": config_name, "RepoTags": [args.tag], "Layers": [f"{i}/layer.tar" for i in ids]}]

    files = []  # (name, bytes or None for a directory)
    for layer_id, parent_id, data in layers:
        v1 = {"id": layer_id, "created": CREATED, "os": "linux", "architecture": "amd64"}
        if parent_id:
            v1["parent"] = parent_id
        if layer_id == ids[-1]:
            v1["config"] = image_config
        files += [
            (layer_id, None),
            (f"{layer_id}/VERSION", b"1.0"),
            (f"{layer_id}/json", json.dumps(v1, sort_keys=True, separators=(",", ":")).encode()),
            (f"{layer_id}/layer.tar", data),
        ]
    files += [
        (config_name, config_bytes),
        ("manifest.json", json.dumps(manifest, separators=(",", ":")).encode()),
        ("repositories", json.dumps({repo: {version: ids[-1]}}, separators=(",", ":")).encode()),
    ]
    tmp = args.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
