//! Layer unpacking as root: every entry type and its metadata, overlayfs whiteouts, compression, and a
//! corpus of hostile archives that must all be refused without touching anything outside the target.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use berth::image::ImageError;
use berth::image::unpack::{self, Compression, UnpackStats};

// ---------------------------------------------------------------------------------------------------------
// Scratch directories
// ---------------------------------------------------------------------------------------------------------

/// A fresh directory under the temp dir holding `target/` (unpacked into) and `outside/` (a sentinel the
/// hostile archives aim at); removed on drop.
struct Scratch {
    base: PathBuf,
}

impl Scratch {
    fn new(test: &str) -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = std::env::temp_dir().join(format!("berth-unpack-test-{}-{n}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("target")).unwrap();
        fs::create_dir_all(base.join("outside/dir")).unwrap();
        fs::write(base.join("outside/secret"), "untouched").unwrap();
        fs::write(base.join("outside/dir/file"), "untouched too").unwrap();
        Scratch { base }
    }

    fn target(&self) -> PathBuf {
        self.base.join("target")
    }

    fn outside(&self) -> PathBuf {
        self.base.join("outside")
    }

    /// Path inside the target.
    fn at(&self, rel: &str) -> PathBuf {
        self.target().join(rel)
    }

    /// Everything under the scratch directory except the target: names, types, modes, sizes, times,
    /// link counts and contents.
    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        fn walk(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, String>) {
            for child in fs::read_dir(dir).unwrap() {
                let path = child.unwrap().path();
                if path == skip {
                    continue;
                }
                let m = fs::symlink_metadata(&path).unwrap();
                let mut line = format!(
                    "{:?} {:o} {}:{} size={} mtime={}.{} nlink={}",
                    m.file_type(),
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.nlink()
                );
                if m.is_file() {
                    line += &format!(" {:?}", fs::read(&path).unwrap());
                } else if m.is_symlink() {
                    line += &format!(" -> {:?}", fs::read_link(&path).unwrap());
                }
                out.insert(path.clone(), line);
                if m.is_dir() {
                    walk(&path, skip, out);
                }
            }
        }
        let mut out = BTreeMap::new();
        let base = fs::symlink_metadata(&self.base).unwrap();
        out.insert(
            self.base.clone(),
            format!("mtime={}.{}", base.mtime(), base.mtime_nsec()),
        );
        walk(&self.base, &self.target(), &mut out);
        out
    }

