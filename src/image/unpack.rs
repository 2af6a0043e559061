//! Layer archives to overlayfs lower directories: decompression by magic (gzip, zstd), a tar reader of
//! our own, OCI whiteouts turned into overlayfs ones, and the checks that keep a hostile layer inside its
//! directory.
//!
//! # Why a tar reader of our own
//!
//! The `tar` crate (0.4) reads the payload of GNU long-name/long-link and PAX extended headers into memory
//! whole, whatever size the header declares, before the caller sees the entry. Its raw mode shows those
//! headers, but then leaves the PAX `size`, `uid` and `gid` records unapplied, and it reads the size of the
//! next header from the block alone. So [`TarReader`] reads ustar, GNU and PAX headers itself: it verifies
//! every header's checksum, refuses a long name, long link or PAX header over 1 MiB from its declared size
//! (before reading it) and paths over 4096 bytes, and otherwise follows Go's `archive/tar`, the reader
//! behind Docker, containerd and skopeo, so that a layer means the same here as there: header-only types
//! (links, directories, devices, fifos) carry no data whatever their size says, a GNU long name wins over a
//! PAX `path`, an empty PAX value keeps the header's field, and `pax_global_header`s are ignored. Sparse
//! files, multi-volume parts and unknown entry types are refused, as Docker refuses them.
//!
//! # Never leaving the target
//!
//! Entry paths are normalised (a leading `./`, empty and `.` components dropped); absolute paths and any
//! `..` component are refused. Each entry is created relative to an open descriptor of its parent
//! directory, reached with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` from
//! the target (or from the previous entry's parent, which stays open because archives list a directory's
//! entries together). The last component is then made with a `*at` call that follows no symlink:
//! `openat(O_CREAT | O_EXCL | O_NOFOLLOW)`, `mkdirat`, `mknodat`, `symlinkat`, `linkat` without
//! `AT_SYMLINK_FOLLOW`; owners, modes and times go through the new file's descriptor or `AT_SYMLINK_NOFOLLOW`.
//! A parent path through a symlink, including one an earlier entry of the layer made, is an error naming
//! that symlink; so is a hard link whose target lies behind one. Missing parents are created `0755`,
//! owned by root.
//!
//! # Layer semantics
//!
//! A later entry replaces an earlier one of the same path (a directory over a directory only updates its
//! metadata and keeps its contents). `.wh.NAME` becomes the overlayfs whiteout, a 0:0 character device
//! `NAME`, unless this very layer has `NAME` (an entry and its whiteout in one layer leave the entry);
//! `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory; other `.wh..wh.*` names are AUFS
//! metadata and skipped. Extended attributes come from PAX `SCHILY.xattr.*` records; `EOPNOTSUPP` and
//! `EPERM` are ignored (as Docker does), and overlay attributes from the archive are never applied.
//! Directory times are set last, once their children exist. The stream is read to its end, so
//! [`UnpackStats::bytes`] is the whole tar.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstatat, futimens, makedev, mkdirat, mknodat,
    utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, dup, fchown, fchownat, linkat, symlinkat, unlinkat};

use super::{ImageError, Result};

/// The tar block size.
const BLOCK: usize = 512;
/// The largest GNU long name/link or PAX extended header accepted (Go's `archive/tar` limit too).
const MAX_EXTENSION: u64 = 1 << 20;
/// The longest entry path or link target accepted (Linux's `PATH_MAX`).
const MAX_PATH: usize = 4096;
/// The read buffer; file contents are written straight out of it.
const BUFFER: usize = 256 * 1024;

/// The opaque-directory marker.
const OPAQUE: &[u8] = b".wh..wh..opq";
/// The prefix of AUFS metadata names (and of the opaque marker).
const WHITEOUT_META: &[u8] = b".wh..wh.";
/// The prefix of whiteouts.
const WHITEOUT: &[u8] = b".wh.";

// ---------------------------------------------------------------------------------------------------------
// Decompression
// ---------------------------------------------------------------------------------------------------------

/// Compression of a layer stream, sniffed from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (magic `1f 8b`).
    Gzip,
    /// zstd (magic `28 b5 2f fd`, or a skippable frame).
    Zstd,
}

/// Sniff the magic (gzip 1f 8b, zstd 28 b5 2f fd) and return a decompressing reader.
///
/// Up to one tar block is read ahead to decide; a stream that starts with a valid tar header is plain tar
/// even when its first file name happens to begin like a magic number. bzip2 and xz streams are refused
/// with an `Unsupported` error rather than read as a corrupt tar.
pub fn decompress<'a>(mut reader: impl Read + 'a) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut prefix = vec![0; BLOCK];
    let mut filled = 0;
    while filled < BLOCK {
        match reader.read(&mut prefix[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    prefix.truncate(filled);
    let compression = sniff(&prefix)?;
    let stream = io::Cursor::new(prefix).chain(reader);
    let reader: Box<dyn Read + 'a> = match compression {
        Compression::None => Box::new(stream),
        // Go's gzip reader (Docker, containerd) reads concatenated members; so does this one.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(stream)?),
    };
    Ok((compression, reader))
}

/// A stored layer's compression and uncompressed size, read from its header or trailer without
/// decompressing: a plain tar is its own size; gzip records the size (modulo 2^32) in the last four
/// bytes of its member (single-member streams, as Docker and containerd write them); a zstd frame
/// header may carry it. `None` when the stream does not tell; unpacking records the exact size.
pub fn stored_size(file: &mut std::fs::File) -> io::Result<(Compression, Option<u64>)> {
    use std::io::{Seek, SeekFrom};
    let len = file.metadata()?.len();
    let mut prefix = vec![0; BLOCK.min(len as usize)];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut prefix)?;
    let compression = sniff(&prefix)?;
    let size = match compression {
        Compression::None => Some(len),
        Compression::Gzip if (18..1 << 32).contains(&len) => {
            let mut tail = [0u8; 4];
            file.seek(SeekFrom::End(-4))?;
            file.read_exact(&mut tail)?;
            Some(u64::from(u32::from_le_bytes(tail)))
        }
        Compression::Gzip => None,
        Compression::Zstd => zstd::zstd_safe::get_frame_content_size(&prefix).ok().flatten(),
    };
    Ok((compression, size))
}

