//! Layers of a build: the changes a step made, as an OCI layer tar, and paths of an image read through its
//! unpacked layers.
//!
//! # From an overlayfs upper directory to a layer
//!
//! A build step runs on an overlayfs whose upper directory ends up holding exactly what the step changed.
//! [`write_diff`] walks that directory and writes it as an uncompressed OCI layer: overlayfs whiteouts
//! (0:0 character devices) become empty `.wh.NAME` files, opaque directories (`trusted.overlay.opaque=y`)
//! are followed by an empty `.wh..wh..opq` file, other overlay attributes are dropped and the remaining
//! extended attributes travel as PAX `SCHILY.xattr.*` records. The output is deterministic: each
//! directory's entries are written in byte order of their archive names, parents before children; hard
//! links point at the first path written; no access or change times, user or group names are recorded.
//!
//! Headers are ustar. What does not fit there (paths or link targets over 100 bytes, ids over 2097151,
//! sizes of 8 GiB and more, times before 1970 or after 2242) goes into a PAX extended header in front of
//! the entry, which every reader of OCI layers (Go's `archive/tar`, the `tar` crate, this crate's
//! unpacker) applies.
//!
//! Upper directories made with the overlayfs `redirect_dir` or `metacopy` features describe changes by
//! reference to the lower layers, which a layer cannot express: such entries are errors, so the build's
//! overlay must be mounted without those features (the kernel's defaults on Debian).
//!
//! # Reading an image through its layers
//!
//! [`lookup`] answers what a path is in an image made of unpacked layer directories, as the overlay over
//! them would show it, without mounting anything: whiteouts and opaque directories hide what lies below,
//! and symlinks are resolved inside the image, never on the host. [`read_file`] reads a file that way
//! (`/etc/passwd` for `USER`, for example).

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The tar block size.
const BLOCK: usize = 512;
/// The largest value of an 8-byte octal header field (uid, gid).
const MAX_OCTAL_8: u64 = 0o7_777_777;
/// The largest value of a 12-byte octal header field (size, mtime).
const MAX_OCTAL_12: u64 = 0o77_777_777_777;
/// The prefix of overlayfs' own extended attributes, never carried into a layer.
const OVERLAY_XATTR: &[u8] = b"trusted.overlay.";
/// The opaque-directory attribute.
const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";
/// A directory renamed with `redirect_dir`: its contents live elsewhere in the lower layers.
const REDIRECT_XATTR: &[u8] = b"trusted.overlay.redirect";
/// A metadata-only copy-up with `metacopy`: the data lives in a lower layer.
const METACOPY_XATTR: &[u8] = b"trusted.overlay.metacopy";
/// The prefix of whiteout names in a layer.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The name of the opaque-directory marker in a layer.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// The mode of whiteout files, Docker's (both builders). An opaque marker takes its directory's mode and owner.
const WHITEOUT_MODE: u32 = 0o600;
/// The most symlinks followed in one lookup (Linux's limit).
const MAX_HOPS: usize = 40;

/// Whether `meta` describes an overlayfs whiteout: a character device with device number 0:0.
pub fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

// ---------------------------------------------------------------------------------------------------------
// Upper directory to layer
// ---------------------------------------------------------------------------------------------------------

/// Writes the changes recorded in an overlayfs upper dir as an OCI layer tar (uncompressed) to `out`.
///
/// - Entries come in a fixed order, so the same tree always gives the same bytes: a directory's entries
///   sorted by the bytes of their archive names, each directory followed by its contents. Paths are
///   relative, without a leading `/`; directories end with `/`. The upper directory itself has no entry.
/// - Regular files, directories, symlinks, character and block devices and fifos keep their permission
///   bits (with set-id and sticky bits), uid, gid and mtime (whole seconds). Sockets are left out. A
///   second path of the same inode (same device and inode number) becomes a hard link to the first one
///   written.
/// - An overlay whiteout (a 0:0 character device `NAME`) becomes an empty regular file `.wh.NAME` in the
///   same directory, with the whiteout's owner and mtime.
/// - An opaque directory (`trusted.overlay.opaque` = `y`) is followed by an empty `DIR/.wh..wh..opq` file.
/// - Extended attributes are carried as PAX `SCHILY.xattr.NAME` records, sorted by name, except the
///   overlay's own `trusted.overlay.*` ones (and any whose name holds a `=`, which no PAX reader could
///   split). Whiteouts, opaque markers and hard links carry none.
/// - `skip` gets each path relative to `upper` as it is in the upper dir (`"etc/hosts"`, no trailing
///   slash; a whiteout by the name it hides) and leaves it out when it returns true; a skipped directory
///   leaves out its subtree.
/// - With `mtime_clamp` `Some(t)`, every mtime after `t` is written as `t`.
///
/// Errors: any I/O error (with the path concerned), a real file whose name starts with `.wh.` (it would
/// read back as a whiteout), and entries made by the overlayfs `redirect_dir` or `metacopy` features.
/// On error, part of the archive may have been written.
///
/// Returns the number of entries written (whiteout and opaque marker files included, PAX extended
/// headers not).
pub fn write_diff(
    upper: &Path,
    out: &mut dyn Write,
    skip: &dyn Fn(&str) -> bool,
    mtime_clamp: Option<u64>,
) -> io::Result<u64> {
    let mut differ = Differ {
        out: io::BufWriter::with_capacity(256 * 1024, out),
        skip,
        clamp: mtime_clamp.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
        links: HashMap::new(),
        entries: 0,
    };
    let mut stack = differ.children(upper, b"")?;
    while let Some(node) = stack.pop() {
        if let Some(children) = differ.emit(&node)? {
            stack.extend(children);
        }
    }
    differ.out.write_all(&[0; 2 * BLOCK])?;
    differ.out.flush()?;
    Ok(differ.entries)
}

/// An entry of the upper dir waiting to be written.
struct Node {
    /// Its path on the host.
    host: PathBuf,
    /// Its path relative to the upper dir, as in the upper dir.
    rel: Vec<u8>,
    /// Its path in the archive, without a trailing slash (differs from `rel` for whiteouts).
    name: Vec<u8>,
    /// Its `lstat`.
    meta: Metadata,
}

/// The state of one `write_diff` call.
struct Differ<'a> {
    out: io::BufWriter<&'a mut dyn Write>,
    skip: &'a dyn Fn(&str) -> bool,
    /// The latest mtime written.
    clamp: Option<i64>,
    /// The archive path of the first entry written for each (device, inode) with more than one link.
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Entries written so far.
    entries: u64,
}

