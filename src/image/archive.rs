//! Image archives: `load` reads Docker's `docker save` format (`manifest.json` with configs and layer
//! tars, old and new layouts) and the OCI image layout (`index.json` and `blobs/`), as a tar (optionally
//! compressed) or a directory; `save` writes both at once, as Docker 25 does, so either tool can load it.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::oci::{self, Descriptor, ImageConfig, Index, Manifest, Platform};
use super::reference::{Digest, Reference};
use super::store::{ImageRecord, Store, Unpack};
use super::unpack;
use super::{ImageError, Progress, Result};

/// One image a load added.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The image id.
    pub id: Digest,
    /// The tags it got.
    pub tags: Vec<Reference>,
}

/// An entry of Docker's `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// An unpacked archive: a directory, plus the symlinks of the tar it came from (kept as a map, never
/// created on disk, so reading through them cannot leave the directory).
struct Source {
    dir: PathBuf,
    links: HashMap<PathBuf, PathBuf>,
    label: String,
    /// Removed on drop when the archive was a tar extracted by berth.
    owned: bool,
}

impl Drop for Source {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Source {
    fn bad(&self, reason: impl Into<String>) -> ImageError {
        ImageError::Archive {
            path: self.label.clone(),
            reason: reason.into(),
        }
    }

    /// Resolves an archive member name (following archive symlinks) to a file in the directory.
    fn resolve(&self, name: &str) -> Result<PathBuf> {
        let mut rel = clean(name).ok_or_else(|| self.bad(format!("member {name:?} leaves the archive")))?;
        for _ in 0..16 {
            match self.links.get(&rel) {
                Some(target) => {
                    let base = rel.parent().unwrap_or(Path::new("")).join(target);
                    rel = clean(&base.to_string_lossy())
                        .ok_or_else(|| self.bad(format!("link {name:?} leaves the archive")))?;
                }
                None => {
                    let p = self.dir.join(&rel);
                    // Directories in a tar archive are created by berth; no symlink exists on disk.
                    return if p.is_file() {
                        Ok(p)
                    } else {
                        Err(self.bad(format!("missing member {name:?}")))
                    };
                }
            }
        }
        Err(self.bad(format!("too many links resolving {name:?}")))
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let p = self.resolve(name)?;
        std::fs::read(&p).map_err(|e| ImageError::io("read", &p, e))
    }

    fn open(&self, name: &str) -> Result<File> {
        let p = self.resolve(name)?;
        File::open(&p).map_err(|e| ImageError::io("open", &p, e))
    }

    fn exists(&self, name: &str) -> bool {
        self.resolve(name).is_ok()
    }
}

/// A relative path without `.`/`..`/root components, or `None` when it would climb out.
fn clean(name: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// Loads every image of an archive (a tar file, `-` for stdin, or a directory).
pub fn load(store: &Store, input: &str, progress: &dyn Progress) -> Result<Vec<Loaded>> {
    let source = open_source(store, input)?;
    let _writer = store.writer()?;
    if source.exists("manifest.json") {
        load_docker(store, &source, progress)
    } else if source.exists("index.json") {
        load_oci(store, &source, progress)
    } else {
        Err(source.bad("neither a docker save archive nor an OCI image layout (no manifest.json or index.json)"))
    }
}

fn open_source(store: &Store, input: &str) -> Result<Source> {
    let label = if input == "-" {
        "stdin".to_string()
    } else {
        input.to_string()
    };
    let path = Path::new(input);
    if input != "-" && path.is_dir() {
        return Ok(Source {
            dir: path.to_path_buf(),
            links: HashMap::new(),
            label,
            owned: false,
        });
    }
    let reader: Box<dyn Read> = if input == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(File::open(path).map_err(|e| ImageError::io("open", path, e))?)
    };
    let dir = store
        .root()
        .join("ingest")
        .join(format!("load-{}", crate::fsutil::random_hex(8)));
    std::fs::create_dir(&dir).map_err(|e| ImageError::io("create", &dir, e))?;
    let mut source = Source {
        dir,
        links: HashMap::new(),
        label,
        owned: true,
    };
    let (_, reader) = unpack::decompress(std::io::BufReader::with_capacity(1 << 18, reader))
        .map_err(|e| source.bad(format!("reading: {e}")))?;
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| source.bad(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| source.bad(format!("corrupt tar archive: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| source.bad(format!("bad member name: {e}")))?
            .to_string_lossy()
            .into_owned();
        let rel = clean(&raw).ok_or_else(|| source.bad(format!("member {raw:?} leaves the archive")))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            let p = source.dir.join(&rel);
            std::fs::create_dir_all(&p).map_err(|e| ImageError::io("create", &p, e))?;
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| source.bad(format!("bad link in {raw:?}: {e}")))?
                .ok_or_else(|| source.bad(format!("link {raw:?} has no target")))?
                .into_owned();
            // A hard link names its target from the archive root; make it relative to the link's dir.
            let target = if kind.is_hard_link() {
                let depth = rel.components().count().saturating_sub(1);
                let mut up = PathBuf::new();
                for _ in 0..depth {
                    up.push("..");
                }
                up.join(target)
            } else {
                target
            };
            source.links.insert(rel, target);
        } else if kind.is_file() {
            let p = source.dir.join(&rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| ImageError::io("create", parent, e))?;
            }
            let mut f = File::create(&p).map_err(|e| ImageError::io("create", &p, e))?;
            std::io::copy(&mut entry, &mut f).map_err(|e| source.bad(format!("reading {raw:?}: {e}")))?;
        }
    }
    Ok(source)
}

