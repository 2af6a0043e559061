//! `COPY` and `ADD` without a container: the sources are resolved in a root (the build context,
//! or a stage's or image's file system), turned into the entries the layer will hold, hashed for
//! the cache key, and written as a layer tar.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::ignore::{Ignore, glob_match};

/// Where sources are looked up.
pub struct Root<'a> {
    /// The directory, on the host (or in the calling thread's mount namespace).
    pub dir: &'a Path,
    /// `.dockerignore` rules (empty for `--from`).
    pub ignore: &'a Ignore,
}

/// What one entry of the layer holds.
#[derive(Debug, Clone)]
pub enum Content {
    /// A directory.
    Dir,
    /// A regular file, read from the host.
    File(PathBuf),
    /// A regular file given in memory (heredocs, downloads).
    Bytes(Vec<u8>),
    /// A symbolic link with its target.
    Symlink(String),
    /// A local archive `ADD` extracts under `path` (a directory).
    Archive(PathBuf),
}

/// One entry of the layer.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Absolute path in the image, without a trailing `/`.
    pub path: String,
    /// What it holds.
    pub content: Content,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, in seconds.
    pub mtime: u64,
}

/// A source matched in a root: its path relative to the root and its metadata.
#[derive(Debug, Clone)]
pub struct Matched {
    /// Relative path (`.` for the root itself).
    pub rel: String,
    /// Host path.
    pub host: PathBuf,
    /// Its `lstat`.
    pub meta: std::fs::Metadata,
}

/// Whether a source has glob characters.
pub fn has_wildcards(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Cleans a source path relative to a root: no leading `/`, `.` and empty parts dropped, `..`
/// never above the root. The root itself is `.`.
pub fn clean_rel(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() { ".".into() } else { parts.join("/") }
}

/// Cleans an absolute image path (`/a/./b/../c` → `/a/c`).
pub fn clean_abs(path: &str) -> String {
    match clean_rel(path).as_str() {
        "." => "/".into(),
        rel => format!("/{rel}"),
    }
}

/// Finds the sources a `COPY` pattern names. Wildcards match per path component; excluded paths
/// are left out; a path that resolves outside the root (through a symlinked parent) is an error.
pub fn resolve(root: &Root<'_>, pattern: &str) -> Result<Vec<Matched>, String> {
    let rel = clean_rel(pattern);
    let canonical_root = root
        .dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", root.dir.display()))?;
    let mut found = Vec::new();
    if !has_wildcards(&rel) {
        if rel != "." && root.ignore.excludes(&rel) {
            return Err(format!(
                "{pattern}: not found in the build context (excluded by .dockerignore)"
            ));
        }
        let host = if rel == "." {
            root.dir.to_path_buf()
        } else {
            root.dir.join(&rel)
        };
        let meta =
            std::fs::symlink_metadata(&host).map_err(|_| format!("{pattern}: not found in the build context"))?;
        found.push(Matched { rel, host, meta });
    } else {
        let mut candidates = vec![(String::from("."), root.dir.to_path_buf())];
        for component in rel.split('/') {
            let mut next = Vec::new();
            for (rel, host) in &candidates {
                let join = |name: &str| {
                    if rel == "." {
                        name.to_string()
                    } else {
                        format!("{rel}/{name}")
                    }
                };
                if has_wildcards(component) {
                    let Ok(dir) = std::fs::read_dir(host) else { continue };
                    let mut names: Vec<String> = dir
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    names.sort();
                    for name in names {
                        if glob_match(component, &name).map_err(|e| format!("{pattern}: {e}"))? {
                            next.push((join(&name), host.join(&name)));
                        }
                    }
                } else if host.join(component).symlink_metadata().is_ok() {
                    next.push((join(component), host.join(component)));
                }
            }
            candidates = next;
        }
        for (rel, host) in candidates {
            if root.ignore.excludes(&rel) {
                continue;
            }
            if let Ok(meta) = std::fs::symlink_metadata(&host) {
                found.push(Matched { rel, host, meta });
            }
        }
        if found.is_empty() {
            return Err(format!("{pattern}: no source files were specified (nothing matches)"));
        }
    }
    for m in found.iter().filter(|m| m.rel != ".") {
        let parent = m.host.parent().unwrap_or(root.dir);
        let real = parent.canonicalize().map_err(|e| format!("{}: {e}", m.rel))?;
        if !real.starts_with(&canonical_root) {
            return Err(format!("{}: resolves outside the build context", m.rel));
        }
    }
    Ok(found)
}

/// Ownership and mode overrides of `--chown`/`--chmod`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Owner {
    /// `--chown` uid and gid.
    pub ids: Option<(u64, u64)>,
    /// `--chmod` bits.
    pub mode: Option<u32>,
}