impl Differ<'_> {
    /// The entries of the upper-dir directory `dir` (`rel` relative to the upper dir) not skipped, in
    /// reverse order of their archive names (ready to be pushed on the walk's stack).
    fn children(&self, dir: &Path, rel: &[u8]) -> io::Result<Vec<Node>> {
        let mut nodes = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| context(e, "read directory", dir))? {
            let entry = entry.map_err(|e| context(e, "read directory", dir))?;
            let file_name = entry.file_name();
            let name = file_name.as_bytes();
            let child_rel = join(rel, name);
            if (self.skip)(&String::from_utf8_lossy(&child_rel)) {
                continue;
            }
            let host = entry.path();
            let meta = fs::symlink_metadata(&host).map_err(|e| context(e, "stat", &host))?;
            let archive_name = if is_whiteout(&meta) {
                [WHITEOUT_PREFIX, name].concat()
            } else if name.starts_with(WHITEOUT_PREFIX) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "cannot put {} in a layer: names starting with \".wh.\" mark whiteouts",
                        host.display()
                    ),
                ));
            } else {
                name.to_vec()
            };
            nodes.push(Node {
                host,
                name: join(rel, &archive_name),
                rel: child_rel,
                meta,
            });
        }
        // Sibling archive names differ only in their last component, so this sorts by it.
        nodes.sort_unstable_by(|a, b| b.name.cmp(&a.name));
        Ok(nodes)
    }

    /// The mtime of `meta`, clamped.
    fn mtime(&self, meta: &Metadata) -> i64 {
        match self.clamp {
            Some(clamp) => meta.mtime().min(clamp),
            None => meta.mtime(),
        }
    }

    /// A header-only member at `path` with the owner, mode and mtime of `meta`.
    fn member<'m>(&self, path: &'m [u8], kind: u8, meta: &Metadata) -> Member<'m> {
        Member {
            path,
            kind,
            link: b"",
            size: 0,
            mode: meta.mode() & 0o7777,
            uid: meta.uid().into(),
            gid: meta.gid().into(),
            mtime: self.mtime(meta),
            device: (0, 0),
            xattrs: &[],
        }
    }

    /// Writes a member and counts it.
    fn write(&mut self, member: &Member<'_>) -> io::Result<()> {
        write_member(&mut self.out, member)?;
        self.entries += 1;
        Ok(())
    }

    /// Writes the entries for `node`; for a directory, returns its children to walk.
    fn emit(&mut self, node: &Node) -> io::Result<Option<Vec<Node>>> {
        let meta = &node.meta;
        let file_type = meta.file_type();
        if is_whiteout(meta) {
            let mut member = self.member(&node.name, b'0', meta);
            member.mode = WHITEOUT_MODE;
            self.write(&member)?;
            return Ok(None);
        }
        if file_type.is_socket() {
            tracing::debug!(path = %node.host.display(), "socket left out of the layer");
            return Ok(None);
        }
        let xattrs = read_xattrs(&node.host)?;
        if file_type.is_dir() {
            let dir_name = [&node.name[..], b"/"].concat();
            let mut member = self.member(&dir_name, b'5', meta);
            member.xattrs = &xattrs.carried;
            self.write(&member)?;
            if xattrs.opaque {
                let marker = [&dir_name[..], OPAQUE_MARKER].concat();
                self.write(&self.member(&marker, b'0', meta))?;
            }
            return self.children(&node.host, &node.rel).map(Some);
        }
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                let mut member = self.member(&node.name, b'1', meta);
                member.link = &first;
                self.write(&member)?;
                return Ok(None);
            }
            self.links.insert(key, node.name.clone());
        }
        let kind = if file_type.is_file() {
            b'0'
        } else if file_type.is_symlink() {
            b'2'
        } else if file_type.is_char_device() {
            b'3'
        } else if file_type.is_block_device() {
            b'4'
        } else if file_type.is_fifo() {
            b'6'
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} has an unknown file type", node.host.display()),
            ));
        };
        let mut member = self.member(&node.name, kind, meta);
        member.xattrs = &xattrs.carried;
        match kind {
            b'0' => {
                member.size = meta.len();
                // O_NOFOLLOW: what was a regular file at lstat time is never read through a symlink.
                let mut file = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&node.host)
                    .map_err(|e| context(e, "open", &node.host))?;
                self.write(&member)?;
                let copied = io::copy(&mut (&mut file).take(member.size), &mut self.out)
                    .map_err(|e| context(e, "read", &node.host))?;
                if copied != member.size {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} shrank while it was being archived", node.host.display()),
                    ));
                }
                pad(&mut self.out, member.size)?;
            }
            b'2' => {
                let target = fs::read_link(&node.host).map_err(|e| context(e, "read link", &node.host))?;
                member.link = target.as_os_str().as_bytes();
                self.write(&member)?;
            }
            _ => {
                if kind != b'6' {
                    member.device = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
                }
                self.write(&member)?;
            }
        }
        Ok(None)
    }
}

/// One archive member: what its header (and PAX extended header) say.
struct Member<'m> {
    /// The path, dirs ending with `/`.
    path: &'m [u8],
    /// The ustar typeflag.
    kind: u8,
    /// The symlink target or hard link target.
    link: &'m [u8],
    /// The size of the data following the header.
    size: u64,
    /// Permission, set-id and sticky bits.
    mode: u32,
    uid: u64,
    gid: u64,
    /// Seconds since the epoch.
    mtime: i64,
    /// Device major and minor numbers.
    device: (u32, u32),
    /// Extended attributes (name, value), sorted by name.
    xattrs: &'m [(Vec<u8>, Vec<u8>)],
}