fn load_docker(store: &Store, source: &Source, progress: &dyn Progress) -> Result<Vec<Loaded>> {
    let entries: Vec<DockerEntry> = oci::parse_json(
        &format!("{}: manifest.json", source.label),
        &source.read("manifest.json")?,
    )?;
    let mut out = Vec::new();
    for entry in entries {
        let config_bytes = source.read(&entry.config)?;
        let config: ImageConfig = oci::parse_json(&format!("{}: {}", source.label, entry.config), &config_bytes)?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(source.bad(format!(
                "{} lists {} layers but its config has {} diff ids",
                entry.config,
                entry.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let id = store.write_blob(&config_bytes, None)?;
        let mut layers = Vec::new();
        let mut sizes = Vec::new();
        for (name, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let (desc, size) = ingest(store, source, name, None, diff_id, progress)?;
            layers.push(desc);
            sizes.push(size);
        }
        let config_desc = Descriptor::new(oci::OCI_CONFIG, id.clone(), config_bytes.len() as u64);
        let manifest = Manifest::oci(config_desc, layers);
        let manifest_bytes = oci::to_json(&manifest);
        let manifest_digest = store.write_blob(&manifest_bytes, None)?;
        let mut tags = Vec::new();
        for t in entry.repo_tags.unwrap_or_default() {
            tags.push(Reference::parse(&t)?);
        }
        let record = ImageRecord::new(id.clone(), manifest_digest, oci::OCI_MANIFEST, sizes);
        store.add_image(record, &tags)?;
        out.push(Loaded { id, tags });
    }
    Ok(out)
}

/// Stores one layer member: unpacked and kept as a blob, unless both are already there.
fn ingest(
    store: &Store,
    source: &Source,
    name: &str,
    expected_blob: Option<&Descriptor>,
    diff_id: &Digest,
    progress: &dyn Progress,
) -> Result<(Descriptor, u64)> {
    let short = diff_id.short();
    if let Some(d) = expected_blob
        && store.has_blob(&d.digest)
        && store.has_layer(diff_id)
    {
        progress.layer(short, "Already exists", d.size, Some(d.size));
        return Ok((d.clone(), store.layer_size(diff_id)));
    }
    if expected_blob.is_none() && store.has_blob(diff_id) && store.has_layer(diff_id) {
        progress.layer(short, "Already exists", 0, None);
        let size = std::fs::metadata(store.blob_path(diff_id))
            .map(|m| m.len())
            .unwrap_or(0);
        return Ok((
            Descriptor::new(oci::OCI_LAYER, diff_id.clone(), size),
            store.layer_size(diff_id),
        ));
    }
    progress.layer(short, "Loading layer", 0, None);
    let file = std::io::BufReader::with_capacity(1 << 18, source.open(name)?);
    let layer = store.ingest_layer(
        file,
        name,
        expected_blob.map(|d| &d.digest),
        Some(diff_id),
        Unpack::Now,
        &|_| {},
    )?;
    progress.layer(short, "Loaded", layer.size, Some(layer.size));
    let media_type = expected_blob.map_or(oci::layer_media_type(layer.compression), |d| d.media_type.as_str());
    Ok((Descriptor::new(media_type, layer.blob, layer.blob_size), layer.size))
}

fn load_oci(store: &Store, source: &Source, progress: &dyn Progress) -> Result<Vec<Loaded>> {
    let index: Index = oci::parse_json(&format!("{}: index.json", source.label), &source.read("index.json")?)?;
    let blob = |d: &Digest| -> Result<Vec<u8>> {
        let bytes = source.read(&format!("blobs/sha256/{}", d.hex()))?;
        let actual = Digest::of(&bytes);
        if actual != *d {
            return Err(ImageError::DigestMismatch {
                what: format!("{}: blob {}", source.label, d.short()),
                expected: d.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    };
    let mut out = Vec::new();
    for top in &index.manifests {
        let mut desc = top.clone();
        if oci::is_index(&desc.media_type) {
            let nested: Index = oci::parse_json("nested index", &blob(&desc.digest)?)?;
            let host = Platform::host();
            desc = nested
                .manifests
                .into_iter()
                .find(|d| d.platform.as_ref().is_none_or(|p| host.matches(p)))
                .ok_or_else(|| source.bad(format!("no manifest for {host} in index {}", top.digest.short())))?;
        }
        let manifest_bytes = blob(&desc.digest)?;
        let manifest: Manifest = oci::parse_json(&format!("manifest {}", desc.digest.short()), &manifest_bytes)?;
        let config_bytes = blob(&manifest.config.digest)?;
        let config: ImageConfig = oci::parse_json("image config", &config_bytes)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(source.bad(format!(
                "manifest {} and its config disagree on the layers",
                desc.digest.short()
            )));
        }
        let id = store.write_blob(&config_bytes, Some(&manifest.config.digest))?;
        let mut sizes = Vec::new();
        for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            let member = format!("blobs/sha256/{}", layer.digest.hex());
            let (_, size) = ingest(store, source, &member, Some(layer), diff_id, progress)?;
            sizes.push(size);
        }
        let manifest_digest = store.write_blob(&manifest_bytes, Some(&desc.digest))?;
        let mut tags = Vec::new();
        for key in ["io.containerd.image.name", "org.opencontainers.image.ref.name"] {
            if let Some(name) = top.annotations.get(key)
                && (name.contains(':') || name.contains('/'))
                && let Ok(r) = Reference::parse(name)
                && r.tag.is_some()
            {
                tags.push(r);
                break;
            }
        }
        let media_type = oci::manifest_media_type(&manifest_bytes, Some(&desc.media_type));
        let record = ImageRecord::new(id.clone(), manifest_digest, &media_type, sizes);
        store.add_image(record, &tags)?;
        out.push(Loaded { id, tags });
    }
    Ok(out)
}

/// Where `save` writes.
pub enum SaveTarget {
    /// A tar stream.
    Tar(Box<dyn Write>),
    /// An OCI layout directory (created if missing).
    Dir(PathBuf),
}

/// Saves images (by reference or id) as one archive in both Docker's and the OCI layout.
pub fn save(store: &Store, names: &[String], target: SaveTarget) -> Result<()> {
    // Images in the order first named, each with the tags it was named by.
    let mut images: Vec<(ImageRecord, Vec<Reference>)> = Vec::new();
    for name in names {
        let record = store.lookup(name)?;
        let tag = Reference::parse(name)
            .ok()
            .filter(|r| r.tag.is_some() && r.digest.is_none() && !is_id(name, &record));
        match images.iter_mut().find(|(r, _)| r.id == record.id) {
            Some((_, tags)) => tags.extend(tag),
            None => images.push((record, tag.into_iter().collect())),
        }
    }
    let mut files: Vec<(String, FileBody)> = Vec::new();
    let mut docker = Vec::new();
    let mut index = Index {
        schema_version: 2,
        media_type: Some(oci::OCI_INDEX.into()),
        manifests: Vec::new(),
        annotations: BTreeMap::new(),
    };
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for (record, tags) in &images {
        let manifest = store.manifest(record)?;
        let mut blobs = vec![record.manifest.clone(), record.id.clone()];
        blobs.extend(manifest.layers.iter().map(|l| l.digest.clone()));
        for b in blobs {
            if seen.insert(b.clone()) {
                files.push((format!("blobs/sha256/{}", b.hex()), FileBody::Blob(b)));
            }
        }
        let manifest_size = std::fs::metadata(store.blob_path(&record.manifest))
            .map(|m| m.len())
            .unwrap_or(0);
        let entry = |annotations| Descriptor {
            media_type: record.media_type.clone(),
            digest: record.manifest.clone(),
            size: manifest_size,
            platform: None,
            annotations,
            urls: Vec::new(),
        };
        if tags.is_empty() {
            index.manifests.push(entry(BTreeMap::new()));
        }
        for t in tags {
            let tag = t.tag.clone().unwrap_or_default();
            index.manifests.push(entry(BTreeMap::from([
                (
                    "io.containerd.image.name".to_string(),
                    t.tagged_name().unwrap_or_default(),
                ),
                ("org.opencontainers.image.ref.name".to_string(), tag.clone()),
            ])));
            repositories
                .entry(t.familiar_name())
                .or_default()
                .insert(tag, record.id.hex().to_string());
        }
        docker.push(DockerEntry {
            config: format!("blobs/sha256/{}", record.id.hex()),
            repo_tags: Some(tags.iter().map(|t| t.to_string()).collect()),
            layers: manifest
                .layers
                .iter()
                .map(|l| format!("blobs/sha256/{}", l.digest.hex()))
                .collect(),
        });
    }
    files.push((
        "oci-layout".into(),
        FileBody::Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    ));
    files.push(("index.json".into(), FileBody::Bytes(oci::to_json(&index))));
    files.push(("manifest.json".into(), FileBody::Bytes(oci::to_json(&docker))));
    if !repositories.is_empty() {
        files.push(("repositories".into(), FileBody::Bytes(oci::to_json(&repositories))));
    }
    match target {
        SaveTarget::Tar(w) => write_tar(store, w, &files),
        SaveTarget::Dir(dir) => write_dir(store, &dir, &files),
    }
}

fn is_id(name: &str, record: &ImageRecord) -> bool {
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    !hex.is_empty() && record.id.hex().starts_with(hex)
}

enum FileBody {
    Blob(Digest),
    Bytes(Vec<u8>),
}

fn write_tar(store: &Store, w: Box<dyn Write>, files: &[(String, FileBody)]) -> Result<()> {
    let out_err = |e: std::io::Error| ImageError::io("write", "the archive", e);
    let mut builder = tar::Builder::new(w);
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        builder.append_data(&mut h, dir, std::io::empty()).map_err(out_err)?;
    }
    for (name, body) in files {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(0);
        match body {
            FileBody::Blob(d) => {
                let f = store.open_blob(d)?;
                let len = f
                    .metadata()
                    .map_err(|e| ImageError::io("stat", store.blob_path(d), e))?
                    .len();
                h.set_size(len);
                builder
                    .append_data(&mut h, name, std::io::BufReader::with_capacity(1 << 18, f))
                    .map_err(out_err)?;
            }
            FileBody::Bytes(b) => {
                h.set_size(b.len() as u64);
                builder.append_data(&mut h, name, b.as_slice()).map_err(out_err)?;
            }
        }
    }
    builder.into_inner().map_err(out_err)?.flush().map_err(out_err)
}

fn write_dir(store: &Store, dir: &Path, files: &[(String, FileBody)]) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| ImageError::io("create", &blobs, e))?;
    for (name, body) in files {
        let p = dir.join(name);
        match body {
            FileBody::Blob(d) => {
                if p.exists() {
                    continue;
                }
                // A copy, not a hard link: editing the saved layout must not touch the store.
                std::fs::copy(store.blob_path(d), &p).map_err(|e| ImageError::io("copy", &p, e))?;
            }
            FileBody::Bytes(b) => std::fs::write(&p, b).map_err(|e| ImageError::io("write", &p, e))?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_stay_inside() {
        assert_eq!(clean("./a/b.tar").unwrap(), PathBuf::from("a/b.tar"));
        assert_eq!(clean("a/../b").unwrap(), PathBuf::from("b"));
        assert_eq!(clean("/abs/x").unwrap(), PathBuf::from("abs/x"));
        assert!(clean("../x").is_none());
        assert!(clean("a/../../x").is_none());
    }
}