/// The compression of a stream starting with `prefix` (up to one tar block).
fn sniff(prefix: &[u8]) -> io::Result<Compression> {
    if let Ok(block) = <&[u8; BLOCK]>::try_from(prefix)
        && checksum_ok(block)
    {
        return Ok(Compression::None);
    }
    let unsupported = |what: &str| {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{what}-compressed layers are not supported"),
        ))
    };
    match prefix {
        [0x1f, 0x8b, ..] => Ok(Compression::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok(Compression::Zstd),
        [0x50..=0x5f, 0x2a, 0x4d, 0x18, ..] => Ok(Compression::Zstd),
        [b'B', b'Z', b'h', ..] => unsupported("bzip2"),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => unsupported("xz"),
        _ => Ok(Compression::None),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Unpacking
// ---------------------------------------------------------------------------------------------------------

/// What unpack_layer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnpackStats {
    /// Archive members seen (extension headers not counted), including skipped ones.
    pub entries: u64,
    /// Uncompressed tar bytes read, up to the end of the stream.
    pub bytes: u64,
}

/// Unpack an uncompressed layer tar stream into `target`, which must be an existing EMPTY directory.
/// `layer` names the layer in errors (a digest or file name).
///
/// On error the target is left half-filled for the caller to delete; no descriptor stays open.
pub fn unpack_layer(tar: impl Read, target: &Path, layer: &str) -> Result<UnpackStats> {
    let root = nix::fcntl::open(
        target,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ImageError::io("open", target, e.into()))?;
    let empty = {
        let mut listing = std::fs::read_dir(target).map_err(|e| ImageError::io("read", target, e))?;
        listing.next().is_none()
    };
    if !empty {
        let error = io::Error::new(io::ErrorKind::DirectoryNotEmpty, "the directory is not empty");
        return Err(ImageError::io("unpack into", target, error));
    }
    let mut unpacker = Unpacker {
        layer,
        target,
        root,
        cached: None,
        dir_times: BTreeMap::new(),
    };
    let mut tar = TarReader::new(tar);
    let mut entries = 0;
    while let Some(entry) = tar.next().map_err(|bad| unpacker.unpack_error(bad))? {
        entries += 1;
        unpacker.apply(&entry, &mut tar)?;
    }
    unpacker.finish()?;
    tar.drain().map_err(|e| unpacker.unpack_error(read_error("", e)))?;
    Ok(UnpackStats {
        entries,
        bytes: tar.pos,
    })
}

/// How directories on the way to an entry are opened: never through a symlink, never above the start.
fn dir_how() -> OpenHow {
    OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Why a directory on the way to an entry could not be opened.
#[derive(Debug)]
enum WalkError {
    /// This prefix is a symlink.
    Symlink(Vec<u8>),
    /// This prefix is neither a directory nor a symlink.
    NotDir(Vec<u8>),
    /// This prefix does not exist (and was not to be created).
    Missing(Vec<u8>),
    /// A system call failed on this prefix.
    Sys(&'static str, Vec<u8>, Errno),
}

/// The state of one `unpack_layer` call.
struct Unpacker<'a> {
    layer: &'a str,
    target: &'a Path,
    /// The target directory.
    root: OwnedFd,
    /// The previous entry's parent directory (relative path, descriptor). It cannot have been replaced
    /// since: an entry only ever replaces a child of its own parent.
    cached: Option<(Vec<u8>, OwnedFd)>,
    /// Directories' (atime, mtime), set once all their children exist.
    dir_times: BTreeMap<Vec<u8>, (Time, Time)>,
}

impl Unpacker<'_> {
    /// An unsafe or corrupt archive.
    fn unpack_error(&self, bad: Bad) -> ImageError {
        ImageError::Unpack {
            layer: self.layer.to_string(),
            entry: bad.entry,
            reason: bad.reason,
        }
    }

    /// `entry` (raw name) is unsafe or corrupt because of `reason`.
    fn bad(&self, entry: &[u8], reason: impl Into<String>) -> ImageError {
        self.unpack_error(Bad {
            entry: lossy(entry),
            reason: reason.into(),
        })
    }

    /// An I/O error on `rel` inside the target.
    fn io(&self, op: &'static str, rel: &[u8], error: impl Into<io::Error>) -> ImageError {
        ImageError::io(op, self.target.join(OsStr::from_bytes(rel)), error.into())
    }

    /// Turns a walk failure into an error about `entry` (through its hard link target `link`, if given).
    fn walk_error(&self, error: WalkError, entry: &[u8], link: Option<&[u8]>) -> ImageError {
        let reason = match error {
            WalkError::Symlink(p) => format!("path goes through symlink {:?}", lossy(&p)),
            WalkError::NotDir(p) => format!("path goes through non-directory {:?}", lossy(&p)),
            WalkError::Missing(p) => format!("directory {:?} is not in the layer", lossy(&p)),
            WalkError::Sys(op, p, errno) => return self.io(op, &p, errno),
        };
        match link {
            Some(link) => self.bad(entry, format!("hard link target {:?}: {reason}", lossy(link))),
            None => self.bad(entry, reason),
        }
    }

    /// Applies one archive member.
    fn apply<R: Read>(&mut self, entry: &Entry, tar: &mut TarReader<R>) -> Result<()> {
        let path = normalise(&entry.name).map_err(|reason| self.bad(&entry.name, reason))?;
        if path.is_root() {
            // The layer root is the target itself; Docker skips its entry too.
            return match entry.kind {
                Kind::Directory => Ok(()),
                _ => Err(self.bad(&entry.name, "entry replaces the layer root")),
            };
        }
        for component in path.parent().split(|&b| b == b'/') {
            if component.starts_with(WHITEOUT_META) {
                // AUFS metadata (`.wh..wh.plnk/…`) is not part of the file system.
                return Ok(());
            }
            if component.starts_with(WHITEOUT) {
                return Err(self.bad(&entry.name, "bad whiteout: a whiteout cannot be a directory"));
            }
        }
        let whiteout = parse_whiteout(path.name()).map_err(|reason| self.bad(&entry.name, reason))?;
        if whiteout == Whiteout::Aufs {
            return Ok(());
        }
        let (key, dir) = self.take_dir(path.parent(), &entry.name)?;
        let result = self.create(entry, &path, whiteout, dir.as_fd(), tar);
        self.cached = Some((key, dir));
        result
    }

    /// Opens the directory `rel` (creating what is missing), reusing the previous entry's when it is the
    /// same or an ancestor. The caller puts it back in the cache.
    fn take_dir(&mut self, rel: &[u8], entry: &[u8]) -> Result<(Vec<u8>, OwnedFd)> {
        if let Some((key, fd)) = self.cached.take() {
            if key == rel {
                return Ok((key, fd));
            }
            if !key.is_empty()
                && let Some(rest) = rel.strip_prefix(key.as_slice()).and_then(|r| r.strip_prefix(b"/"))
                && let Ok(dir) = openat2(fd.as_fd(), rest, dir_how())
            {
                return Ok((rel.to_vec(), dir));
            }
        }
        let dir = self.open_dir(rel, true).map_err(|e| self.walk_error(e, entry, None))?;
        Ok((rel.to_vec(), dir))
    }

    /// Opens the directory `rel` under the target, never through a symlink; with `create`, makes missing
    /// components (0755, root-owned).
    fn open_dir(&self, rel: &[u8], create: bool) -> std::result::Result<OwnedFd, WalkError> {
        if rel.is_empty() {
            return dup(&self.root).map_err(|e| WalkError::Sys("open", Vec::new(), e));
        }
        match openat2(self.root.as_fd(), rel, dir_how()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => {}
            Err(e) => return Err(WalkError::Sys("open", rel.to_vec(), e)),
        }
        // One component at a time: to create what is missing, or to name what is in the way.
        let mut dir = dup(&self.root).map_err(|e| WalkError::Sys("open", Vec::new(), e))?;
        let mut end = 0;
        for component in rel.split(|&b| b == b'/') {
            end += component.len();
            let prefix = &rel[..end];
            end += 1;
            dir = match openat2(dir.as_fd(), component, dir_how()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    let sys = |op| move |e| WalkError::Sys(op, prefix.to_vec(), e);
                    match mkdirat(dir.as_fd(), component, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(sys("create")(e)),
                    }
                    let new = openat2(dir.as_fd(), component, dir_how()).map_err(sys("open"))?;
                    // A set-group-ID parent or the umask would otherwise decide.
                    fchown(&new, Some(Uid::from_raw(0)), Some(Gid::from_raw(0))).map_err(sys("chown"))?;
                    fchmod(&new, Mode::from_bits_truncate(0o755)).map_err(sys("chmod"))?;
                    new
                }
                Err(Errno::ENOENT) => return Err(WalkError::Missing(prefix.to_vec())),
                // RESOLVE_NO_SYMLINKS refuses the component with ELOOP only when it is a symlink.
                Err(Errno::ELOOP) => return Err(WalkError::Symlink(prefix.to_vec())),
                Err(Errno::ENOTDIR) => return Err(WalkError::NotDir(prefix.to_vec())),
                Err(e) => return Err(WalkError::Sys("open", prefix.to_vec(), e)),
            };
        }
        Ok(dir)
    }

    /// Creates `entry` at `path` in its parent directory `dir`.
    fn create<R: Read>(
        &mut self,
        entry: &Entry,
        path: &EntryPath,
        whiteout: Whiteout<'_>,
        dir: BorrowedFd<'_>,
        tar: &mut TarReader<R>,
    ) -> Result<()> {
        let name = path.name();
        match whiteout {
            Whiteout::Aufs => Ok(()),
            Whiteout::Opaque => XattrTarget::Fd(dir)
                .set(c"trusted.overlay.opaque", b"y")
                .map_err(|e| self.io("mark opaque", path.parent(), e)),
            Whiteout::Hide(hidden) => match mknodat(dir, hidden, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)) {
                // An entry of this very layer wins over its whiteout.
                Ok(()) | Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(self.io("create whiteout", &join(path.parent(), hidden), e)),
            },
            Whiteout::Plain => match entry.kind {
                Kind::File => self.create_file(entry, path, dir, tar),
                Kind::Directory => self.create_dir(entry, path, dir),
                Kind::Symlink => {
                    if entry.link.is_empty() {
                        return Err(self.bad(&entry.name, "symlink with an empty target"));
                    }
                    self.create_node(dir, path, false, "create symlink", || {
                        symlinkat(OsStr::from_bytes(&entry.link), dir, name)
                    })?;
                    self.finish_node(entry, path, dir, false)
                }
                Kind::HardLink => self.create_link(entry, path, dir),
                Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => {
                    let kind = match entry.kind {
                        Kind::CharDevice => SFlag::S_IFCHR,
                        Kind::BlockDevice => SFlag::S_IFBLK,
                        _ => SFlag::S_IFIFO,
                    };
                    let dev = makedev(entry.major, entry.minor);
                    self.create_node(dir, path, false, "create", || {
                        mknodat(dir, name, kind, Mode::from_bits_truncate(0o600), dev)
                    })?;
                    self.finish_node(entry, path, dir, true)
                }
            },
        }
    }

    /// Runs `make`; when the name is taken by an earlier entry, removes that and runs it once more, unless
    /// both are directories: then the directory stays and the result is `None`.
    fn create_node<T>(
        &mut self,
        dir: BorrowedFd<'_>,
        path: &EntryPath,
        is_dir: bool,
        op: &'static str,
        make: impl Fn() -> nix::Result<T>,
    ) -> Result<Option<T>> {
        match make() {
            Ok(made) => return Ok(Some(made)),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(self.io(op, &path.path, e)),
        }
        let name = path.name();
        let stat = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| self.io("stat", &path.path, e))?;
        let was_dir = stat.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if was_dir && is_dir {
            return Ok(None);
        }
        if was_dir {
            remove_all(dir, name).map_err(|e| self.io("remove", &path.path, e))?;
            self.forget_dirs(&path.path);
        } else {
            unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map_err(|e| self.io("remove", &path.path, e))?;
        }
        make().map(Some).map_err(|e| self.io(op, &path.path, e))
    }

    /// Forgets the times of the removed directory `rel` and everything under it.
    fn forget_dirs(&mut self, rel: &[u8]) {
        self.dir_times
            .retain(|k, _| !(k.starts_with(rel) && (k.len() == rel.len() || k[rel.len()] == b'/')));
    }

    /// A regular file: created exclusively, filled from the archive, then owner, mode, xattrs and times.
    fn create_file<R: Read>(
        &mut self,
        entry: &Entry,
        path: &EntryPath,
        dir: BorrowedFd<'_>,
        tar: &mut TarReader<R>,
    ) -> Result<()> {
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = self.create_node(dir, path, false, "create", || {
            openat(dir, path.name(), flags, Mode::from_bits_truncate(0o600))
        })?;
        let mut file = File::from(fd.expect("a file never stays in place of an earlier entry"));
        tar.copy_to(&mut file).map_err(|e| match e {
            CopyError::Read(e) => self.unpack_error(read_error(&lossy(&entry.name), e)),
            CopyError::Write(e) => self.io("write", &path.path, e),
        })?;
        // The owner first: chown clears set-user-ID, set-group-ID and file capabilities.
        fchown(&file, Some(Uid::from_raw(entry.uid)), Some(Gid::from_raw(entry.gid)))
            .map_err(|e| self.io("chown", &path.path, e))?;
        fchmod(&file, Mode::from_bits_truncate(entry.mode)).map_err(|e| self.io("chmod", &path.path, e))?;
        self.set_xattrs(XattrTarget::Fd(file.as_fd()), entry, path)?;
        futimens(&file, &entry.atime.spec(), &entry.mtime.spec()).map_err(|e| self.io("set times", &path.path, e))
    }

    /// A directory: made (or kept, when one is there), then owner, mode and xattrs; times at the end.
    fn create_dir(&mut self, entry: &Entry, path: &EntryPath, dir: BorrowedFd<'_>) -> Result<()> {
        let name = path.name();
        self.create_node(dir, path, true, "create", || {
            mkdirat(dir, name, Mode::from_bits_truncate(0o700))
        })?;
        let fd = openat2(dir, name, dir_how()).map_err(|e| self.io("open", &path.path, e))?;
        fchown(&fd, Some(Uid::from_raw(entry.uid)), Some(Gid::from_raw(entry.gid)))
            .map_err(|e| self.io("chown", &path.path, e))?;
        fchmod(&fd, Mode::from_bits_truncate(entry.mode)).map_err(|e| self.io("chmod", &path.path, e))?;
        self.set_xattrs(XattrTarget::Fd(fd.as_fd()), entry, path)?;
        self.dir_times.insert(path.path.clone(), (entry.atime, entry.mtime));
        Ok(())
    }

    /// A hard link to an entry unpacked before, found without following symlinks.
    fn create_link(&mut self, entry: &Entry, path: &EntryPath, dir: BorrowedFd<'_>) -> Result<()> {
        let link_error = |reason: &str| format!("hard link target {:?}: {reason}", lossy(&entry.link));
        let target = normalise(&entry.link).map_err(|reason| self.bad(&entry.name, link_error(reason)))?;
        if target.is_root() {
            return Err(self.bad(&entry.name, link_error("the layer root")));
        }
        if target.path == path.path {
            return Err(self.bad(&entry.name, link_error("the entry itself")));
        }
        let other;
        let target_dir = if target.parent() == path.parent() {
            dir
        } else {
            other = self
                .open_dir(target.parent(), false)
                .map_err(|e| self.walk_error(e, &entry.name, Some(&entry.link)))?;
            other.as_fd()
        };
        match fstatat(target_dir, target.name(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) if stat.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                return Err(self.bad(&entry.name, link_error("a directory")));
            }
            Ok(_) => {}
            Err(Errno::ENOENT) => return Err(self.bad(&entry.name, link_error("not in the layer"))),
            Err(e) => return Err(self.io("stat", &target.path, e)),
        }
        // Without AT_SYMLINK_FOLLOW a link to a symlink links the symlink itself.
        self.create_node(dir, path, false, "link", || {
            linkat(target_dir, target.name(), dir, path.name(), AtFlags::empty())
        })?;
        // The inode already carries the target's metadata.
        Ok(())
    }

    /// Owner, (mode), xattrs and times of a symlink or special file just made as `path` in `dir`.
    fn finish_node(&self, entry: &Entry, path: &EntryPath, dir: BorrowedFd<'_>, chmod: bool) -> Result<()> {
        let name = path.name();
        let (uid, gid) = (Some(Uid::from_raw(entry.uid)), Some(Gid::from_raw(entry.gid)));
        fchownat(dir, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| self.io("chown", &path.path, e))?;
        if chmod {
            // Devices and fifos cannot be opened safely (a fifo blocks, a device acts); glibc implements
            // NOFOLLOW with fchmodat2 or an O_PATH descriptor, never by following a symlink.
            fchmodat(
                dir,
                name,
                Mode::from_bits_truncate(entry.mode),
                FchmodatFlags::NoFollowSymlink,
            )
            .map_err(|e| self.io("chmod", &path.path, e))?;
        }
        self.set_xattrs(XattrTarget::At(dir, name), entry, path)?;
        utimensat(
            dir,
            name,
            &entry.atime.spec(),
            &entry.mtime.spec(),
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| self.io("set times", &path.path, e))
    }

    /// Applies the entry's xattrs, except overlay ones; unsupported or forbidden ones are skipped.
    fn set_xattrs(&self, target: XattrTarget<'_>, entry: &Entry, path: &EntryPath) -> Result<()> {
        for (name, value) in &entry.xattrs {
            if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
                // Whiteouts, opaqueness and redirects come from the layer's own structure only.
                tracing::debug!(layer = self.layer, entry = %lossy(&entry.name), xattr = %lossy(name),
                    "overlay xattr in the archive ignored");
                continue;
            }
            let Ok(cname) = CString::new(name.as_slice()) else {
                return Err(self.bad(&entry.name, "xattr name contains a nul byte"));
            };
            match target.set(&cname, value) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EPERM)) => {
                    tracing::debug!(layer = self.layer, entry = %lossy(&entry.name), xattr = %lossy(name),
                        error = %e, "xattr not applied");
                }
                Err(e) => return Err(self.io("set xattr", &path.path, e)),
            }
        }
        Ok(())
    }

    /// Sets the directories' times, now that nothing more is created in them.
    fn finish(&mut self) -> Result<()> {
        self.cached = None;
        for (rel, (atime, mtime)) in std::mem::take(&mut self.dir_times) {
            let fd = openat2(self.root.as_fd(), rel.as_slice(), dir_how()).map_err(|e| self.io("open", &rel, e))?;
            futimens(&fd, &atime.spec(), &mtime.spec()).map_err(|e| self.io("set times", &rel, e))?;
        }
        Ok(())
    }
}