/// Writes the header of `member`, preceded by a PAX extended header when something does not fit the ustar
/// fields. The caller writes the data, if any.
fn write_member(out: &mut dyn Write, member: &Member<'_>) -> io::Result<()> {
    let mut pax = Vec::new();
    let mut header = tar::Header::new_ustar();
    {
        let fields = header.as_old_mut();
        put_text(&mut fields.name, member.path, b"path", &mut pax);
        put_text(&mut fields.linkname, member.link, b"linkpath", &mut pax);
    }
    header.set_mode(member.mode);
    header.set_uid(put_number(member.uid, MAX_OCTAL_8, b"uid", &mut pax));
    header.set_gid(put_number(member.gid, MAX_OCTAL_8, b"gid", &mut pax));
    header.set_size(put_number(member.size, MAX_OCTAL_12, b"size", &mut pax));
    match u64::try_from(member.mtime) {
        Ok(mtime) if mtime <= MAX_OCTAL_12 => header.set_mtime(mtime),
        _ => {
            pax_record(&mut pax, b"mtime", member.mtime.to_string().as_bytes());
            header.set_mtime(0);
        }
    }
    for (name, value) in member.xattrs {
        pax_record(&mut pax, &[&b"SCHILY.xattr."[..], name].concat(), value);
    }
    header.set_entry_type(tar::EntryType::new(member.kind));
    // Linux device numbers (12-bit major, 20-bit minor) always fit the 7 octal digits.
    header.set_device_major(member.device.0)?;
    header.set_device_minor(member.device.1)?;
    header.set_cksum();
    if !pax.is_empty() {
        let mut extended = tar::Header::new_ustar();
        let base = member.path.strip_suffix(b"/").unwrap_or(member.path);
        let base = base.rsplit(|&b| b == b'/').next().unwrap_or(base);
        let name = [&b"PaxHeaders/"[..], base].concat();
        let fields = extended.as_old_mut();
        let len = name.len().min(fields.name.len());
        fields.name[..len].copy_from_slice(&name[..len]);
        extended.set_mode(0o644);
        extended.set_size(pax.len() as u64);
        extended.set_entry_type(tar::EntryType::XHeader);
        extended.set_cksum();
        out.write_all(extended.as_bytes())?;
        out.write_all(&pax)?;
        pad(out, pax.len() as u64)?;
    }
    out.write_all(header.as_bytes())
}

/// Puts `value` in a header text field when it fits; otherwise its first bytes, and the whole of it in
/// a PAX `key` record.
fn put_text(field: &mut [u8], value: &[u8], key: &[u8], pax: &mut Vec<u8>) {
    let len = value.len().min(field.len());
    field[..len].copy_from_slice(&value[..len]);
    if value.len() > field.len() {
        pax_record(pax, key, value);
    }
}

/// The header value for `value`: itself when it is at most `max`, else 0 with a PAX `key` record.
fn put_number(value: u64, max: u64, key: &[u8], pax: &mut Vec<u8>) -> u64 {
    if value <= max {
        value
    } else {
        pax_record(pax, key, value.to_string().as_bytes());
        0
    }
}

/// Appends the PAX record `LEN KEY=VALUE\n`, where LEN counts the whole record, its own digits included.
fn pax_record(pax: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    pax.extend_from_slice(len.to_string().as_bytes());
    pax.push(b' ');
    pax.extend_from_slice(key);
    pax.push(b'=');
    pax.extend_from_slice(value);
    pax.push(b'\n');
}

/// Writes the zeros completing a member's data of `len` bytes to a whole number of blocks.
fn pad(out: &mut dyn Write, len: u64) -> io::Result<()> {
    let rest = (len % BLOCK as u64) as usize;
    if rest == 0 {
        return Ok(());
    }
    out.write_all(&[0; BLOCK][rest..])
}

/// `parent/name`, or `name` at the top.
fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        [parent, b"/", name].concat()
    }
}

/// `error` with what was being done to which path.
fn context(error: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

/// The extended attributes of an upper-dir entry, as a layer sees them.
struct Xattrs {
    /// Those carried into the layer, sorted by name.
    carried: Vec<(Vec<u8>, Vec<u8>)>,
    /// `trusted.overlay.opaque` is `y`.
    opaque: bool,
}

/// Reads the extended attributes of `path` (not following a symlink). Refuses redirected directories and
/// metadata-only copies, which only make sense with the lower layers.
fn read_xattrs(path: &Path) -> io::Result<Xattrs> {
    let mut xattrs = Xattrs {
        carried: Vec::new(),
        opaque: false,
    };
    for name in list_xattrs(path).map_err(|e| context(e, "list extended attributes of", path))? {
        let Some(value) = get_xattr(path, &name).map_err(|e| context(e, "read extended attributes of", path))? else {
            continue;
        };
        if name.starts_with(OVERLAY_XATTR) {
            let feature = match name.as_slice() {
                OPAQUE_XATTR => {
                    xattrs.opaque = value == b"y";
                    continue;
                }
                REDIRECT_XATTR => "redirect_dir",
                METACOPY_XATTR => "metacopy",
                _ => continue,
            };
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{} was made by the overlayfs {feature} feature, which a layer cannot express; \
                     mount the build overlay with {feature}=off",
                    path.display()
                ),
            ));
        }
        if name.contains(&b'=') {
            tracing::warn!(path = %path.display(), xattr = %String::from_utf8_lossy(&name),
                "extended attribute with '=' in its name left out of the layer");
            continue;
        }
        xattrs.carried.push((name, value));
    }
    xattrs.carried.sort();
    Ok(xattrs)
}

/// `path` as a C string.
fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a nul byte"))
}

/// How many times a size query is retried when the attributes change between the query and the read.
const XATTR_RETRIES: usize = 8;

/// The names of the extended attributes of `path`, not following a symlink; none where the file system
/// has none.
fn list_xattrs(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let path = c_path(path)?;
    for _ in 0..XATTR_RETRIES {
        // SAFETY: `path` is NUL-terminated; a null buffer of size 0 only asks for the size.
        let size = unsafe { libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::EOPNOTSUPP) => Ok(Vec::new()),
                _ => Err(error),
            };
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buffer = vec![0u8; size as usize];
        // SAFETY: the buffer is writable for its whole length, which is passed.
        let got = unsafe { libc::llistxattr(path.as_ptr(), buffer.as_mut_ptr().cast(), buffer.len()) };
        if got < 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(error);
        }
        buffer.truncate(got as usize);
        let names = buffer.split(|&b| b == 0).filter(|n| !n.is_empty()).map(<[u8]>::to_vec);
        return Ok(names.collect());
    }
    Err(io::Error::other("extended attributes kept changing while being listed"))
}