    fn unpack(&self, archive: &[u8]) -> Result<UnpackStats, ImageError> {
        unpack::unpack_layer(archive, &self.target(), "sha256:test")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// An xattr of `path` itself (not following a symlink).
fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated and `buf` is valid for its length.
    let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

// ---------------------------------------------------------------------------------------------------------
// Archives, byte by byte
// ---------------------------------------------------------------------------------------------------------

/// Metadata of a test entry.
#[derive(Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

const META: Meta = Meta {
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: 1_600_000_000,
};

/// A tar archive written header by header, with no validation of names (hostile archives need that).
#[derive(Default)]
struct Tar {
    bytes: Vec<u8>,
}

impl Tar {
    fn new() -> Tar {
        Tar::default()
    }

    /// A ustar header with `name` and `link` copied raw.
    fn header(name: &[u8], kind: tar::EntryType, size: u64, link: &[u8], meta: Meta) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(meta.mode);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        h.set_mtime(meta.mtime);
        let bytes = h.as_mut_bytes();
        bytes[..100].fill(0);
        bytes[..name.len()].copy_from_slice(name);
        bytes[157..257].fill(0);
        bytes[157..157 + link.len()].copy_from_slice(link);
        h.set_cksum();
        h
    }

    /// Appends a header and its data, padded to the block size.
    fn append(&mut self, header: &tar::Header, data: &[u8]) -> &mut Tar {
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(data);
        self.bytes.resize(self.bytes.len().next_multiple_of(512), 0);
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Tar {
        self.file_with(name, data, META)
    }

    fn file_with(&mut self, name: &str, data: &[u8], meta: Meta) -> &mut Tar {
        let h = Tar::header(name.as_bytes(), tar::EntryType::Regular, data.len() as u64, b"", meta);
        self.append(&h, data)
    }

    fn dir(&mut self, name: &str, meta: Meta) -> &mut Tar {
        let h = Tar::header(name.as_bytes(), tar::EntryType::Directory, 0, b"", meta);
        self.append(&h, b"")
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Tar {
        let h = Tar::header(name.as_bytes(), tar::EntryType::Symlink, 0, target.as_bytes(), META);
        self.append(&h, b"")
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Tar {
        let h = Tar::header(name.as_bytes(), tar::EntryType::Link, 0, target.as_bytes(), META);
        self.append(&h, b"")
    }

    fn device(&mut self, name: &str, kind: tar::EntryType, major: u32, minor: u32, meta: Meta) -> &mut Tar {
        let mut h = Tar::header(name.as_bytes(), kind, 0, b"", meta);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.append(&h, b"")
    }

    /// A PAX extended header for the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Tar {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = [format!(" {key}=").as_bytes(), value, b"\n"].concat();
            let mut len = body.len() + 1;
            while len != body.len() + len.to_string().len() {
                len = body.len() + len.to_string().len();
            }
            data.extend(len.to_string().as_bytes());
            data.extend(body);
        }
        let h = Tar::header(b"PaxHeaders.0/x", tar::EntryType::XHeader, data.len() as u64, b"", META);
        self.append(&h, &data)
    }

    /// A GNU long name (`L`) or long link (`K`) header for the next entry.
    fn gnu_long(&mut self, kind: u8, value: &[u8]) -> &mut Tar {
        let data = [value, b"\0"].concat();
        let h = Tar::header(
            b"././@LongLink",
            tar::EntryType::new(kind),
            data.len() as u64,
            b"",
            META,
        );
        self.append(&h, &data)
    }

    /// The archive with its end-of-archive blocks.
    fn finish(&mut self) -> Vec<u8> {
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.extend([0; 1024]);
        bytes
    }
}

// ---------------------------------------------------------------------------------------------------------
// What a layer turns into
// ---------------------------------------------------------------------------------------------------------

#[test]
fn every_entry_type_with_its_metadata() {
    common::require_root();
    let s = Scratch::new("types");
    let meta = |mode, uid, gid, mtime| Meta { mode, uid, gid, mtime };
    let archive = Tar::new()
        .dir("./", META)
        .dir("./d/", meta(0o1777, 1000, 1001, 1_000_000))
        .file_with("./d/file", b"hello", meta(0o4755, 1, 2, 1_234_567))
        .file_with("d/empty", b"", meta(0o2640, 3, 4, 7))
        .symlink("d/link", "file")
        .hardlink("d/hard", "d/file")
        .device("dev/null", tar::EntryType::Char, 1, 3, meta(0o666, 0, 0, 5))
        .device("dev/sda", tar::EntryType::Block, 8, 0, meta(0o660, 0, 6, 5))
        .device("dev/fifo", tar::EntryType::Fifo, 0, 0, meta(0o620, 7, 8, 9))
        .pax(&[
            ("SCHILY.xattr.user.comment", b"made by a test"),
            (
                "SCHILY.xattr.security.capability",
                &[1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("mtime", b"1700000000.5"),
            ("uid", b"200000"),
        ])
        .file_with("xattrs", b"data", meta(0o755, 0, 0, 1))
        .pax(&[("SCHILY.xattr.user.dir", b"yes")])
        .dir("xdir", meta(0o750, 0, 0, 42))
        .finish();
    let stats = s.unpack(&archive).unwrap();
    assert_eq!(
        stats,
        UnpackStats {
            entries: 11,
            bytes: archive.len() as u64
        }
    );

    let d = fs::symlink_metadata(s.at("d")).unwrap();
    assert!(d.is_dir());
    assert_eq!(
        (d.mode() & 0o7777, d.uid(), d.gid(), d.mtime()),
        (0o1777, 1000, 1001, 1_000_000)
    );

    let f = fs::symlink_metadata(s.at("d/file")).unwrap();
    assert!(f.is_file());
    assert_eq!(
        (f.mode() & 0o7777, f.uid(), f.gid(), f.mtime()),
        (0o4755, 1, 2, 1_234_567)
    );
    assert_eq!(fs::read(s.at("d/file")).unwrap(), b"hello");
    assert_eq!(f.nlink(), 2);
    let e = fs::symlink_metadata(s.at("d/empty")).unwrap();
    assert_eq!(
        (e.mode() & 0o7777, e.uid(), e.gid(), e.mtime(), e.len()),
        (0o2640, 3, 4, 7, 0)
    );

    let hard = fs::symlink_metadata(s.at("d/hard")).unwrap();
    assert_eq!(hard.ino(), f.ino());

    let l = fs::symlink_metadata(s.at("d/link")).unwrap();
    assert!(l.file_type().is_symlink());
    assert_eq!(fs::read_link(s.at("d/link")).unwrap(), Path::new("file"));
    assert_eq!(l.mtime(), META.mtime as i64);

    let null = fs::symlink_metadata(s.at("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(
        (nix::sys::stat::major(null.rdev()), nix::sys::stat::minor(null.rdev())),
        (1, 3)
    );
    assert_eq!(null.mode() & 0o7777, 0o666);
    let sda = fs::symlink_metadata(s.at("dev/sda")).unwrap();
    assert!(sda.file_type().is_block_device());
    assert_eq!(
        (nix::sys::stat::major(sda.rdev()), nix::sys::stat::minor(sda.rdev())),
        (8, 0)
    );
    assert_eq!((sda.mode() & 0o7777, sda.gid()), (0o660, 6));
    let fifo = fs::symlink_metadata(s.at("dev/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(
        (fifo.mode() & 0o7777, fifo.uid(), fifo.gid(), fifo.mtime()),
        (0o620, 7, 8, 9)
    );

    // A parent that only its children name: 0755, root's.
    let dev = fs::symlink_metadata(s.at("dev")).unwrap();
    assert_eq!((dev.mode() & 0o7777, dev.uid(), dev.gid()), (0o755, 0, 0));

    let x = s.at("xattrs");
    let xm = fs::symlink_metadata(&x).unwrap();
    assert_eq!(
        (xm.uid(), xm.mtime(), xm.mtime_nsec()),
        (200_000, 1_700_000_000, 500_000_000)
    );
    assert_eq!(xattr(&x, "user.comment").as_deref(), Some(&b"made by a test"[..]));
    assert!(
        xattr(&x, "security.capability").is_some(),
        "file capabilities survive the chown"
    );
    assert_eq!(
        xattr(&x, "trusted.overlay.opaque"),
        None,
        "overlay xattrs are never taken from the archive"
    );
    assert_eq!(xattr(&s.at("xdir"), "user.dir").as_deref(), Some(&b"yes"[..]));
    assert_eq!(fs::symlink_metadata(s.at("xdir")).unwrap().mode() & 0o7777, 0o750);
}

#[test]
fn directory_times_are_set_after_their_children() {
    common::require_root();
    let s = Scratch::new("dirtimes");
    let archive = Tar::new()
        .dir("a/", Meta { mtime: 100, ..META })
        .dir("a/b/", Meta { mtime: 200, ..META })
        .file("a/b/c", b"x")
        .file("a/f", b"y")
        .symlink("a/b/l", "c")
        .file(".wh.gone", b"")
        .file("a/.wh.gone", b"")
        .finish();
    s.unpack(&archive).unwrap();
    assert_eq!(fs::metadata(s.at("a")).unwrap().mtime(), 100);
    assert_eq!(fs::metadata(s.at("a/b")).unwrap().mtime(), 200);
}

#[test]
fn entries_may_come_before_their_parents() {
    common::require_root();
    let s = Scratch::new("order");
    let archive = Tar::new()
        .file("late/x/file", b"content")
        .dir(
            "late/x/",
            Meta {
                mode: 0o700,
                uid: 5,
                gid: 6,
                mtime: 77,
            },
        )
        .file("late/y", b"sibling")
        .finish();
    s.unpack(&archive).unwrap();
    let late = fs::symlink_metadata(s.at("late")).unwrap();
    assert_eq!((late.mode() & 0o7777, late.uid(), late.gid()), (0o755, 0, 0));
    let x = fs::symlink_metadata(s.at("late/x")).unwrap();
    assert_eq!((x.mode() & 0o7777, x.uid(), x.gid(), x.mtime()), (0o700, 5, 6, 77));
    assert_eq!(fs::read(s.at("late/x/file")).unwrap(), b"content");
    assert_eq!(fs::read(s.at("late/y")).unwrap(), b"sibling");
}

#[test]
fn later_entries_replace_earlier_ones() {
    common::require_root();
    let s = Scratch::new("replace");
    let archive = Tar::new()
        // A file replaced by a directory.
        .file("r", b"file")
        .dir("r/", META)
        .file("r/in", b"in r")
        // A directory (with contents) replaced by a file.
        .dir("q/", META)
        .file("q/c", b"child")
        .dir("q/sub/", META)
        .file("q/sub/deep", b"deep")
        .file("q", b"now a file")
        // A directory replaced by a directory: contents stay, metadata changes.
        .dir("k/", Meta { mode: 0o755, ..META })
        .file("k/kept", b"kept")
        .dir(
            "k/",
            Meta {
                mode: 0o700,
                uid: 9,
                gid: 9,
                mtime: 99,
            },
        )
        // A file replaced by a file, a symlink by a file (not written through).
        .file("same", b"first")
        .file("same", b"second")
        .symlink("s", "same")
        .file("s", b"not through")
        .finish();
    s.unpack(&archive).unwrap();
    assert_eq!(fs::read(s.at("r/in")).unwrap(), b"in r");
    assert_eq!(fs::read(s.at("q")).unwrap(), b"now a file");
    let k = fs::symlink_metadata(s.at("k")).unwrap();
    assert_eq!((k.mode() & 0o7777, k.uid(), k.mtime()), (0o700, 9, 99));
    assert_eq!(fs::read(s.at("k/kept")).unwrap(), b"kept");
    assert_eq!(fs::read(s.at("same")).unwrap(), b"second");
    assert!(fs::symlink_metadata(s.at("s")).unwrap().is_file());
    assert_eq!(fs::read(s.at("s")).unwrap(), b"not through");
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    common::require_root();
    let s = Scratch::new("whiteouts");
    let archive = Tar::new()
        .file(".wh.gone", b"")
        .file("deep/er/.wh.gone-too", b"")
        .dir("opaque/", Meta { mode: 0o711, ..META })
        .file("opaque/.wh..wh..opq", b"")
        .file("implicit/.wh..wh..opq", b"")
        // An entry and its whiteout in one layer: the entry stays, whatever the order.
        .file("kept", b"kept")
        .file(".wh.kept", b"")
        .symlink(".wh.type-does-not-matter", "x")
        // AUFS metadata is skipped.
        .dir(".wh..wh.plnk/", META)
        .file(".wh..wh.plnk/123.456", b"aufs")
        .finish();
    s.unpack(&archive).unwrap();
    for path in ["gone", "deep/er/gone-too", "type-does-not-matter"] {
        let m = fs::symlink_metadata(s.at(path)).unwrap();
        assert!(m.file_type().is_char_device(), "{path}");
        assert_eq!(m.rdev(), 0, "{path}");
    }
    assert!(!s.at(".wh.gone").exists());
    assert_eq!(
        xattr(&s.at("opaque"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(fs::symlink_metadata(s.at("opaque")).unwrap().mode() & 0o7777, 0o711);
    assert!(
        fs::read_dir(s.at("opaque")).unwrap().next().is_none(),
        "the marker itself is not unpacked"
    );
    assert_eq!(
        xattr(&s.at("implicit"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(fs::read(s.at("kept")).unwrap(), b"kept");
    assert!(!s.at(".wh..wh.plnk").exists());
}

#[test]
fn long_names_from_gnu_and_pax_headers() {
    common::require_root();
    let s = Scratch::new("longnames");
    let long_dir = "dir-".repeat(40);
    let long_file = format!("{long_dir}/{}", "f".repeat(200));
    // The tar crate's own writer emits GNU long names and links.
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o600);
    builder.append_data(&mut h, &long_file, &b"long"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    builder
        .append_link(&mut h, "sym", format!("/{}", "t".repeat(300)))
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    builder
        .append_link(&mut h, format!("{long_dir}/hard"), &long_file)
        .unwrap();
    let mut archive = builder.into_inner().unwrap();
    archive.truncate(archive.len() - 1024);
    // PAX path and linkpath, and a GNU long name written by hand.
    let pax_name = format!("pax/{}", "p".repeat(250));
    let mut more = Tar::new();
    more.pax(&[("path", pax_name.as_bytes())]).file("ignored-name", b"pax");
    more.pax(&[("path", b"pax/link"), ("linkpath", pax_name.as_bytes())])
        .hardlink("x", "y");
    more.gnu_long(b'L', b"gnu/long/name").file("short", b"gnu");
    archive.extend(more.finish());

    s.unpack(&archive).unwrap();
    assert_eq!(fs::read(s.target().join(&long_file)).unwrap(), b"long");
    assert_eq!(
        fs::read_link(s.at("sym")).unwrap(),
        PathBuf::from(format!("/{}", "t".repeat(300)))
    );
    let ino = fs::metadata(s.target().join(&long_file)).unwrap().ino();
    assert_eq!(
        fs::metadata(s.target().join(format!("{long_dir}/hard"))).unwrap().ino(),
        ino
    );
    assert_eq!(fs::read(s.target().join(&pax_name)).unwrap(), b"pax");
    assert_eq!(fs::read(s.at("pax/link")).unwrap(), b"pax");
    assert_eq!(fs::read(s.at("gnu/long/name")).unwrap(), b"gnu");
    assert!(!s.at("ignored-name").exists() && !s.at("short").exists());
}

#[test]
fn compressed_layers_through_decompress() {
    common::require_root();
    let archive = Tar::new().dir("etc/", META).file("etc/hostname", b"berth\n").finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&archive).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&archive[..], 3).unwrap();
    for (stream, want) in [
        (&archive, Compression::None),
        (&gz, Compression::Gzip),
        (&zst, Compression::Zstd),
    ] {
        let s = Scratch::new("compressed");
        let (compression, reader) = unpack::decompress(&stream[..]).unwrap();
        assert_eq!(compression, want);
        let stats = unpack::unpack_layer(reader, &s.target(), "sha256:test").unwrap();
        assert_eq!(
            stats,
            UnpackStats {
                entries: 2,
                bytes: archive.len() as u64
            }
        );
        assert_eq!(fs::read(s.at("etc/hostname")).unwrap(), b"berth\n");
    }
}

#[test]
fn the_whole_stream_is_read() {
    common::require_root();
    let s = Scratch::new("drain");
    let mut archive = Tar::new().file("f", b"x").finish();
    // Record padding as GNU tar writes it.
    archive.resize(10240, 0);
    let mut reader = &archive[..];
    let stats = unpack::unpack_layer(&mut reader, &s.target(), "sha256:test").unwrap();
    assert_eq!(stats.bytes, 10240);
    assert!(reader.is_empty());
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn refuses_a_target_that_is_not_empty() {
    common::require_root();
    let s = Scratch::new("nonempty");
    fs::write(s.at("already"), "here").unwrap();
    let err = s.unpack(&Tar::new().file("f", b"x").finish()).unwrap_err();
    assert!(matches!(err, ImageError::Io { .. }), "{err}");
    assert!(err.to_string().contains("not empty"), "{err}");
}

#[test]
fn replacing_a_symlink_never_writes_through_it() {
    common::require_root();
    let s = Scratch::new("replace-symlink");
    let before = s.snapshot();
    let secret = s.outside().join("secret");
    let dir = s.outside().join("dir");
    let archive = Tar::new()
        .symlink("l", secret.to_str().unwrap())
        .file("l", b"overwritten?")
        .symlink("d", dir.to_str().unwrap())
        .dir("d/", META)
        .file("d/file", b"overwritten?")
        .symlink("s", secret.to_str().unwrap())
        .hardlink("h", "s")
        .device("s", tar::EntryType::Fifo, 0, 0, META)
        .finish();
    s.unpack(&archive).unwrap();
    assert_eq!(s.snapshot(), before);
    assert_eq!(fs::read(s.at("l")).unwrap(), b"overwritten?");
    assert_eq!(fs::read(s.at("d/file")).unwrap(), b"overwritten?");
    // A hard link to a symlink links the symlink itself.
    assert_eq!(fs::read_link(s.at("h")).unwrap(), secret);
    assert!(fs::symlink_metadata(s.at("s")).unwrap().file_type().is_fifo());
}

// ---------------------------------------------------------------------------------------------------------
// Hostile archives
// ---------------------------------------------------------------------------------------------------------

/// Unpacks the archive `build` makes (it may aim at the scratch directory's sentinel) and checks that it
/// is refused as unsafe or corrupt, for `entry` (where `{outside}` stands for the sentinel's path) with a
/// reason containing `reason`, and that nothing outside the target changed.
fn assert_refused(test: &str, build: impl FnOnce(&Scratch) -> Vec<u8>, entry: &str, reason: &str) {
    common::require_root();
    let s = Scratch::new(test);
    let archive = build(&s);
    let entry = entry.replace("{outside}", s.outside().to_str().unwrap());
    let passwd = fs::symlink_metadata("/etc/passwd").unwrap();
    let before = s.snapshot();
    let err = s.unpack(&archive).expect_err("a hostile archive was unpacked");
    match &err {
        ImageError::Unpack {
            layer,
            entry: got_entry,
            reason: got_reason,
        } => {
            assert_eq!(layer, "sha256:test");
            assert_eq!(*got_entry, entry, "{err}");
            assert!(
                got_reason.contains(reason),
                "expected a reason containing {reason:?}: {err}"
            );
        }
        other => panic!("expected an unpack error, got: {other}"),
    }
    assert_eq!(s.snapshot(), before, "something outside the target changed");
    let after = fs::symlink_metadata("/etc/passwd").unwrap();
    assert_eq!(
        (after.nlink(), after.mtime(), after.len()),
        (passwd.nlink(), passwd.mtime(), passwd.len())
    );
}

/// `name` under the sentinel directory, as a string.
fn outside(s: &Scratch, name: &str) -> String {
    s.outside().join(name).to_str().unwrap().to_string()
}

#[test]
fn refuses_parent_dir_escape() {
    assert_refused(
        "dotdot",
        |_| Tar::new().file("../escape", b"x").finish(),
        "../escape",
        "path escapes the layer through '..'",
    );
}

#[test]
fn refuses_dot_dot_inside_a_path() {
    assert_refused(
        "dotdot-inner",
        |_| Tar::new().file("a/../../x", b"x").finish(),
        "a/../../x",
        "'..'",
    );
}

#[test]
fn refuses_absolute_paths() {
    assert_refused(
        "absolute",
        |s| Tar::new().file(&outside(s, "abs"), b"x").finish(),
        "{outside}/abs",
        "absolute path",
    );
}

#[test]
fn refuses_writing_through_a_symlink() {
    assert_refused(
        "symlink-write",
        |s| {
            Tar::new()
                .symlink("l", s.outside().to_str().unwrap())
                .file("l/file", b"x")
                .finish()
        },
        "l/file",
        "path goes through symlink \"l\"",
    );
}

#[test]
fn refuses_writing_over_a_file_through_a_symlink() {
    assert_refused(
        "symlink-overwrite",
        |s| {
            Tar::new()
                .symlink("l", s.outside().to_str().unwrap())
                .file("l/secret", b"pwned")
                .finish()
        },
        "l/secret",
        "path goes through symlink \"l\"",
    );
}

#[test]
fn refuses_writing_through_a_symlink_to_dot_dot() {
    assert_refused(
        "symlink-dotdot",
        |_| Tar::new().symlink("up", "..").file("up/escape", b"x").finish(),
        "up/escape",
        "path goes through symlink \"up\"",
    );
}

#[test]
fn refuses_a_directory_through_a_deep_symlink() {
    assert_refused(
        "symlink-deep",
        |s| {
            Tar::new()
                .dir("x/y/", META)
                .symlink("x/y/l", s.outside().to_str().unwrap())
                .dir("x/y/l/dir/", META)
                .finish()
        },
        "x/y/l/dir/",
        "path goes through symlink \"x/y/l\"",
    );
}

#[test]
fn refuses_a_directory_replaced_by_a_symlink_then_written_through() {
    assert_refused(
        "symlink-swap",
        |s| {
            Tar::new()
                .dir("d/", META)
                .file("d/a", b"inside")
                .symlink("d", s.outside().to_str().unwrap())
                .file("d/b", b"outside?")
                .finish()
        },
        "d/b",
        "path goes through symlink \"d\"",
    );
}

#[test]
fn refuses_hard_links_to_absolute_paths() {
    assert_refused(
        "hardlink-abs",
        |_| Tar::new().hardlink("passwd", "/etc/passwd").finish(),
        "passwd",
        "hard link target \"/etc/passwd\": absolute path",
    );
}

#[test]
fn refuses_hard_links_out_through_dot_dot() {
    assert_refused(
        "hardlink-dotdot",
        |_| Tar::new().hardlink("h", "../outside/secret").finish(),
        "h",
        "hard link target \"../outside/secret\": path escapes the layer through '..'",
    );
}

#[test]
fn refuses_hard_links_through_a_symlink() {
    assert_refused(
        "hardlink-symlink",
        |s| {
            Tar::new()
                .symlink("l", s.outside().to_str().unwrap())
                .hardlink("h", "l/secret")
                .finish()
        },
        "h",
        "hard link target \"l/secret\": path goes through symlink \"l\"",
    );
}

#[test]
fn refuses_hard_links_to_entries_not_in_the_layer() {
    assert_refused(
        "hardlink-missing",
        |_| Tar::new().hardlink("h", "later").file("later", b"x").finish(),
        "h",
        "not in the layer",
    );
}

#[test]
fn refuses_bad_whiteouts() {
    assert_refused(
        "whiteout-dot",
        |_| Tar::new().file(".wh..", b"").finish(),
        ".wh..",
        "bad whiteout",
    );
    assert_refused(
        "whiteout-empty",
        |_| Tar::new().file("d/.wh.", b"").finish(),
        "d/.wh.",
        "bad whiteout",
    );
    assert_refused(
        "whiteout-dotdot",
        |_| Tar::new().file("d/.wh...", b"").finish(),
        "d/.wh...",
        "bad whiteout",
    );
    assert_refused(
        "whiteout-dir",
        |_| Tar::new().file(".wh.d/x", b"").finish(),
        ".wh.d/x",
        "bad whiteout",
    );
}

#[test]
fn refuses_an_oversized_gnu_long_name() {
    // Only the header: a reader that took the declared 2 MiB in would report truncation instead.
    assert_refused(
        "longname",
        |_| {
            let h = Tar::header(b"././@LongLink", tar::EntryType::GNULongName, 2 << 20, b"", META);
            h.as_bytes().to_vec()
        },
        "",
        "gnu long name header of 2097152 bytes at offset 0 exceeds the limit of 1048576 bytes",
    );
}

#[test]
fn refuses_an_oversized_pax_header() {
    assert_refused(
        "pax",
        |_| {
            let mut t = Tar::new();
            t.file("first", b"fine");
            let h = Tar::header(b"PaxHeaders/x", tar::EntryType::XHeader, 2 << 20, b"", META);
            t.append(&h, b"");
            t.finish()
        },
        "",
        "pax header of 2097152 bytes at offset 1024 exceeds the limit of 1048576 bytes",
    );
}

#[test]
fn refuses_an_overlong_path() {
    let long = "a/".repeat(2100) + "file";
    let expected = format!("{}…", &long[..256]);
    assert_refused(
        "longpath",
        |_| Tar::new().gnu_long(b'L', long.as_bytes()).file("short", b"x").finish(),
        &expected,
        "path is longer than 4096 bytes",
    );
}

#[test]
fn refuses_a_truncated_archive() {
    // In a file's data, in its padding, in a header.
    assert_refused(
        "truncated",
        |_| {
            let h = Tar::header(b"big", tar::EntryType::Regular, 4096, b"", META);
            let mut bytes = h.as_bytes().to_vec();
            bytes.extend([7; 100]);
            bytes
        },
        "big",
        "the archive is truncated",
    );
    assert_refused(
        "truncated-padding",
        |_| Tar::new().file("f", b"x").finish()[..700].to_vec(),
        "f",
        "the archive is truncated",
    );
    assert_refused(
        "truncated-header",
        |_| Tar::new().file("f", b"x").file("g", b"y").finish()[..1124].to_vec(),
        "",
        "the archive is truncated",
    );
}

#[test]
fn refuses_a_bad_checksum() {
    assert_refused(
        "checksum",
        |_| {
            let mut bytes = Tar::new().file("ok", b"x").file("evil", b"y").finish();
            bytes[1024 + 1] ^= 0x20;
            bytes
        },
        "",
        "bad header checksum at offset 1024",
    );
}

#[test]
fn refuses_garbage() {
    assert_refused(
        "garbage",
        |_| (0..8192u32).map(|i| (i * 131 + 7) as u8).collect(),
        "",
        "at offset 0",
    );
}

#[test]
fn refuses_paths_through_files() {
    assert_refused(
        "through-file",
        |_| Tar::new().file("f", b"x").file("f/g", b"y").finish(),
        "f/g",
        "path goes through non-directory \"f\"",
    );
}

#[test]
fn refuses_replacing_the_layer_root() {
    assert_refused(
        "root",
        |_| Tar::new().symlink("./", "/").finish(),
        "./",
        "entry replaces the layer root",
    );
}