/// Where an xattr goes.
enum XattrTarget<'a> {
    /// An open file or directory.
    Fd(BorrowedFd<'a>),
    /// A symlink or special file, by name in an open directory.
    At(BorrowedFd<'a>, &'a [u8]),
}

impl XattrTarget<'_> {
    /// Sets one xattr.
    fn set(&self, name: &CStr, value: &[u8]) -> io::Result<()> {
        let rc = match self {
            // SAFETY: `name` is NUL-terminated, `value` is valid for `value.len()` bytes, and the descriptor
            // is open for the duration of the call.
            XattrTarget::Fd(fd) => unsafe {
                libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0)
            },
            XattrTarget::At(dir, file) => {
                // There is no setxattrat before Linux 6.13. The directory's /proc/self/fd magic link names
                // exactly the open directory, and lsetxattr does not follow the last component.
                let mut proc_path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
                proc_path.extend_from_slice(file);
                let proc_path = CString::new(proc_path)?;
                // SAFETY: both strings are NUL-terminated, `value` is valid for `value.len()` bytes.
                unsafe { libc::lsetxattr(proc_path.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) }
            }
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Removes `name` in `dir`, with everything under it when it is a directory; follows no symlink.
fn remove_all(dir: BorrowedFd<'_>, name: &[u8]) -> nix::Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Err(Errno::EISDIR) => {}
        other => return other,
    }
    let mut listing = Dir::from_fd(openat2(dir, name, dir_how())?)?;
    let mut children = Vec::new();
    for child in listing.iter() {
        let child = child?;
        let child = child.file_name().to_bytes();
        if child != b"." && child != b".." {
            children.push(child.to_vec());
        }
    }
    for child in &children {
        remove_all(listing.as_fd(), child)?;
    }
    drop(listing);
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

/// `parent/name`.
fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        [parent, b"/", name].concat()
    }
}