/// The value of the extended attribute `name` of `path`, not following a symlink; `None` when it is not
/// set.
fn get_xattr(path: &Path, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let path = c_path(path)?;
    let name = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul in xattr name"))?;
    let absent = |error: &io::Error| matches!(error.raw_os_error(), Some(libc::ENODATA | libc::EOPNOTSUPP));
    for _ in 0..XATTR_RETRIES {
        // SAFETY: both strings are NUL-terminated; a null buffer of size 0 only asks for the size.
        let size = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            let error = io::Error::last_os_error();
            return if absent(&error) { Ok(None) } else { Err(error) };
        }
        let mut buffer = vec![0u8; size as usize];
        // SAFETY: the buffer is writable for its whole length, which is passed.
        let got = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buffer.as_mut_ptr().cast(), buffer.len()) };
        if got < 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return if absent(&error) { Ok(None) } else { Err(error) };
        }
        buffer.truncate(got as usize);
        return Ok(Some(buffer));
    }
    Err(io::Error::other("an extended attribute kept changing while being read"))
}

/// Whether the directory `path` is marked opaque.
fn is_opaque(path: &Path) -> bool {
    matches!(get_xattr(path, OPAQUE_XATTR), Ok(Some(value)) if value == b"y")
}

// ---------------------------------------------------------------------------------------------------------
// Reading through layers
// ---------------------------------------------------------------------------------------------------------

/// A path found in layered lower dirs.
#[derive(Debug, Clone)]
pub struct Found {
    /// The real host path of the entry in the layer that provides it.
    pub host_path: PathBuf,
    /// The path inside the image after resolving symlinks in parent components (and the last one when
    /// `follow`).
    pub resolved: String,
    /// Its metadata (symlink_metadata of host_path).
    pub metadata: Metadata,
}

/// One resolved component of a lookup.
struct Level {
    /// Its name (empty for the root).
    name: OsString,
    /// The entry that shows in the image.
    host: PathBuf,
    meta: Metadata,
    /// When it is a directory, the layer directories merged into it, top-most first.
    dirs: Vec<PathBuf>,
}

/// What a path is in an image made of overlay lower dirs (`layers`, top-most first), as seen through the
/// overlay.
///
/// Each component is looked up in the layers top-down, as overlayfs does: the top-most layer that has it
/// provides it; a whiteout stops the search (hiding it in every layer below); a non-directory hides
/// everything below it, and a directory merges with the directories of the same path below it down to
/// the first opaque one, whiteout or non-directory. `..` goes up one resolved component (never above the
/// root). Symlinks in parent components are followed within the image: an absolute target starts again
/// at the image root, and `..` cannot leave it; at most 40 symlinks are followed. The final component is
/// not followed (lstat semantics) unless `follow` is true or `path` ends with `/`, which also requires a
/// directory. `path` is taken from the image root whether it starts with `/` or not.
///
/// Returns None when the path does not exist (or a parent is not a directory, or there are too many
/// symlinks).
pub fn lookup(layers: &[PathBuf], path: &str, follow: bool) -> Option<Found> {
    let root = layers.first()?;
    let want_dir = path.ends_with('/') && !path.trim_matches('/').is_empty();
    let follow = follow || want_dir;
    let mut levels = vec![Level {
        name: OsString::new(),
        host: root.clone(),
        meta: fs::symlink_metadata(root).ok()?,
        dirs: layers.to_vec(),
    }];
    // The components still to resolve, the next one last.
    let mut pending: Vec<OsString> = components(path.as_bytes()).rev().collect();
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            if levels.len() > 1 {
                levels.pop();
            }
            continue;
        }
        let (host, meta, dirs) = find_in(&levels.last()?.dirs, &name)?;
        let last = pending.is_empty();
        if meta.file_type().is_symlink() && (follow || !last) {
            hops += 1;
            if hops > MAX_HOPS {
                return None;
            }
            let target = fs::read_link(&host).ok()?;
            let target = target.as_os_str().as_bytes();
            if target.is_empty() {
                return None;
            }
            if target.starts_with(b"/") {
                levels.truncate(1);
            }
            pending.extend(components(target).rev());
            continue;
        }
        if !last && !meta.is_dir() {
            // Even `file/..` needs `file` to be a directory.
            return None;
        }
        levels.push(Level { name, host, meta, dirs });
    }
    let found = levels.pop()?;
    if want_dir && !found.meta.is_dir() {
        return None;
    }
    let mut resolved = String::new();
    for level in levels
        .iter()
        .skip(1)
        .chain(std::iter::once(&found))
        .filter(|l| !l.name.is_empty())
    {
        resolved.push('/');
        resolved.push_str(&level.name.to_string_lossy());
    }
    if resolved.is_empty() {
        resolved.push('/');
    }
    Some(Found {
        host_path: found.host,
        resolved,
        metadata: found.meta,
    })
}

/// The non-empty components of `path` other than `.`.
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = OsString> + '_ {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsStr::from_bytes(c).to_os_string())
}

/// Looks `name` up in the merged directory made of `dirs` (top-most first): the entry that shows and,
/// when it is a directory, the layer directories merged into it.
fn find_in(dirs: &[PathBuf], name: &OsStr) -> Option<(PathBuf, Metadata, Vec<PathBuf>)> {
    let mut found: Option<(PathBuf, Metadata)> = None;
    let mut merged = Vec::new();
    for dir in dirs {
        let path = dir.join(name);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if is_whiteout(&meta) || !meta.is_dir() {
            // Nothing below shows through: hidden, or the end of the directory's merge.
            if found.is_none() && !is_whiteout(&meta) {
                found = Some((path, meta));
            }
            break;
        }
        let opaque = is_opaque(&path);
        merged.push(path.clone());
        found.get_or_insert((path, meta));
        if opaque {
            break;
        }
    }
    found.map(|(path, meta)| (path, meta, merged))
}