impl Owner {
    /// A new entry made by the builder itself (a directory, an archive, a download, a here-document):
    /// owned like `--chown` (root without), with `mode` as given and the current time.
    pub fn entry(&self, path: String, content: Content, mode: u32) -> Entry {
        let (uid, gid) = self.ids.unwrap_or((0, 0));
        Entry {
            path,
            content,
            mode,
            uid,
            gid,
            mtime: now_secs(),
        }
    }

    fn apply(&self, mut e: Entry) -> Entry {
        if let Some((u, g)) = self.ids {
            e.uid = u;
            e.gid = g;
        }
        if let Some(m) = self.mode
            && !matches!(e.content, Content::Symlink(_))
        {
            e.mode = m;
        }
        e
    }
}

/// The entries for one matched source copied to `target` (the file's path, or the directory
/// that receives a directory's contents), walking directories with the root's ignore rules.
pub fn entries_for(
    root: &Root<'_>,
    m: &Matched,
    target: &str,
    owner: Owner,
    out: &mut Vec<Entry>,
) -> std::io::Result<()> {
    let entry = |path: String, meta: &std::fs::Metadata, content: Content| Entry {
        path,
        content,
        mode: meta.permissions().mode() & 0o7777,
        uid: 0,
        gid: 0,
        mtime: meta.mtime().max(0) as u64,
    };
    let ft = m.meta.file_type();
    if ft.is_dir() {
        out.push(owner.apply(entry(target.to_string(), &m.meta, Content::Dir)));
        walk(root, &m.rel, &m.host, target, owner, out)?;
    } else if ft.is_symlink() {
        let link = std::fs::read_link(&m.host)?;
        out.push(owner.apply(entry(
            target.to_string(),
            &m.meta,
            Content::Symlink(link.to_string_lossy().into_owned()),
        )));
    } else if ft.is_file() {
        out.push(owner.apply(entry(target.to_string(), &m.meta, Content::File(m.host.clone()))));
    }
    Ok(())
}

fn walk(
    root: &Root<'_>,
    rel: &str,
    host: &Path,
    target: &str,
    owner: Owner,
    out: &mut Vec<Entry>,
) -> std::io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(host)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let name = name.to_string_lossy().into_owned();
        let child_rel = if rel == "." {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let child_host = host.join(&name);
        let meta = std::fs::symlink_metadata(&child_host)?;
        let excluded = root.ignore.excludes(&child_rel);
        if excluded && !(meta.is_dir() && root.ignore.may_include_below(&child_rel)) {
            continue;
        }
        let child_target = format!("{}/{name}", target.trim_end_matches('/'));
        let m = Matched {
            rel: child_rel.clone(),
            host: child_host.clone(),
            meta: meta.clone(),
        };
        if excluded {
            // Walked only for the exceptions below it; the directory itself comes with them.
            let mut below = Vec::new();
            walk(root, &child_rel, &child_host, &child_target, owner, &mut below)?;
            if !below.is_empty() {
                out.push(owner.apply(Entry {
                    path: child_target,
                    content: Content::Dir,
                    mode: meta.permissions().mode() & 0o7777,
                    uid: 0,
                    gid: 0,
                    mtime: meta.mtime().max(0) as u64,
                }));
                out.extend(below);
            }
            continue;
        }
        entries_for(root, &m, &child_target, owner, out)?;
    }
    Ok(())
}

/// Adds entries for the parent directories of every entry that neither exist in the image nor are
/// entries themselves: mode 0755, owned like `--chown` (as Docker does).
pub fn add_parents(entries: &mut Vec<Entry>, exists: &dyn Fn(&str) -> bool, owner: Owner) {
    let have: BTreeSet<String> = entries.iter().map(|e| e.path.clone()).collect();
    let mut wanted = BTreeSet::new();
    for e in entries.iter() {
        let mut p = e.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if parent.is_empty() || have.contains(parent) || wanted.contains(parent) || exists(parent) {
                break;
            }
            wanted.insert(parent.to_string());
            p = parent;
        }
    }
    let mut parents: Vec<Entry> = wanted
        .into_iter()
        .map(|path| owner.entry(path, Content::Dir, 0o755))
        .collect();
    parents.append(entries);
    *entries = parents;
}