/// A raw name for messages: lossy UTF-8, cut after 256 bytes.
fn lossy(raw: &[u8]) -> String {
    if raw.len() > 256 {
        format!("{}…", String::from_utf8_lossy(&raw[..256]))
    } else {
        String::from_utf8_lossy(raw).into_owned()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Entry paths and whiteouts
// ---------------------------------------------------------------------------------------------------------

/// A normalised entry path: relative, `/`-separated, without empty, `.` or `..` components.
#[derive(Debug, PartialEq, Eq)]
struct EntryPath {
    /// The whole path; empty for the layer root.
    path: Vec<u8>,
    /// Where the last component starts.
    name_at: usize,
}

impl EntryPath {
    /// Whether this is the layer root itself (`.`, `./`).
    fn is_root(&self) -> bool {
        self.path.is_empty()
    }

    /// The parent directory; empty for the layer root.
    fn parent(&self) -> &[u8] {
        &self.path[..self.name_at.saturating_sub(1)]
    }

    /// The last component.
    fn name(&self) -> &[u8] {
        &self.path[self.name_at..]
    }
}

/// Normalises a raw entry path (or hard link target); the error is the reason it is refused.
fn normalise(raw: &[u8]) -> std::result::Result<EntryPath, &'static str> {
    if raw.is_empty() {
        return Err("empty path");
    }
    if raw.len() > MAX_PATH {
        return Err("path is longer than 4096 bytes");
    }
    if raw.contains(&0) {
        return Err("path contains a nul byte");
    }
    if raw[0] == b'/' {
        return Err("absolute path");
    }
    let mut path = Vec::with_capacity(raw.len());
    let mut name_at = 0;
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err("path escapes the layer through '..'"),
            _ => {
                if !path.is_empty() {
                    path.push(b'/');
                }
                name_at = path.len();
                path.extend_from_slice(component);
            }
        }
    }
    Ok(EntryPath { path, name_at })
}

/// What an entry's last component says about whiteouts.
#[derive(Debug, PartialEq, Eq)]
enum Whiteout<'a> {
    /// An ordinary name.
    Plain,
    /// `.wh..wh..opq`: the directory hides its lower layers' contents.
    Opaque,
    /// `.wh..wh.*` other than the opaque marker: AUFS metadata, skipped.
    Aufs,
    /// `.wh.NAME`: `NAME` is deleted.
    Hide(&'a [u8]),
}

/// Classifies a last path component; the error is the reason it is refused.
fn parse_whiteout(name: &[u8]) -> std::result::Result<Whiteout<'_>, String> {
    if name == OPAQUE {
        return Ok(Whiteout::Opaque);
    }
    if name.starts_with(WHITEOUT_META) {
        return Ok(Whiteout::Aufs);
    }
    let Some(hidden) = name.strip_prefix(WHITEOUT) else {
        return Ok(Whiteout::Plain);
    };
    if matches!(hidden, b"" | b"." | b"..") || hidden.contains(&b'/') || hidden.contains(&0) {
        return Err(format!("bad whiteout {:?}: it names no file", lossy(name)));
    }
    Ok(Whiteout::Hide(hidden))
}

// ---------------------------------------------------------------------------------------------------------
// The tar reader
// ---------------------------------------------------------------------------------------------------------