/// Reads a file of the image (e.g. "/etc/passwd") through [`lookup`] with follow=true. None when missing
/// or not a regular file (or unreadable).
pub fn read_file(layers: &[PathBuf], path: &str) -> Option<Vec<u8>> {
    let found = lookup(layers, path, true)?;
    if !found.metadata.is_file() {
        return None;
    }
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&found.host_path)
        .ok()?;
    let mut data = Vec::new();
    file.read_to_end(&mut data).ok()?;
    Some(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod, utimensat};
    use nix::sys::time::TimeSpec;
    use std::borrow::Cow;
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::os::unix::fs::{PermissionsExt, lchown, symlink};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A scratch directory removed on drop, pass or fail.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("berth-layer-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.0.join(rel)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn parent_dirs(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
    }

    fn file(path: &Path, data: &[u8], mode: u32) {
        parent_dirs(path);
        fs::write(path, data).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn node(path: &Path, kind: SFlag, major: u64, minor: u64) {
        parent_dirs(path);
        mknod(path, kind, Mode::from_bits_truncate(0o644), makedev(major, minor)).unwrap();
    }

    fn whiteout(path: &Path) {
        parent_dirs(path);
        mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).unwrap();
    }

    fn link(path: &Path, target: &str) {
        parent_dirs(path);
        symlink(target, path).unwrap();
    }

    fn set_xattr(path: &Path, name: &str, value: &[u8]) {
        let path = c_path(path).unwrap();
        let name = CString::new(name).unwrap();
        // SAFETY: NUL-terminated strings and a buffer of the length passed.
        let rc = unsafe { libc::lsetxattr(path.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
        assert_eq!(rc, 0, "lsetxattr {name:?}: {}", io::Error::last_os_error());
    }

    fn set_mtime(path: &Path, secs: i64) {
        let time = TimeSpec::new(secs, 0);
        utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &time,
            &time,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }

    /// A file capability granting cap_net_bind_service (VFS_CAP_REVISION_2, effective).
    const CAPABILITY: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    /// A binary value with the bytes PAX records must survive.
    const USER_VALUE: &[u8] = b"a=b\nc\0d";

    fn long_a() -> String {
        format!("long/{}/file", "a".repeat(120))
    }

    fn long_c() -> String {
        format!("long/{}/{}", "b".repeat(200), "c".repeat(200))
    }

    fn long_d() -> String {
        format!("hl/{}", "d".repeat(150))
    }

    fn long_target() -> String {
        "x/".repeat(80) + "y"
    }

    /// An upper dir as overlayfs leaves it after a step.
    fn upper_dir(scratch: &Scratch) -> PathBuf {
        let up = scratch.path("upper");
        let p = |rel: &str| up.join(rel);
        fs::create_dir(&up).unwrap();
        whiteout(&p("old-dir"));
        file(&p("bin/a"), b"shared", 0o755);
        fs::hard_link(p("bin/a"), p("bin/b")).unwrap();
        file(&p("bin/ping"), b"ping", 0o755);
        set_xattr(&p("bin/ping"), "security.capability", &CAPABILITY);
        set_xattr(&p("bin/ping"), "user.test", USER_VALUE);
        set_xattr(&p("bin/ping"), "trusted.overlay.origin", b"\x00\xfb");
        file(&p("bin/su"), b"su", 0o4755);
        file(&up.join(OsStr::from_bytes(b"bytes/\xff")), b"odd", 0o644);
        file(
            &p("data/blob"),
            &(0..1000u32).map(|i| i as u8).collect::<Vec<_>>(),
            0o600,
        );
        set_mtime(&p("data/blob"), 2_000_000_000);
        file(&p("data/old"), b"1969", 0o644);
        set_mtime(&p("data/old"), -100);
        file(&p("data/owner"), b"", 0o644);
        lchown(p("data/owner"), Some(3_000_000), Some(3_000_001)).unwrap();
        node(&p("dev-node/loop"), SFlag::S_IFBLK, 7, 0);
        node(&p("dev-node/null"), SFlag::S_IFCHR, 1, 3);
        file(&p("etc/app.conf"), b"x=1\n", 0o640);
        lchown(p("etc/app.conf"), Some(1000), Some(1001)).unwrap();
        set_mtime(&p("etc/app.conf"), 1000);
        file(&p("etc/hosts"), b"", 0o644);
        whiteout(&p("etc/removed"));
        // Overlayfs (5.8+) shares one whiteout inode between whiteouts: they are no hard links in a layer.
        whiteout(&p("etc/w1"));
        fs::hard_link(p("etc/w1"), p("etc/w2")).unwrap();
        file(&p(&long_d()), b"long link target", 0o644);
        parent_dirs(&p("hz/second"));
        fs::hard_link(p(&long_d()), p("hz/second")).unwrap();
        link(&p("lib"), "usr/lib");
        lchown(p("lib"), Some(7), Some(8)).unwrap();
        file(&p(&long_a()), b"long a", 0o644);
        file(&p(&long_c()), b"long c", 0o644);
        link(&p("long-link"), &long_target());
        fs::create_dir_all(p("proc/self")).unwrap();
        file(&p("proc/self/status"), b"", 0o644);
        node(&p("run/fifo"), SFlag::S_IFIFO, 0, 0);
        drop(std::os::unix::net::UnixListener::bind(p("run/sock")).unwrap());
        file(&p("var/cache/new"), b"new", 0o644);
        set_xattr(&p("var/cache"), "trusted.overlay.opaque", b"y");
        up
    }

    fn skip_stubs(path: &str) -> bool {
        path == "proc" || path == "etc/hosts"
    }

    /// One archive member as the `tar` crate reads it back.
    #[derive(Debug)]
    struct Item {
        path: Vec<u8>,
        kind: u8,
        link: Option<Vec<u8>>,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: i64,
        device: (u32, u32),
        pax: BTreeMap<Vec<u8>, Vec<u8>>,
        data: Vec<u8>,
    }

    /// PAX records, parsed by their lengths: the `tar` crate splits them at newlines, which breaks on
    /// binary xattr values.
    fn parse_pax(mut data: &[u8]) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut records = BTreeMap::new();
        while !data.is_empty() {
            let space = data.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&data[..space]).unwrap().parse().unwrap();
            assert_eq!(data[len - 1], b'\n');
            let record = &data[space + 1..len - 1];
            let equals = record.iter().position(|&b| b == b'=').unwrap();
            records.insert(record[..equals].to_vec(), record[equals + 1..].to_vec());
            data = &data[len..];
        }
        records
    }

    /// The members of `archive`, read with the `tar` crate in raw mode, PAX records applied here.
    fn read_back(archive: &[u8]) -> Vec<Item> {
        let mut items = Vec::new();
        let mut reader = tar::Archive::new(archive);
        let mut entries = reader.entries().unwrap().raw(true);
        let mut pax = BTreeMap::new();
        for entry in &mut entries {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            if header.entry_type() == tar::EntryType::XHeader {
                assert!(pax.is_empty(), "one extended header per member");
                pax = parse_pax(&data);
                continue;
            }
            let text = |key: &[u8], field: Option<Cow<'_, [u8]>>| pax.get(key).cloned().or(field.map(|f| f.to_vec()));
            let number = |key: &[u8], field: u64| -> i64 {
                match pax.get(key) {
                    Some(v) => std::str::from_utf8(v).unwrap().parse().unwrap(),
                    None => field as i64,
                }
            };
            let kind = header.entry_type().as_byte();
            items.push(Item {
                path: text(b"path", Some(header.path_bytes())).unwrap(),
                kind,
                link: text(b"linkpath", header.link_name_bytes()).filter(|l| !l.is_empty()),
                mode: header.mode().unwrap(),
                uid: number(b"uid", header.uid().unwrap()) as u64,
                gid: number(b"gid", header.gid().unwrap()) as u64,
                mtime: number(b"mtime", header.mtime().unwrap()),
                device: (
                    header.device_major().unwrap().unwrap_or(0),
                    header.device_minor().unwrap().unwrap_or(0),
                ),
                pax: std::mem::take(&mut pax),
                data,
            });
        }
        assert!(pax.is_empty());
        // The crate's own reading applies long paths and link targets the same way.
        let mut reader = tar::Archive::new(archive);
        let cooked: Vec<(Vec<u8>, Option<Vec<u8>>)> = reader
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path_bytes().to_vec(),
                    e.link_name_bytes().map(|l| l.to_vec()).filter(|l| !l.is_empty()),
                )
            })
            .collect();
        let ours: Vec<(Vec<u8>, Option<Vec<u8>>)> = items.iter().map(|i| (i.path.clone(), i.link.clone())).collect();
        assert_eq!(cooked, ours);
        items
    }

    fn diff(upper: &Path, clamp: Option<u64>) -> (u64, Vec<u8>) {
        let mut out = Vec::new();
        let count = write_diff(upper, &mut out, &skip_stubs, clamp).unwrap();
        (count, out)
    }

    #[test]
    fn write_diff_turns_an_upper_dir_into_a_layer() {
        let scratch = Scratch::new("diff");
        let up = upper_dir(&scratch);
        let asked = RefCell::new(Vec::new());
        let skip = |path: &str| {
            asked.borrow_mut().push(path.to_string());
            skip_stubs(path)
        };
        let mut archive = Vec::new();
        let count = write_diff(&up, &mut archive, &skip, None).unwrap();
        assert!(asked.borrow().iter().any(|p| p == "proc"));
        assert!(
            !asked.borrow().iter().any(|p| p.starts_with("proc/")),
            "a skipped dir's subtree is not walked"
        );
        assert!(
            asked.borrow().iter().any(|p| p == "etc/removed"),
            "whiteouts are asked by the name they hide"
        );

        let items = read_back(&archive);
        let listing: Vec<(String, char)> = items
            .iter()
            .map(|i| (String::from_utf8_lossy(&i.path).into_owned(), i.kind as char))
            .collect();
        let want: Vec<(String, char)> = [
            (".wh.old-dir", '0'),
            ("bin/", '5'),
            ("bin/a", '0'),
            ("bin/b", '1'),
            ("bin/ping", '0'),
            ("bin/su", '0'),
            ("bytes/", '5'),
            ("bytes/\u{fffd}", '0'),
            ("data/", '5'),
            ("data/blob", '0'),
            ("data/old", '0'),
            ("data/owner", '0'),
            ("dev-node/", '5'),
            ("dev-node/loop", '4'),
            ("dev-node/null", '3'),
            ("etc/", '5'),
            ("etc/.wh.removed", '0'),
            ("etc/.wh.w1", '0'),
            ("etc/.wh.w2", '0'),
            ("etc/app.conf", '0'),
            ("hl/", '5'),
            (&long_d(), '0'),
            ("hz/", '5'),
            ("hz/second", '1'),
            ("lib", '2'),
            ("long/", '5'),
            (&format!("long/{}/", "a".repeat(120)), '5'),
            (&long_a(), '0'),
            (&format!("long/{}/", "b".repeat(200)), '5'),
            (&long_c(), '0'),
            ("long-link", '2'),
            ("run/", '5'),
            ("run/fifo", '6'),
            ("var/", '5'),
            ("var/cache/", '5'),
            ("var/cache/.wh..wh..opq", '0'),
            ("var/cache/new", '0'),
        ]
        .iter()
        .map(|(p, k)| (p.to_string(), *k))
        .collect();
        assert_eq!(listing, want);
        assert_eq!(count, want.len() as u64);

        let item = |path: &str| items.iter().find(|i| i.path == path.as_bytes()).unwrap();
        assert_eq!(items[7].path, b"bytes/\xff");
        let conf = item("etc/app.conf");
        assert_eq!((conf.mode, conf.uid, conf.gid, conf.mtime), (0o640, 1000, 1001, 1000));
        assert_eq!(conf.data, b"x=1\n");
        assert!(conf.pax.is_empty(), "{:?}", conf.pax);
        assert_eq!(item("bin/su").mode, 0o4755);
        assert_eq!(
            item("data/blob").data,
            (0..1000u32).map(|i| i as u8).collect::<Vec<_>>()
        );
        assert_eq!(item("data/old").mtime, -100);
        assert_eq!(item("data/old").pax.get(&b"mtime"[..]).unwrap(), b"-100");
        let owner = item("data/owner");
        assert_eq!((owner.uid, owner.gid), (3_000_000, 3_000_001));
        assert_eq!(item("dev-node/null").device, (1, 3));
        assert_eq!(item("dev-node/loop").device, (7, 0));
        assert_eq!(item("bin/b").link.as_deref(), Some(&b"bin/a"[..]));
        assert_eq!(item("hz/second").link.as_deref(), Some(long_d().as_bytes()));
        assert!(item("hz/second").data.is_empty());
        let lib = item("lib");
        assert_eq!(lib.link.as_deref(), Some(&b"usr/lib"[..]));
        assert_eq!((lib.uid, lib.gid), (7, 8));
        assert_eq!(item("long-link").link.as_deref(), Some(long_target().as_bytes()));
        assert_eq!(item(&long_a()).data, b"long a");
        assert_eq!(item(&long_c()).data, b"long c");
        for marker in ["etc/.wh.removed", "etc/.wh.w1", ".wh.old-dir", "var/cache/.wh..wh..opq"] {
            let marker = item(marker);
            assert!(marker.data.is_empty() && marker.pax.is_empty() && marker.link.is_none());
        }
        // Docker's modes (tests/fixtures/build/shellform/docker-*-layers.txt): 0600 for a whiteout, the
        // directory's own for an opaque marker.
        assert_eq!(item("etc/.wh.removed").mode, 0o600);
        let (cache, opaque) = (item("var/cache/"), item("var/cache/.wh..wh..opq"));
        assert_eq!(
            (opaque.mode, opaque.uid, opaque.gid),
            (cache.mode, cache.uid, cache.gid)
        );
        let ping = item("bin/ping").pax.clone();
        let keys: Vec<&[u8]> = ping.keys().map(Vec::as_slice).collect();
        assert_eq!(
            keys,
            [&b"SCHILY.xattr.security.capability"[..], b"SCHILY.xattr.user.test"]
        );
        assert_eq!(ping[&b"SCHILY.xattr.security.capability"[..]], CAPABILITY);
        assert_eq!(ping[&b"SCHILY.xattr.user.test"[..]], USER_VALUE);
        assert!(item("var/cache/").pax.is_empty(), "overlay xattrs are dropped");

        // Deterministic, byte for byte.
        let (again_count, again) = diff(&up, None);
        assert_eq!((again_count, &again), (count, &archive));
        // Ends with two zero blocks, whole blocks only.
        assert_eq!(archive.len() % BLOCK, 0);
        assert!(archive[archive.len() - 2 * BLOCK..].iter().all(|&b| b == 0));
    }

    #[test]
    fn write_diff_clamps_mtimes() {
        let scratch = Scratch::new("clamp");
        let up = upper_dir(&scratch);
        let clamp = 1_500_000_000;
        let (_, archive) = diff(&up, Some(clamp));
        let items = read_back(&archive);
        assert!(items.iter().all(|i| i.mtime <= clamp as i64));
        let mtime = |path: &str| items.iter().find(|i| i.path == path.as_bytes()).unwrap().mtime;
        assert_eq!(mtime("data/blob"), clamp as i64);
        assert_eq!(mtime("bin/"), clamp as i64, "a directory made now is clamped");
        assert_eq!(mtime("etc/app.conf"), 1000);
        assert_eq!(mtime("data/old"), -100);
    }

    #[test]
    fn a_layer_round_trips_through_the_unpacker() {
        let scratch = Scratch::new("unpack");
        let up = upper_dir(&scratch);
        let (_, archive) = diff(&up, None);
        let target = scratch.path("unpacked");
        fs::create_dir(&target).unwrap();
        crate::image::unpack::unpack_layer(&archive[..], &target, "test").unwrap();
        let t = |rel: &str| target.join(rel);
        let meta = |rel: &str| fs::symlink_metadata(t(rel)).unwrap();

        for gone in ["etc/removed", "etc/w1", "etc/w2", "old-dir"] {
            assert!(is_whiteout(&meta(gone)), "{gone} is a whiteout again");
        }
        assert!(!t("etc/.wh.removed").exists());
        assert!(!t("etc/hosts").exists() && !t("proc").exists() && !t("run/sock").exists());
        assert!(is_opaque(&t("var/cache")));
        assert!(!t("var/cache/.wh..wh..opq").exists());
        assert_eq!(fs::read(t("var/cache/new")).unwrap(), b"new");
        assert_eq!(meta("bin/a").ino(), meta("bin/b").ino());
        assert_eq!(meta(&long_d()).ino(), meta("hz/second").ino());
        assert_eq!(fs::read_link(t("lib")).unwrap(), Path::new("usr/lib"));
        assert_eq!(fs::read_link(t("long-link")).unwrap(), Path::new(&long_target()));
        assert_eq!(fs::read(t(&long_c())).unwrap(), b"long c");
        let conf = meta("etc/app.conf");
        assert_eq!(
            (conf.mode() & 0o7777, conf.uid(), conf.gid(), conf.mtime()),
            (0o640, 1000, 1001, 1000)
        );
        assert_eq!(meta("bin/su").mode() & 0o7777, 0o4755);
        assert_eq!(meta("data/old").mtime(), -100);
        assert_eq!(
            (meta("data/owner").uid(), meta("data/owner").gid()),
            (3_000_000, 3_000_001)
        );
        assert_eq!(meta("dev-node/null").rdev(), makedev(1, 3));
        assert!(meta("run/fifo").file_type().is_fifo());
        assert_eq!(
            get_xattr(&t("bin/ping"), b"security.capability").unwrap().unwrap(),
            CAPABILITY
        );
        assert_eq!(get_xattr(&t("bin/ping"), b"user.test").unwrap().unwrap(), USER_VALUE);
        assert_eq!(get_xattr(&t("bin/ping"), b"trusted.overlay.origin").unwrap(), None);

        // The unpacked layer is an upper dir of its own, and describes the same changes.
        let (_, again) = diff(&target, None);
        assert!(again == archive, "the unpacked layer gives the same archive");
    }

    #[test]
    fn write_diff_refuses_what_a_layer_cannot_express() {
        let scratch = Scratch::new("refuse");
        let up = scratch.path("reserved");
        file(&up.join("dir/.wh.name"), b"", 0o644);
        let error = write_diff(&up, &mut Vec::new(), &|_| false, None).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("names starting with \".wh.\" mark whiteouts"),
            "{error}"
        );
        // Unless skipped.
        assert_eq!(
            write_diff(&up, &mut Vec::new(), &|p| p == "dir/.wh.name", None).unwrap(),
            1
        );

        let up = scratch.path("redirect");
        fs::create_dir_all(up.join("moved")).unwrap();
        set_xattr(&up.join("moved"), "trusted.overlay.redirect", b"/old");
        let error = write_diff(&up, &mut Vec::new(), &|_| false, None).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::Unsupported);
        assert!(error.to_string().contains("redirect_dir=off"), "{error}");

        let up = scratch.path("metacopy");
        file(&up.join("f"), b"", 0o644);
        set_xattr(&up.join("f"), "trusted.overlay.metacopy", b"");
        let error = write_diff(&up, &mut Vec::new(), &|_| false, None).unwrap_err();
        assert!(error.to_string().contains("metacopy=off"), "{error}");

        let empty = scratch.path("empty");
        fs::create_dir(&empty).unwrap();
        let mut out = Vec::new();
        assert_eq!(write_diff(&empty, &mut out, &|_| false, None).unwrap(), 0);
        assert_eq!(out, vec![0; 2 * BLOCK]);
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        for (len, key) in [
            (5usize, 1usize),
            (93, 1),
            (94, 1),
            (95, 1),
            (994, 1),
            (995, 1),
            (996, 1),
        ] {
            let mut pax = Vec::new();
            let value = vec![b'v'; len];
            pax_record(&mut pax, &b"k".repeat(key), &value);
            let space = pax.iter().position(|&b| b == b' ').unwrap();
            let declared: usize = std::str::from_utf8(&pax[..space]).unwrap().parse().unwrap();
            assert_eq!(declared, pax.len(), "value of {len} bytes");
        }
    }

    /// Three layers, top-most first.
    fn image(scratch: &Scratch) -> Vec<PathBuf> {
        let layers: Vec<PathBuf> = ["l0", "l1", "l2"].iter().map(|l| scratch.path(l)).collect();
        for layer in &layers {
            fs::create_dir(layer).unwrap();
        }
        let [top, mid, low] = [&layers[0], &layers[1], &layers[2]];
        file(&low.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n", 0o644);
        file(&low.join("etc/group"), b"root:x:0:\n", 0o644);
        file(&low.join("usr/lib/libc.so"), b"libc", 0o755);
        file(&low.join("run/x"), b"old", 0o644);
        fs::create_dir_all(low.join("run/lock")).unwrap();
        link(&low.join("var/run"), "/run");
        link(&low.join("var/lock"), "../run/lock");
        link(&low.join("lib"), "/usr/lib");
        file(&low.join("opt/theirs"), b"t", 0o644);
        file(&low.join("data/file"), b"d", 0o644);
        file(&low.join("srv/data"), b"s", 0o644);
        file(&low.join("mix/b"), b"b", 0o644);

        whiteout(&mid.join("etc/group"));
        file(&mid.join("opt/mine"), b"m", 0o644);
        set_xattr(&mid.join("opt"), "trusted.overlay.opaque", b"y");
        whiteout(&mid.join("data"));
        file(&mid.join("mix"), b"not a dir", 0o644);

        file(&top.join("etc/hostname"), b"box\n", 0o644);
        file(&top.join("run/x"), b"new", 0o644);
        link(&top.join("esc"), "../../../../../../etc/passwd");
        link(&top.join("abs-esc"), "/../../etc/../../etc/passwd");
        link(&top.join("loop1"), "loop2");
        link(&top.join("loop2"), "loop1");
        link(&top.join("dangling"), "/nowhere");
        file(&top.join("srv"), b"a file now", 0o644);
        file(&top.join("mix/a"), b"a", 0o644);
        layers
    }

    #[test]
    fn lookup_sees_what_the_overlay_shows() {
        let scratch = Scratch::new("lookup");
        let layers = image(&scratch);
        let found = |path: &str, follow: bool| lookup(&layers, path, follow);
        let resolved = |path: &str, follow: bool| found(path, follow).map(|f| f.resolved);
        let from = |path: &str| {
            let f = found(path, false).unwrap();
            let layer = layers.iter().position(|l| f.host_path.starts_with(l)).unwrap();
            (layer, f.host_path.strip_prefix(&layers[layer]).unwrap().to_path_buf())
        };

        assert_eq!(
            read_file(&layers, "/etc/passwd").unwrap(),
            b"root:x:0:0::/root:/bin/sh\n"
        );
        assert_eq!(from("/etc/passwd"), (2, "etc/passwd".into()));
        assert_eq!(from("/etc"), (0, "etc".into()));
        assert_eq!(read_file(&layers, "/etc/hostname").unwrap(), b"box\n");
        // Whiteouts.
        assert!(found("/etc/group", false).is_none());
        assert!(found("/data", false).is_none() && found("/data/file", false).is_none());
        // An opaque dir shows its own content only.
        assert_eq!(read_file(&layers, "/opt/mine").unwrap(), b"m");
        assert!(found("/opt/theirs", false).is_none());
        // Upper layers win; a non-directory ends a directory's merge.
        assert_eq!(read_file(&layers, "/run/x").unwrap(), b"new");
        assert!(found("/srv/data", false).is_none());
        assert!(found("/srv", false).unwrap().metadata.is_file());
        assert_eq!(read_file(&layers, "/mix/a").unwrap(), b"a");
        assert!(found("/mix/b", false).is_none());

        // Symlinks in parents, followed inside the image.
        assert_eq!(resolved("/var/run/x", false).unwrap(), "/run/x");
        assert_eq!(from("/var/run/x"), (0, "run/x".into()));
        assert_eq!(resolved("/var/lock/", false).unwrap(), "/run/lock");
        assert_eq!(resolved("/lib/libc.so", false).unwrap(), "/usr/lib/libc.so");
        assert_eq!(read_file(&layers, "/lib/libc.so").unwrap(), b"libc");
        // The last component: lstat, or followed.
        let var_run = found("/var/run", false).unwrap();
        assert!(var_run.metadata.file_type().is_symlink());
        assert_eq!(var_run.resolved, "/var/run");
        let run = found("/var/run", true).unwrap();
        assert!(run.metadata.is_dir());
        assert_eq!(run.resolved, "/run");
        // Never above the root.
        assert_eq!(resolved("/esc", true).unwrap(), "/etc/passwd");
        assert_eq!(read_file(&layers, "/esc").unwrap(), b"root:x:0:0::/root:/bin/sh\n");
        assert_eq!(resolved("/abs-esc", true).unwrap(), "/etc/passwd");
        assert_eq!(resolved("/../../etc/passwd", false).unwrap(), "/etc/passwd");
        assert_eq!(resolved("etc/./../etc//passwd", false).unwrap(), "/etc/passwd");
        // Loops, dangling links, missing paths, files as directories.
        assert!(found("/loop1", true).is_none());
        assert!(found("/loop1/x", false).is_none());
        assert!(found("/loop1", false).unwrap().metadata.file_type().is_symlink());
        assert!(found("/dangling", true).is_none());
        assert!(found("/dangling", false).is_some());
        assert!(found("/nope", false).is_none());
        assert!(found("/etc/nope", false).is_none());
        assert!(found("/etc/passwd/x", false).is_none());
        assert!(found("/etc/passwd/..", false).is_none());
        assert!(found("/etc/passwd/", false).is_none());
        // The root.
        for root in ["/", "", "/..", "/etc/.."] {
            let f = found(root, false).unwrap();
            assert_eq!(
                (f.resolved.as_str(), f.host_path.as_path()),
                ("/", layers[0].as_path()),
                "{root:?}"
            );
            assert!(f.metadata.is_dir());
        }
        assert!(lookup(&[], "/", false).is_none());
        // read_file wants a regular file.
        assert!(read_file(&layers, "/etc").is_none());
        assert!(read_file(&layers, "/etc/group").is_none());
        assert!(read_file(&layers, "/dangling").is_none());
    }
}