/// Hashes the entries as the cache sees them: paths, kinds, modes, owners and contents; not times.
pub fn hash(entries: &[Entry]) -> std::io::Result<String> {
    let mut h = Sha256::new();
    for e in entries {
        h.update(format!("{}\0{:o}\0{}\0{}\0", e.path, e.mode, e.uid, e.gid));
        match &e.content {
            Content::Dir => h.update(b"d"),
            Content::Symlink(t) => h.update(format!("l{t}")),
            Content::Bytes(b) => {
                h.update(b"f");
                h.update(b);
            }
            Content::File(p) | Content::Archive(p) => {
                h.update(if matches!(e.content, Content::File(_)) {
                    b"f"
                } else {
                    b"a"
                });
                let mut f = File::open(p)?;
                std::io::copy(&mut f, &mut HashWriter(&mut h))?;
            }
        }
        h.update(b"\n");
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether a file starts like an archive `ADD` extracts (tar, gzip or zstd).
pub fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 512];
    let Ok(mut f) = File::open(path) else { return false };
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let head = &head[..n];
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.get(257..262) == Some(b"ustar")
}

/// Writes the entries as a layer tar.
pub fn write_tar(entries: &[Entry], out: impl Write) -> std::io::Result<()> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    for e in entries {
        let name = e.path.trim_start_matches('/');
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        match &e.content {
            Content::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{name}/"), std::io::empty())?;
            }
            Content::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, name, t)?;
            }
            Content::Bytes(bytes) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(bytes.len() as u64);
                b.append_data(&mut h, name, bytes.as_slice())?;
            }
            Content::File(p) => {
                let f = File::open(p)?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(f.metadata()?.len());
                b.append_data(&mut h, name, f)?;
            }
            Content::Archive(p) => extract_into(&mut b, p, name, e)?,
        }
    }
    b.finish()
}

/// Copies an archive's entries under `dir`, keeping their metadata (owner from `--chown`).
fn extract_into<W: Write>(b: &mut tar::Builder<W>, archive: &Path, dir: &str, e: &Entry) -> std::io::Result<()> {
    let f = std::io::BufReader::new(File::open(archive)?);
    let (_, reader) = crate::image::unpack::decompress(f)?;
    let mut a = tar::Archive::new(reader);
    for item in a.entries()? {
        let mut item = item?;
        let path = item.path()?.to_string_lossy().into_owned();
        let rel = clean_rel(&path);
        if rel == "." {
            continue;
        }
        let mut h = item.header().clone();
        if e.uid != 0 || e.gid != 0 {
            h.set_uid(e.uid);
            h.set_gid(e.gid);
        }
        let target = format!("{dir}/{rel}");
        match h.entry_type() {
            tar::EntryType::Link => {
                let link = item
                    .link_name()?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                b.append_link(&mut h, &target, format!("{dir}/{}", clean_rel(&link)))?;
            }
            tar::EntryType::Symlink => {
                let link = item
                    .link_name()?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                b.append_link(&mut h, &target, link)?;
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            _ => b.append_data(&mut h, &target, &mut item)?,
        }
    }
    Ok(())
}

/// Now, in seconds since the epoch: the modification time of entries the builder makes.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_clean_inside_the_root() {
        assert_eq!(clean_rel("/a/./b/../c"), "a/c");
        assert_eq!(clean_rel("../../x"), "x");
        assert_eq!(clean_rel("."), ".");
        assert_eq!(clean_abs("a//b/"), "/a/b");
        assert_eq!(clean_abs("/.."), "/");
    }

    #[test]
    fn parents_are_added_once_and_only_when_missing() {
        let mut e = vec![Entry {
            path: "/opt/app/conf/x".into(),
            content: Content::Bytes(b"x".to_vec()),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
        }];
        add_parents(
            &mut e,
            &|p| p == "/opt",
            Owner {
                ids: Some((7, 8)),
                mode: None,
            },
        );
        let paths: Vec<_> = e.iter().map(|e| (e.path.as_str(), e.uid)).collect();
        assert_eq!(
            paths,
            vec![("/opt/app", 7), ("/opt/app/conf", 7), ("/opt/app/conf/x", 0)]
        );
    }
}