/// An unsafe or corrupt archive, before the layer's name is attached.
#[derive(Debug, PartialEq, Eq)]
struct Bad {
    /// The entry at fault; empty for the archive itself.
    entry: String,
    /// What is wrong.
    reason: String,
}

/// `Bad` for `entry` (a raw name).
fn bad(entry: &[u8], reason: impl Into<String>) -> Bad {
    Bad {
        entry: lossy(entry),
        reason: reason.into(),
    }
}

/// A read error, as a corrupt archive.
fn read_error(entry: &str, error: io::Error) -> Bad {
    let reason = if error.kind() == io::ErrorKind::UnexpectedEof {
        "the archive is truncated".to_string()
    } else {
        format!("reading the archive: {error}")
    };
    Bad {
        entry: entry.to_string(),
        reason,
    }
}

/// A point in time, as tar headers and PAX records give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
struct Time {
    secs: i64,
    nanos: u32,
}

impl Time {
    /// As a `timespec`.
    fn spec(self) -> TimeSpec {
        TimeSpec::new(self.secs as _, self.nanos as _)
    }
}

/// The type of an archive member (extension headers are consumed by the reader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    HardLink,
    Symlink,
    CharDevice,
    BlockDevice,
    Directory,
    Fifo,
}

/// One archive member with its extension headers applied.
#[derive(Debug)]
struct Entry {
    name: Vec<u8>,
    link: Vec<u8>,
    kind: Kind,
    /// Permission bits with set-user-ID, set-group-ID and sticky.
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Time,
    /// Never before `mtime` (as Docker has it).
    atime: Time,
    major: u64,
    minor: u64,
    /// From PAX `SCHILY.xattr.*` records.
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// One header block's fields, before PAX records and GNU long names apply.
#[derive(Debug)]
struct Header {
    typeflag: u8,
    /// With the ustar prefix.
    name: Vec<u8>,
    link: Vec<u8>,
    size: i64,
    mode: i64,
    uid: i64,
    gid: i64,
    mtime: i64,
    major: i64,
    minor: i64,
}

/// Why copying a file's data failed.
enum CopyError {
    /// Reading the archive.
    Read(io::Error),
    /// Writing the file.
    Write(io::Error),
}

/// Reads tar members from a stream, one after the other.
struct TarReader<R> {
    input: BufReader<R>,
    /// Bytes consumed so far.
    pos: u64,
    /// Data bytes of the current member not read yet.
    remaining: u64,
    /// Padding after the current member's data.
    padding: u64,
    /// The current member, for errors while skipping its data.
    current: String,
}

impl<R: Read> TarReader<R> {
    /// A reader over an uncompressed tar stream.
    fn new(input: R) -> Self {
        TarReader {
            input: BufReader::with_capacity(BUFFER, input),
            pos: 0,
            remaining: 0,
            padding: 0,
            current: String::new(),
        }
    }

    /// Reads until `buf` is full or the stream ends; returns how much was read.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.input.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => {
                    filled += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }

    /// The buffered bytes, reading more when there are none; empty at the end of the stream.
    fn available(&mut self) -> io::Result<&[u8]> {
        loop {
            match self.input.fill_buf() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Returns the same buffer without reading again (or the end of the stream once more).
        self.input.fill_buf()
    }

    /// Consumes `n` bytes.
    fn consume(&mut self, n: usize) {
        self.input.consume(n);
        self.pos += n as u64;
    }

    /// Skips `n` bytes, which must be there.
    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            let available = self.available()?.len();
            if available == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let step = available.min(usize::try_from(n).unwrap_or(usize::MAX));
            self.consume(step);
            n -= step as u64;
        }
        Ok(())
    }

    /// Writes the current member's data to `out`.
    fn copy_to(&mut self, out: &mut impl Write) -> std::result::Result<(), CopyError> {
        while self.remaining > 0 {
            let want = usize::try_from(self.remaining).unwrap_or(usize::MAX);
            let buf = self.available().map_err(CopyError::Read)?;
            if buf.is_empty() {
                return Err(CopyError::Read(io::ErrorKind::UnexpectedEof.into()));
            }
            let step = buf.len().min(want);
            out.write_all(&buf[..step]).map_err(CopyError::Write)?;
            self.consume(step);
            self.remaining -= step as u64;
        }
        Ok(())
    }

    /// Reads the rest of the stream (end-of-archive blocks, record padding).
    fn drain(&mut self) -> io::Result<()> {
        loop {
            let available = self.available()?.len();
            if available == 0 {
                return Ok(());
            }
            self.consume(available);
        }
    }

    /// The next member, after skipping what is left of the current one; `None` at the end of the archive.
    fn next(&mut self) -> std::result::Result<Option<Entry>, Bad> {
        let current = std::mem::take(&mut self.current);
        self.skip(self.remaining + self.padding)
            .map_err(|e| read_error(&current, e))?;
        self.remaining = 0;
        self.padding = 0;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<PaxRecords> = None;
        let mut block = [0u8; BLOCK];
        loop {
            let offset = self.pos;
            let pending = long_name.is_some() || long_link.is_some() || pax.is_some();
            let filled = self.fill(&mut block).map_err(|e| read_error("", e))?;
            if filled == 0 && pending {
                return Err(bad(b"", "an extension header is followed by the end of the archive"));
            }
            if filled == 0 {
                return Ok(None);
            }
            if filled < BLOCK {
                return Err(read_error("", io::ErrorKind::UnexpectedEof.into()));
            }
            if block.iter().all(|&b| b == 0) {
                if pending {
                    return Err(bad(b"", "an extension header is followed by the end of the archive"));
                }
                // The end is two zero blocks (or one, then the end of the stream), as Go reads it.
                match self.fill(&mut block).map_err(|e| read_error("", e))? {
                    0 => return Ok(None),
                    BLOCK if block.iter().all(|&b| b == 0) => return Ok(None),
                    BLOCK => return Err(bad(b"", format!("a zero block at offset {offset} is followed by data"))),
                    _ => return Err(read_error("", io::ErrorKind::UnexpectedEof.into())),
                }
            }
            let header = parse_header(&block).map_err(|reason| bad(b"", format!("{reason} at offset {offset}")))?;
            let what = match header.typeflag {
                b'x' => "pax header",
                b'g' => "pax global header",
                b'L' => "gnu long name header",
                b'K' => "gnu long link header",
                _ => return self.entry(header, long_name, long_link, pax).map(Some),
            };
            let Ok(size) = u64::try_from(header.size) else {
                return Err(bad(b"", format!("{what} at offset {offset} has a negative size")));
            };
            if header.typeflag == b'g' {
                // Docker ignores global headers; so does this reader (their data is skipped, not kept).
                self.skip(size + padding(size)).map_err(|e| read_error("", e))?;
                continue;
            }
            if size > MAX_EXTENSION {
                return Err(bad(
                    b"",
                    format!("{what} of {size} bytes at offset {offset} exceeds the limit of {MAX_EXTENSION} bytes"),
                ));
            }
            let mut data = vec![0; size as usize];
            if self.fill(&mut data).map_err(|e| read_error("", e))? < data.len() {
                return Err(read_error("", io::ErrorKind::UnexpectedEof.into()));
            }
            self.skip(padding(size)).map_err(|e| read_error("", e))?;
            let slot = match header.typeflag {
                b'x' => {
                    if pax.is_some() {
                        return Err(bad(b"", format!("two pax headers for one entry at offset {offset}")));
                    }
                    pax = Some(parse_pax(&data).map_err(|reason| bad(b"", format!("{reason} at offset {offset}")))?);
                    continue;
                }
                b'L' => &mut long_name,
                _ => &mut long_link,
            };
            if slot.is_some() {
                return Err(bad(b"", format!("two {what}s for one entry at offset {offset}")));
            }
            *slot = Some(cstr(&data).to_vec());
        }
    }

    /// Builds the member from its header and extension headers, and sets up reading its data.
    fn entry(
        &mut self,
        header: Header,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        pax: Option<PaxRecords>,
    ) -> std::result::Result<Entry, Bad> {
        let Header {
            typeflag,
            mut name,
            mut link,
            mut size,
            mode,
            mut uid,
            mut gid,
            major,
            minor,
            ..
        } = header;
        let mut mtime = Time {
            secs: header.mtime,
            nanos: 0,
        };
        let mut atime = None;
        let mut xattrs = BTreeMap::new();
        for (key, value) in pax.unwrap_or_default() {
            if value.is_empty() {
                // An empty value keeps the header's field (Go).
                continue;
            }
            let number =
                || parse_decimal(&value).ok_or_else(|| bad(&name, format!("invalid pax {} record", lossy(&key))));
            match key.as_slice() {
                b"path" => name = value,
                b"linkpath" => link = value,
                b"size" => size = number()?,
                b"uid" => uid = number()?,
                b"gid" => gid = number()?,
                b"mtime" => mtime = parse_pax_time(&value).ok_or_else(|| bad(&name, "invalid pax mtime record"))?,
                b"atime" => atime = Some(parse_pax_time(&value).ok_or_else(|| bad(&name, "invalid pax atime record"))?),
                k if k.starts_with(b"GNU.sparse.") => return Err(bad(&name, "sparse files are not supported")),
                k => {
                    if let Some(xattr) = k.strip_prefix(b"SCHILY.xattr.")
                        && !xattr.is_empty()
                    {
                        xattrs.insert(xattr.to_vec(), value);
                    }
                }
            }
        }
        if let Some(long_name) = long_name {
            name = long_name;
        }
        if let Some(long_link) = long_link {
            link = long_link;
        }
        if name.len() > MAX_PATH {
            return Err(bad(&name, "path is longer than 4096 bytes"));
        }
        if link.len() > MAX_PATH {
            return Err(bad(&name, "link target is longer than 4096 bytes"));
        }
        let kind = match typeflag {
            b'0' | b'7' => Kind::File,
            // Old archives mark directories with a trailing slash only.
            0 if name.ends_with(b"/") => Kind::Directory,
            0 => Kind::File,
            b'1' => Kind::HardLink,
            b'2' => Kind::Symlink,
            b'3' => Kind::CharDevice,
            b'4' => Kind::BlockDevice,
            b'5' => Kind::Directory,
            b'6' => Kind::Fifo,
            b'S' => return Err(bad(&name, "sparse files are not supported")),
            t if t.is_ascii_graphic() => return Err(bad(&name, format!("unsupported entry type '{}'", t as char))),
            t => return Err(bad(&name, format!("unsupported entry type {t:#04x}"))),
        };
        let size = u64::try_from(size).map_err(|_| bad(&name, "negative size"))?;
        let id = |what: &str, v: i64| u32::try_from(v).map_err(|_| bad(&name, format!("{what} {v} is out of range")));
        let (uid, gid) = (id("uid", uid)?, id("gid", gid)?);
        let (major, minor) = match kind {
            Kind::CharDevice | Kind::BlockDevice => (
                u32::try_from(major).map_err(|_| bad(&name, "invalid device major number"))?,
                u32::try_from(minor).map_err(|_| bad(&name, "invalid device minor number"))?,
            ),
            _ => (0, 0),
        };
        // Header-only types carry no data, whatever their size says (Go's archive/tar).
        let data = if kind == Kind::File { size } else { 0 };
        self.remaining = data;
        self.padding = padding(data);
        self.current = lossy(&name);
        let atime = atime.filter(|&a| a >= mtime).unwrap_or(mtime);
        Ok(Entry {
            name,
            link,
            kind,
            mode: (mode & 0o7777) as u32,
            uid,
            gid,
            mtime,
            atime,
            major: major.into(),
            minor: minor.into(),
            xattrs,
        })
    }
}

/// PAX records (key, value) in the order given.
type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// Padding after `size` data bytes.
fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// A NUL-terminated field: the bytes before the first NUL.
fn cstr(field: &[u8]) -> &[u8] {
    field.iter().position(|&b| b == 0).map_or(field, |end| &field[..end])
}

/// The (unsigned, signed) sums of a header block with its checksum field as spaces.
fn checksums(block: &[u8; BLOCK]) -> (i64, i64) {
    block.iter().enumerate().fold((0, 0), |(unsigned, signed), (i, &b)| {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        (unsigned + i64::from(b), signed + i64::from(b as i8))
    })
}

/// Whether the block's checksum field matches its contents (either sum, as historical writers differ).
fn checksum_ok(block: &[u8; BLOCK]) -> bool {
    let (unsigned, signed) = checksums(block);
    parse_octal(&block[148..156]).is_some_and(|stored| stored == unsigned || stored == signed)
}

/// Parses a header block (v7, ustar, GNU or star).
fn parse_header(block: &[u8; BLOCK]) -> std::result::Result<Header, String> {
    if parse_octal(&block[148..156]).is_none() {
        return Err("invalid header checksum field".to_string());
    }
    if !checksum_ok(block) {
        return Err("bad header checksum".to_string());
    }
    let ustar = &block[257..263] == b"ustar\0";
    let gnu = &block[257..263] == b"ustar " && &block[263..265] == b" \0";
    let numeric = |range: std::ops::Range<usize>, what: &str| {
        parse_numeric(&block[range]).ok_or_else(|| format!("invalid {what} field in a header"))
    };
    let mut name = cstr(&block[0..100]).to_vec();
    if ustar {
        let prefix = if &block[508..512] == b"tar\0" {
            cstr(&block[345..476])
        } else {
            cstr(&block[345..500])
        };
        if !prefix.is_empty() {
            name = [prefix, b"/", &name].concat();
        }
    }
    let (major, minor) = if ustar || gnu {
        (numeric(329..337, "devmajor")?, numeric(337..345, "devminor")?)
    } else {
        (0, 0)
    };
    Ok(Header {
        typeflag: block[156],
        name,
        link: cstr(&block[157..257]).to_vec(),
        size: numeric(124..136, "size")?,
        mode: numeric(100..108, "mode")?,
        uid: numeric(108..116, "uid")?,
        gid: numeric(116..124, "gid")?,
        mtime: numeric(136..148, "mtime")?,
        major,
        minor,
    })
}

/// A numeric header field: octal, or GNU base-256 when the high bit of its first byte is set.
fn parse_numeric(field: &[u8]) -> Option<i64> {
    let Some(&first) = field.first() else {
        return Some(0);
    };
    if first & 0x80 == 0 {
        return parse_octal(field);
    }
    let invert = if first & 0x40 != 0 { 0xff } else { 0 };
    let mut value: u64 = 0;
    for (i, &b) in field.iter().enumerate() {
        let mut b = b ^ invert;
        if i == 0 {
            b &= 0x7f;
        }
        if value >> 56 != 0 {
            return None;
        }
        value = value << 8 | u64::from(b);
    }
    let value = i64::try_from(value).ok()?;
    Some(if invert == 0xff { !value } else { value })
}

/// An octal header field, padded with spaces or NULs on either side.
fn parse_octal(field: &[u8]) -> Option<i64> {
    let start = field.iter().position(|&b| b != b' ' && b != 0).unwrap_or(field.len());
    let end = field
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(start, |i| i + 1);
    let digits = cstr(&field[start..end]);
    let mut value: i64 = 0;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return None;
        }
        value = value.checked_mul(8)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(value)
}

/// A decimal PAX value (`size`, `uid`, `gid`), with an optional sign.
fn parse_decimal(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A PAX time: `[-]seconds[.fraction]`.
fn parse_pax_time(value: &[u8]) -> Option<Time> {
    let (secs, fraction) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (&value[..dot], &value[dot + 1..]),
        None => (value, &b""[..]),
    };
    let negative = secs.first() == Some(&b'-');
    let secs = parse_decimal(secs)?;
    if !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nanos: u32 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + fraction.get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    if negative && nanos > 0 {
        // -1.5 is 1.5 s before the epoch: second -2, plus half a second.
        return Some(Time {
            secs: secs.checked_sub(1)?,
            nanos: 1_000_000_000 - nanos,
        });
    }
    Some(Time { secs, nanos })
}

/// Parses PAX records: `"<length> <key>=<value>\n"`, the length counting the whole record.
fn parse_pax(mut data: &[u8]) -> std::result::Result<PaxRecords, String> {
    let malformed = || "malformed pax header".to_string();
    let mut records = Vec::new();
    while !data.is_empty() {
        let space = data.iter().position(|&b| b == b' ').ok_or_else(malformed)?;
        let digits = &data[..space];
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(malformed());
        }
        let length: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(malformed)?;
        if length < 5 || length > data.len() || length <= space + 1 || data[length - 1] != b'\n' {
            return Err(malformed());
        }
        let record = &data[space + 1..length - 1];
        let equals = record.iter().position(|&b| b == b'=').ok_or_else(malformed)?;
        let (key, value) = (&record[..equals], &record[equals + 1..]);
        if key.is_empty() || key.contains(&0) {
            return Err(malformed());
        }
        if matches!(key, b"path" | b"linkpath" | b"uname" | b"gname") && value.contains(&0) {
            return Err(format!("pax {} record contains a nul byte", lossy(key)));
        }
        records.push((key.to_vec(), value.to_vec()));
        data = &data[length..];
    }
    Ok(records)
}

#[cfg(test)]
mod tests {

    #[test]
    fn stored_size_reads_headers_and_trailers_without_decompressing() {
        use std::io::Write;
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3000);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "f", &[7u8; 3000][..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let dir = std::env::temp_dir().join(format!("berth-stored-size-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let check = |name: &str, bytes: &[u8], want: (Compression, Option<u64>)| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            let got = stored_size(&mut std::fs::File::open(&p).unwrap()).unwrap();
            assert_eq!(got, want, "{name}");
        };
        check("plain", &tar, (Compression::None, Some(tar.len() as u64)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        check(
            "gzip",
            &gz.finish().unwrap(),
            (Compression::Gzip, Some(tar.len() as u64)),
        );
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        check("zstd", &zst, (Compression::Zstd, Some(tar.len() as u64)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
    use super::*;

    fn path(raw: &str) -> std::result::Result<(String, String, String), &'static str> {
        normalise(raw.as_bytes()).map(|p| (lossy(&p.path), lossy(p.parent()), lossy(p.name())))
    }

    #[test]
    fn normalise_drops_dot_and_empty_components() {
        assert_eq!(path("./a/b"), Ok(("a/b".into(), "a".into(), "b".into())));
        assert_eq!(path("a//b/./c/"), Ok(("a/b/c".into(), "a/b".into(), "c".into())));
        assert_eq!(path("etc/"), Ok(("etc".into(), "".into(), "etc".into())));
        assert_eq!(path("./"), Ok(("".into(), "".into(), "".into())));
        assert!(normalise(b".").unwrap().is_root());
        assert!(!normalise(b"./x").unwrap().is_root());
    }

    #[test]
    fn normalise_refuses_escapes() {
        assert_eq!(path("/abs"), Err("absolute path"));
        assert_eq!(path("//abs"), Err("absolute path"));
        assert_eq!(path("../escape"), Err("path escapes the layer through '..'"));
        assert_eq!(path("a/../../x"), Err("path escapes the layer through '..'"));
        assert_eq!(path("a/.."), Err("path escapes the layer through '..'"));
        assert_eq!(path(""), Err("empty path"));
        assert_eq!(normalise(b"a\0b"), Err("path contains a nul byte"));
        assert_eq!(normalise(&[b'a'; 4097]), Err("path is longer than 4096 bytes"));
        assert!(normalise(&[b'a'; 4096]).is_ok());
        // `...` and `..x` are ordinary names.
        assert_eq!(path(".../..x"), Ok((".../..x".into(), "...".into(), "..x".into())));
    }

    #[test]
    fn whiteout_names() {
        assert_eq!(parse_whiteout(b"file"), Ok(Whiteout::Plain));
        assert_eq!(parse_whiteout(b".whx"), Ok(Whiteout::Plain));
        assert_eq!(parse_whiteout(b".wh.file"), Ok(Whiteout::Hide(b"file")));
        assert_eq!(parse_whiteout(b".wh..hidden"), Ok(Whiteout::Hide(b".hidden")));
        assert_eq!(parse_whiteout(b".wh..wh..opq"), Ok(Whiteout::Opaque));
        assert_eq!(parse_whiteout(b".wh..wh.plnk"), Ok(Whiteout::Aufs));
        assert_eq!(parse_whiteout(b".wh..wh.aufs"), Ok(Whiteout::Aufs));
        for bad in [&b".wh."[..], b".wh..", b".wh..."] {
            let reason = parse_whiteout(bad).unwrap_err();
            assert!(reason.starts_with("bad whiteout"), "{reason}");
        }
    }

    fn tar_with(name: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        b.append_data(&mut h, OsStr::from_bytes(name), &b"abc"[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn sniffing() {
        let tar = tar_with(b"a");
        assert_eq!(sniff(&tar[..BLOCK]).unwrap(), Compression::None);
        assert_eq!(sniff(&gzip(&tar)[..]).unwrap(), Compression::Gzip);
        assert_eq!(
            sniff(&zstd::encode_all(&tar[..], 1).unwrap()).unwrap(),
            Compression::Zstd
        );
        assert_eq!(sniff(&[0x5e, 0x2a, 0x4d, 0x18, 0, 0, 0, 0]).unwrap(), Compression::Zstd);
        assert_eq!(sniff(b"").unwrap(), Compression::None);
        assert_eq!(sniff(&[0; BLOCK]).unwrap(), Compression::None);
        assert_eq!(sniff(b"BZh91AY&SY").unwrap_err().kind(), io::ErrorKind::Unsupported);
        assert_eq!(sniff(b"\xfd7zXZ\0\0").unwrap_err().kind(), io::ErrorKind::Unsupported);
        // A plain tar whose first name starts like gzip's magic is still a tar.
        let odd = tar_with(b"\x1f\x8bx");
        assert_eq!(&odd[..2], b"\x1f\x8b");
        assert_eq!(sniff(&odd[..BLOCK]).unwrap(), Compression::None);
    }

    #[test]
    fn decompress_round_trips() {
        let tar = tar_with(b"file");
        for (stream, want, plain) in [
            (tar.clone(), Compression::None, &tar[..]),
            (gzip(&tar), Compression::Gzip, &tar[..]),
            (zstd::encode_all(&tar[..], 3).unwrap(), Compression::Zstd, &tar[..]),
            // Streams shorter than a block are sniffed too.
            (gzip(b"x"), Compression::Gzip, b"x"),
            (b"x".to_vec(), Compression::None, b"x"),
        ] {
            let (got, mut reader) = decompress(&stream[..]).unwrap();
            assert_eq!(got, want);
            let mut out = Vec::new();
            reader.read_to_end(&mut out).unwrap();
            assert_eq!(out, plain);
        }
    }

    #[test]
    fn numeric_fields() {
        assert_eq!(parse_octal(b"0000644\0"), Some(0o644));
        assert_eq!(parse_octal(b"  644 \0"), Some(0o644));
        assert_eq!(parse_octal(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_octal(b"64 4"), None);
        assert_eq!(parse_octal(b"0009"), None);
        assert_eq!(parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00]), Some(256));
        assert_eq!(parse_numeric(&[0xff; 8]), Some(-1));
        assert_eq!(
            parse_numeric(&[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(parse_decimal(b"1000"), Some(1000));
        assert_eq!(parse_decimal(b"-1"), Some(-1));
        assert_eq!(parse_decimal(b"1x"), None);
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1234"), Some(Time { secs: 1234, nanos: 0 }));
        assert_eq!(
            parse_pax_time(b"1234.5"),
            Some(Time {
                secs: 1234,
                nanos: 500_000_000
            })
        );
        assert_eq!(
            parse_pax_time(b"1.1234567891"),
            Some(Time {
                secs: 1,
                nanos: 123_456_789
            })
        );
        assert_eq!(
            parse_pax_time(b"-1.5"),
            Some(Time {
                secs: -2,
                nanos: 500_000_000
            })
        );
        assert_eq!(parse_pax_time(b"1.x"), None);
        assert_eq!(parse_pax_time(b""), None);
    }

    fn record(key: &str, value: &str) -> Vec<u8> {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while len != body.len() + len.to_string().len() {
            len = body.len() + len.to_string().len();
        }
        format!("{len}{body}").into_bytes()
    }

    #[test]
    fn pax_records() {
        let data = [record("path", "a/b"), record("SCHILY.xattr.user.x", "1=2")].concat();
        assert_eq!(
            parse_pax(&data).unwrap(),
            vec![
                (b"path".to_vec(), b"a/b".to_vec()),
                (b"SCHILY.xattr.user.x".to_vec(), b"1=2".to_vec())
            ]
        );
        assert!(parse_pax(b"").unwrap().is_empty());
        for bad in [
            &b"9 path=ab\n"[..],
            b"8 path=a",
            b"x path=a\n",
            b"11 patha\n\n\n",
            b"9 =value\n",
            b"3 a\n",
        ] {
            assert!(parse_pax(bad).is_err(), "{}", lossy(bad));
        }
        assert!(parse_pax(b"12 path=a\0b\n").unwrap_err().contains("nul"));
    }

    /// A ustar header block with a valid checksum.
    fn header(name: &[u8], typeflag: u8, size: u64) -> [u8; BLOCK] {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::new(typeflag));
        let bytes = h.as_mut_bytes();
        bytes[..100].fill(0);
        bytes[..name.len()].copy_from_slice(name);
        h.set_cksum();
        *h.as_bytes()
    }

    fn read_all(archive: &[u8]) -> std::result::Result<Vec<Entry>, Bad> {
        let mut reader = TarReader::new(archive);
        let mut entries = Vec::new();
        while let Some(entry) = reader.next()? {
            let mut data = Vec::new();
            reader.copy_to(&mut data).map_err(|e| match e {
                CopyError::Read(e) | CopyError::Write(e) => read_error("", e),
            })?;
            entries.push(entry);
        }
        reader.drain().unwrap();
        assert_eq!(reader.pos, archive.len() as u64);
        Ok(entries)
    }

    #[test]
    fn reader_applies_long_names_and_pax() {
        let long = "d/".repeat(150) + "file";
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o4755);
        b.append_data(&mut h, &long, &b"hi"[..]).unwrap();
        let mut archive = b.into_inner().unwrap();
        archive.truncate(archive.len() - 2 * BLOCK);
        let pax = [
            record("path", "pax/name"),
            record("uid", "100000"),
            record("mtime", "1700000000.25"),
            record("SCHILY.xattr.user.k", "v"),
        ]
        .concat();
        archive.extend(header(b"PaxHeaders/x", b'x', pax.len() as u64));
        archive.extend(&pax);
        archive.resize(archive.len().next_multiple_of(BLOCK), 0);
        archive.extend(header(b"short", b'5', 0));
        archive.extend([0; 2 * BLOCK]);
        let entries = read_all(&archive).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name, long.as_bytes());
        assert_eq!(entries[0].mode, 0o4755);
        assert_eq!(entries[1].name, b"pax/name");
        assert_eq!(entries[1].kind, Kind::Directory);
        assert_eq!(entries[1].uid, 100_000);
        assert_eq!(
            entries[1].mtime,
            Time {
                secs: 1_700_000_000,
                nanos: 250_000_000
            }
        );
        assert_eq!(
            entries[1].xattrs.get(&b"user.k"[..]).map(Vec::as_slice),
            Some(&b"v"[..])
        );
    }

    #[test]
    fn reader_refuses_oversized_extension_headers_before_reading_them() {
        for (typeflag, what) in [
            (b'L', "gnu long name header"),
            (b'K', "gnu long link header"),
            (b'x', "pax header"),
        ] {
            // Only the header is there: reading the declared 2 MiB would report truncation instead.
            let archive = header(b"././@LongLink", typeflag, 2 << 20);
            let err = read_all(&archive).unwrap_err();
            assert_eq!(
                err.reason,
                format!("{what} of 2097152 bytes at offset 0 exceeds the limit of 1048576 bytes")
            );
        }
    }

    #[test]
    fn reader_refuses_corruption() {
        let mut archive = tar_with(b"file");
        archive[10] ^= 1;
        assert_eq!(
            read_all(&archive).unwrap_err().reason,
            "bad header checksum at offset 0"
        );

        let archive = tar_with(b"file");
        assert_eq!(
            read_all(&archive[..BLOCK + 1]).unwrap_err().reason,
            "the archive is truncated"
        );
        assert_eq!(
            read_all(&archive[..100]).unwrap_err().reason,
            "the archive is truncated"
        );

        let mut archive = header(b"x", b'L', 10).to_vec();
        archive.extend(b"long-name\0");
        archive.resize(2 * BLOCK, 0);
        assert!(
            read_all(&archive)
                .unwrap_err()
                .reason
                .contains("followed by the end of the archive")
        );

        let mut archive = vec![0; BLOCK];
        archive.extend(header(b"x", b'0', 0));
        assert!(read_all(&archive).unwrap_err().reason.contains("followed by data"));

        let archive = header(b"x", b'S', 0);
        assert_eq!(read_all(&archive).unwrap_err().reason, "sparse files are not supported");
        let archive = header(b"x", b'V', 0);
        assert_eq!(read_all(&archive).unwrap_err().reason, "unsupported entry type 'V'");

        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        assert!(read_all(&garbage).unwrap_err().reason.contains("at offset 0"));
    }

    #[test]
    fn reader_ends_cleanly() {
        assert!(read_all(b"").unwrap().is_empty());
        assert!(read_all(&[0; BLOCK]).unwrap().is_empty());
        // Record padding after the end marker is read too.
        assert!(read_all(&[0; 10240]).unwrap().is_empty());
        // Header-only types carry no data, whatever their size field says.
        let mut archive = header(b"dir/", b'5', 1000).to_vec();
        archive.extend(header(b"file", b'0', 0));
        let entries = read_all(&archive).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].name, b"file");
    }
}
