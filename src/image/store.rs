//! The image store on disk, under `<root>/images/`:
//!
//! - `blobs/sha256/<hex>`: content (manifests, configs, layer archives), verified against its digest
//!   before it is renamed in from `ingest/`, so a blob that exists is complete and correct;
//! - `layers/<diff-id hex>/`: one unpacked layer, an overlayfs lower dir shared by every image and
//!   container that uses it, renamed in from a `.tmp-*` directory once unpacked and verified, with its
//!   size in `layers/<hex>.size`;
//! - `images.json`: the index, image records by id (the config digest) and tags to ids, replaced
//!   atomically under `index.lock`.
//!
//! Writers (pull, load, import) hold `gc.lock` shared while they add content; garbage collection holds
//! it exclusively, so it never removes a blob that a writer is about to reference.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::oci::{self, ImageConfig, Manifest};
use super::reference::{Digest, Reference};
use super::unpack;
use super::{ImageError, Result};
use crate::fsutil::{self, Lock, LockMode};

/// One image: its id is the digest of its config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest, Docker's image id.
    pub id: Digest,
    /// The manifest berth keeps for it (as pulled, or made on load/import).
    pub manifest: Digest,
    /// The manifest's media type.
    pub media_type: String,
    /// `registry/repository@digest` names it is known by in registries.
    #[serde(default)]
    pub repo_digests: BTreeSet<String>,
    /// Uncompressed size of each layer, base first.
    #[serde(default)]
    pub layer_sizes: Vec<u64>,
    /// When it entered the store.
    pub added: String,
}

impl ImageRecord {
    /// A record added now, known to no registry yet.
    pub fn new(id: Digest, manifest: Digest, media_type: &str, layer_sizes: Vec<u64>) -> ImageRecord {
        ImageRecord {
            id,
            manifest,
            media_type: media_type.to_string(),
            repo_digests: BTreeSet::new(),
            layer_sizes,
            added: jiff::Timestamp::now().to_string(),
        }
    }

    /// Total unpacked size, as `image ls` shows it.
    pub fn size(&self) -> u64 {
        self.layer_sizes.iter().sum()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    images: BTreeMap<Digest, ImageRecord>,
    /// `registry/repository:tag` → image id.
    tags: BTreeMap<String, Digest>,
}

/// What happened to an image or tag in `remove`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// A tag (familiar form) was removed.
    Untagged(String),
    /// The image itself was removed.
    Deleted(Digest),
}

/// The layers a new layer stream turned into.
#[derive(Debug, Clone)]
pub struct IngestedLayer {
    /// Digest of the stream as given (compressed or not).
    pub blob: Digest,
    /// Size of the stream as given.
    pub blob_size: u64,
    /// Digest of the uncompressed tar: the layer's diff id.
    pub diff_id: Digest,
    /// Uncompressed size.
    pub size: u64,
    /// How the stream was compressed.
    pub compression: unpack::Compression,
}

/// When a stored layer is unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unpack {
    /// While it is stored (load, import: the content is at hand once).
    Now,
    /// At first use (pull: like `containerd`'s fetch, the blob is verified and kept, and the first
    /// container unpacks it).
    Later,
}

/// The image store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store under `<state root>/images`.
    pub fn open(state_root: &Path) -> Result<Store> {
        let root = state_root.join("images");
        for d in ["blobs/sha256", "ingest", "layers"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(|e| ImageError::io("create", &p, e))?;
        }
        Ok(Store { root })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Whether a blob is present (and therefore complete).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).exists()
    }

    /// Reads a whole blob (for manifests and configs).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(digest);
        std::fs::read(&p).map_err(|e| ImageError::io("read blob", &p, e))
    }

    /// Opens a blob for streaming.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let p = self.blob_path(digest);
        File::open(&p).map_err(|e| ImageError::io("open blob", &p, e))
    }

    /// Where a layer is unpacked.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// Whether a layer is unpacked (and therefore complete).
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).is_dir()
    }

    /// The recorded uncompressed size of a stored layer (unpacked or not).
    pub fn layer_size(&self, diff_id: &Digest) -> u64 {
        std::fs::read_to_string(self.layer_size_path(diff_id))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn layer_size_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(format!("{}.size", diff_id.hex()))
    }

    /// Held while adding content, so garbage collection waits.
    pub fn writer(&self) -> Result<Lock> {
        self.lock("gc.lock", LockMode::Shared)
    }

    fn lock(&self, name: &str, mode: LockMode) -> Result<Lock> {
        let p = self.root.join(name);
        Lock::take(&p, mode).map_err(|e| ImageError::io("lock", &p, e))
    }

    /// Stores a small blob held in memory, verifying it against `expected`.
    pub fn write_blob(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<Digest> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(|e| ImageError::io("write", &w.path, e))?;
        w.commit(expected, "blob")
    }

    /// A writer that hashes what it is given and becomes a blob on `commit`.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let path = self.root.join("ingest").join(fsutil::random_hex(16));
        let file = File::create(&path).map_err(|e| ImageError::io("create", &path, e))?;
        Ok(BlobWriter {
            store: self.clone(),
            path,
            file: Some(file),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Stores a layer stream. With `Unpack::Now`, in one pass: the stream is written to a blob and,
    /// through its decompressor, hashed and unpacked into a fresh directory; both digests are checked
    /// against the expected ones when given, and only then do the blob and the layer directory appear.
    /// With `Unpack::Later`, only the verified blob and the layer's size are stored, and the first
    /// `layer_dirs` unpacks it, checking the diff id. `progress` is called with the stream's bytes
    /// read so far.
    pub fn ingest_layer(
        &self,
        source: impl Read,
        name: &str,
        expected_blob: Option<&Digest>,
        expected_diff_id: Option<&Digest>,
        when: Unpack,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<IngestedLayer> {
        if when == Unpack::Later {
            return self.fetch_layer(source, name, expected_blob, expected_diff_id, progress);
        }
        let blob = self.blob_writer()?;
        let tmp = self.layer_temp()?;
        let mut raw = HashingReader::new(source, Some(blob), Some(progress));
        let unpacked = (|| {
            let (compression, decompressed) =
                unpack::decompress(&mut raw).map_err(|e| corrupt(name, format!("reading the layer: {e}")))?;
            Ok((compression, unpack_hashed(decompressed, &tmp.path, name)?))
        })();
        let drained = std::io::copy(&mut raw, &mut std::io::sink());
        // A stream that is not what was announced explains any unpacking error best.
        if let Some(expected) = expected_blob
            && drained.is_ok()
        {
            let actual = Digest::from_hasher(raw.hasher.clone());
            if actual != *expected {
                return Err(ImageError::DigestMismatch {
                    what: format!("layer {name}"),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        let (compression, (diff_id, size)) = unpacked?;
        drained.map_err(|e| corrupt(name, format!("reading the layer: {e}")))?;
        if let Some(expected) = expected_diff_id {
            check_diff_id(name, expected, &diff_id)?;
        }
        let writer = raw.sink.take().expect("the blob writer is set above");
        let blob_size = writer.size;
        let blob = writer.commit(expected_blob, &format!("layer {name}"))?;
        self.commit_layer(tmp, &diff_id, size)?;
        Ok(IngestedLayer {
            blob,
            blob_size,
            diff_id,
            size,
            compression,
        })
    }

    /// Stores a layer's blob only, checking its digest, and records its uncompressed size from the
    /// blob's header or trailer (decompressing to count only when the format does not say). The
    /// diff id is checked when the layer is unpacked, before its directory appears.
    fn fetch_layer(
        &self,
        source: impl Read,
        name: &str,
        expected_blob: Option<&Digest>,
        expected_diff_id: Option<&Digest>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<IngestedLayer> {
        let diff_id = expected_diff_id
            .cloned()
            .ok_or_else(|| corrupt(name, "a layer stored for later needs its diff id".into()))?;
        let mut raw = HashingReader::new(source, Some(self.blob_writer()?), Some(progress));
        std::io::copy(&mut raw, &mut std::io::sink()).map_err(|e| corrupt(name, format!("reading the layer: {e}")))?;
        let writer = raw.sink.take().expect("the blob writer is set above");
        let blob_size = writer.size;
        let blob = writer.commit(expected_blob, &format!("layer {name}"))?;
        let path = self.blob_path(&blob);
        let mut file = File::open(&path).map_err(|e| ImageError::io("open", &path, e))?;
        let (compression, size) =
            unpack::stored_size(&mut file).map_err(|e| corrupt(name, format!("reading the layer: {e}")))?;
        let size = match size {
            Some(n) => n,
            None => {
                let (_, mut tar) = unpack::decompress(std::io::BufReader::new(
                    File::open(&path).map_err(|e| ImageError::io("open", &path, e))?,
                ))
                .map_err(|e| corrupt(name, format!("reading the layer: {e}")))?;
                std::io::copy(&mut tar, &mut std::io::sink())
                    .map_err(|e| corrupt(name, format!("reading the layer: {e}")))?
            }
        };
        if !self.has_layer(&diff_id) {
            self.write_layer_size(&diff_id, size)?;
        }
        Ok(IngestedLayer {
            blob,
            blob_size,
            diff_id,
            size,
            compression,
        })
    }

    /// Unpacks a layer whose blob is already stored (a layer that was removed, or loaded without
    /// unpacking), checking its diff id.
    pub fn unpack_stored(&self, blob: &Digest, diff_id: &Digest) -> Result<u64> {
        let name = blob.short().to_string();
        let tmp = self.layer_temp()?;
        let file = self.open_blob(blob)?;
        let (_, decompressed) = unpack::decompress(std::io::BufReader::with_capacity(1 << 18, file))
            .map_err(|e| corrupt(&name, format!("reading the layer: {e}")))?;
        let (actual, size) = unpack_hashed(decompressed, &tmp.path, &name)?;
        check_diff_id(&name, diff_id, &actual)?;
        self.commit_layer(tmp, diff_id, size)?;
        Ok(size)
    }

    /// A fresh temporary layer directory: `commit_layer` renames it into place, dropping removes it.
    fn layer_temp(&self) -> Result<TempDir> {
        TempDir::new(
            self.root
                .join("layers")
                .join(format!(".tmp-{}", fsutil::random_hex(16))),
        )
    }

    fn write_layer_size(&self, diff_id: &Digest, size: u64) -> Result<()> {
        let size_path = self.layer_size_path(diff_id);
        fsutil::write_atomic(&size_path, size.to_string().as_bytes(), false)
            .map_err(|e| ImageError::io("write", &size_path, e))
    }

    fn commit_layer(&self, tmp: TempDir, diff_id: &Digest, size: u64) -> Result<()> {
        self.write_layer_size(diff_id, size)?;
        let dir = self.layer_dir(diff_id);
        match std::fs::rename(&tmp.path, &dir) {
            Ok(()) => {
                tmp.keep();
                Ok(())
            }
            // Another writer unpacked the same layer meanwhile; theirs is as good as ours.
            Err(_) if dir.is_dir() => Ok(()),
            Err(e) => Err(ImageError::io("rename", &dir, e)),
        }
    }

    /// All images with their tags (fully qualified), oldest first.
    pub fn images(&self) -> Result<Vec<(ImageRecord, Vec<Reference>)>> {
        let index = self.read_index()?;
        let mut out: Vec<_> = index
            .images
            .values()
            .map(|r| {
                let tags = index
                    .tags
                    .iter()
                    .filter(|(_, id)| **id == r.id)
                    .filter_map(|(t, _)| Reference::parse(t).ok())
                    .collect();
                (r.clone(), tags)
            })
            .collect();
        out.sort_by(|a, b| a.0.added.cmp(&b.0.added));
        Ok(out)
    }

    /// Finds an image by reference (`busybox`, `app:v1`, `name@sha256:…`), full id, or unique id prefix.
    pub fn lookup(&self, name: &str) -> Result<ImageRecord> {
        let index = self.read_index()?;
        lookup_in(&index, name).cloned()
    }

    /// Reads an image's config.
    pub fn config(&self, record: &ImageRecord) -> Result<ImageConfig> {
        oci::parse_json(
            &format!("image config {}", record.id.short()),
            &self.read_blob(&record.id)?,
        )
    }

    /// Reads an image's manifest.
    pub fn manifest(&self, record: &ImageRecord) -> Result<Manifest> {
        oci::parse_json(
            &format!("manifest {}", record.manifest.short()),
            &self.read_blob(&record.manifest)?,
        )
    }

    /// The image's unpacked layers as overlayfs lower dirs, top-most first. Layers whose directory is
    /// gone are unpacked again from their blobs.
    pub fn layer_dirs(&self, record: &ImageRecord) -> Result<Vec<PathBuf>> {
        let config = self.config(record)?;
        let manifest = self.manifest(record)?;
        let _writer = self.writer()?;
        for (desc, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            if !self.has_layer(diff_id) {
                self.unpack_stored(&desc.digest, diff_id)?;
            }
        }
        Ok(config.rootfs.diff_ids.iter().rev().map(|d| self.layer_dir(d)).collect())
    }

    /// Records an image whose blobs (manifest, config, layers) are all stored, and points `tags` at it.
    /// Tags that named another image move; that image may become dangling.
    pub fn add_image(&self, record: ImageRecord, tags: &[Reference]) -> Result<()> {
        for blob in [&record.manifest, &record.id] {
            if !self.has_blob(blob) {
                return Err(ImageError::NotFound(format!(
                    "blob {blob} of image {}",
                    record.id.short()
                )));
            }
        }
        self.update_index(|index| {
            let entry = index.images.entry(record.id.clone()).or_insert_with(|| record.clone());
            entry.repo_digests.extend(record.repo_digests.iter().cloned());
            if entry.manifest != record.manifest {
                entry.manifest = record.manifest.clone();
                entry.media_type = record.media_type.clone();
            }
            entry.layer_sizes = record.layer_sizes.clone();
            for t in tags {
                if let Some(name) = t.tagged_name() {
                    index.tags.insert(name, record.id.clone());
                }
            }
            Ok(())
        })
    }

    /// Points `target` (a tagged reference) at the image `source` names.
    pub fn tag(&self, source: &str, target: &Reference) -> Result<()> {
        let name = target.tagged_name().ok_or_else(|| ImageError::Reference {
            reference: target.to_string(),
            reason: "a tag target cannot have a digest only".into(),
        })?;
        self.update_index(|index| {
            let id = lookup_in(index, source)?.id.clone();
            index.tags.insert(name, id);
            Ok(())
        })
    }

    /// Adds a registry digest name to an image (after a push).
    pub fn add_repo_digest(&self, id: &Digest, repo_digest: String) -> Result<()> {
        self.update_index(|index| {
            if let Some(r) = index.images.get_mut(id) {
                r.repo_digests.insert(repo_digest);
            }
            Ok(())
        })
    }

    /// Removes a tag, or an image with its tags, as `docker rmi` does. `users` names the containers
    /// that use an image id. With `force`, an image in use is untagged and kept (it shows as
    /// `<none>`), and an id with several tags loses them all.
    pub fn remove(&self, name: &str, force: bool, users: &dyn Fn(&Digest) -> Vec<String>) -> Result<Vec<Removed>> {
        self.update_index(|index| {
            let record = lookup_in(index, name)?.clone();
            let tags: Vec<String> = index
                .tags
                .iter()
                .filter(|(_, id)| **id == record.id)
                .map(|(t, _)| t.clone())
                .collect();
            let by_tag = Reference::parse(name)
                .ok()
                .and_then(|r| r.tagged_name())
                .filter(|t| index.tags.contains_key(t));
            let mut out = Vec::new();
            let untag = |index: &mut Index, t: &String, out: &mut Vec<Removed>| {
                index.tags.remove(t);
                out.push(Removed::Untagged(
                    Reference::parse(t).map_or(t.clone(), |r| r.to_string()),
                ));
            };
            if let Some(t) = &by_tag
                && tags.len() > 1
            {
                untag(index, t, &mut out);
                return Ok(out);
            }
            if by_tag.is_none() && tags.len() > 1 && !force {
                return Err(ImageError::InUse {
                    image: name.to_string(),
                    containers: format!("(none; it is tagged {} times — remove the tags or use -f)", tags.len()),
                });
            }
            let containers = users(&record.id);
            if !containers.is_empty() && !force {
                return Err(ImageError::InUse {
                    image: name.to_string(),
                    containers: containers.join(", "),
                });
            }
            for t in &tags {
                untag(index, t, &mut out);
            }
            if containers.is_empty() {
                index.images.remove(&record.id);
                out.push(Removed::Deleted(record.id.clone()));
            }
            Ok(out)
        })
    }

    /// Removes images that have no tag (`all`: every image no container uses), then collects garbage.
    /// Returns the removed ids and the bytes reclaimed.
    pub fn prune(&self, all: bool, users: &dyn Fn(&Digest) -> Vec<String>) -> Result<(Vec<Digest>, u64)> {
        let removed = self.update_index(|index| {
            let tagged: BTreeSet<Digest> = index.tags.values().cloned().collect();
            let doomed: Vec<Digest> = index
                .images
                .keys()
                .filter(|id| (all || !tagged.contains(*id)) && users(id).is_empty())
                .cloned()
                .collect();
            for id in &doomed {
                index.images.remove(id);
                index.tags.retain(|_, v| v != id);
            }
            Ok(doomed)
        })?;
        let reclaimed = self.collect_garbage()?;
        Ok((removed, reclaimed))
    }

    /// Removes blobs and layers no image references, and leftovers of interrupted writes. Waits for
    /// writers to finish. Returns the bytes reclaimed.
    pub fn collect_garbage(&self) -> Result<u64> {
        let _gc = self.lock("gc.lock", LockMode::Exclusive)?;
        let index = self.read_index()?;
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        for r in index.images.values() {
            blobs.insert(r.id.hex().to_string());
            blobs.insert(r.manifest.hex().to_string());
            if let Ok(m) = self.manifest(r) {
                blobs.extend(m.layers.iter().map(|l| l.digest.hex().to_string()));
            }
            if let Ok(c) = self.config(r) {
                layers.extend(c.rootfs.diff_ids.iter().map(|d| d.hex().to_string()));
            }
        }
        for r in self.cache_records()? {
            blobs.insert(r.id.hex().to_string());
            blobs.insert(r.manifest.hex().to_string());
            if let Ok(m) = self.manifest(&r) {
                blobs.extend(m.layers.iter().map(|l| l.digest.hex().to_string()));
            }
            if let Ok(c) = self.config(&r) {
                layers.extend(c.rootfs.diff_ids.iter().map(|d| d.hex().to_string()));
            }
        }
        let mut reclaimed = 0;
        for entry in read_dir(&self.root.join("blobs/sha256"))? {
            if !blobs.contains(&entry.0) {
                reclaimed += entry.1.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = std::fs::remove_file(entry.1);
            }
        }
        for (name, path) in read_dir(&self.root.join("layers"))? {
            let key = name.strip_suffix(".size").unwrap_or(&name);
            if layers.contains(key) {
                continue;
            }
            if name.ends_with(".size") {
                reclaimed += std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                let _ = std::fs::remove_file(&path);
            } else {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
        // Partial writes, and the scratch directories of builds that were killed.
        for (_, path) in read_dir(&self.root.join("ingest"))? {
            if path.is_dir() {
                let _ = std::fs::remove_dir_all(path);
            } else {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(reclaimed)
    }

    /// The image a build cache key stands for, when it and all its blobs are still stored.
    pub fn cache_get(&self, key: &Digest) -> Result<Option<ImageRecord>> {
        let p = self.cache_path(key);
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ImageError::io("read", &p, e)),
        };
        let Ok(record) = serde_json::from_slice::<ImageRecord>(&bytes) else {
            return Ok(None);
        };
        if !self.has_blob(&record.id) || !self.has_blob(&record.manifest) {
            return Ok(None);
        }
        let manifest = self.manifest(&record)?;
        if manifest.layers.iter().any(|l| !self.has_blob(&l.digest)) {
            return Ok(None);
        }
        Ok(Some(record))
    }

    /// Records that build cache `key` stands for `record` (whose blobs are stored). Cache records
    /// keep their blobs and layers from garbage collection until `cache_clear`.
    pub fn cache_put(&self, key: &Digest, record: &ImageRecord) -> Result<()> {
        let p = self.cache_path(key);
        let dir = self.root.join("cache");
        std::fs::create_dir_all(&dir).map_err(|e| ImageError::io("create", &dir, e))?;
        let body = serde_json::to_vec(record).expect("a record serialises");
        fsutil::write_atomic(&p, &body, false).map_err(|e| ImageError::io("write", &p, e))
    }

    /// Forgets every build cache record (their content goes at the next garbage collection).
    /// Returns how many there were.
    pub fn cache_clear(&self) -> Result<usize> {
        let dir = self.root.join("cache");
        if !dir.exists() {
            return Ok(0);
        }
        let entries = read_dir(&dir)?;
        for (_, path) in &entries {
            let _ = std::fs::remove_file(path);
        }
        Ok(entries.len())
    }

    fn cache_path(&self, key: &Digest) -> PathBuf {
        self.root.join("cache").join(format!("{}.json", key.hex()))
    }

    fn cache_records(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.root.join("cache");
        if !dir.exists() {
            return Ok(Vec::new());
        }
        Ok(read_dir(&dir)?
            .into_iter()
            .filter_map(|(_, p)| std::fs::read(p).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect())
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn read_index(&self) -> Result<Index> {
        let p = self.index_path();
        match std::fs::read(&p) {
            Ok(bytes) => oci::parse_json(&format!("image index {}", p.display()), &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(ImageError::io("read", &p, e)),
        }
    }

    fn update_index<T>(&self, f: impl FnOnce(&mut Index) -> Result<T>) -> Result<T> {
        let _lock = self.lock("index.lock", LockMode::Exclusive)?;
        let mut index = self.read_index()?;
        let out = f(&mut index)?;
        let p = self.index_path();
        let body = serde_json::to_vec_pretty(&index).expect("the index serialises");
        fsutil::write_atomic(&p, &body, true).map_err(|e| ImageError::io("write", &p, e))?;
        Ok(out)
    }
}

fn lookup_in<'a>(index: &'a Index, name: &str) -> Result<&'a ImageRecord> {
    let id_text = name.strip_prefix("sha256:").unwrap_or(name);
    let is_hex = !id_text.is_empty() && id_text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if is_hex && id_text.len() == 64 {
        return index
            .images
            .values()
            .find(|r| r.id.hex() == id_text)
            .ok_or_else(|| ImageError::NotFound(name.into()));
    }
    if let Ok(r) = Reference::parse(name) {
        if let Some(t) = r.tagged_name()
            && r.digest.is_none()
            && let Some(id) = index.tags.get(&t)
        {
            return index.images.get(id).ok_or_else(|| ImageError::NotFound(name.into()));
        }
        if let Some(d) = &r.digest {
            let wanted = format!("{}@{d}", r.name());
            if let Some(found) = index.images.values().find(|i| i.repo_digests.contains(&wanted)) {
                return Ok(found);
            }
        }
    }
    if is_hex && (!name.contains(':') || name.starts_with("sha256:")) {
        let mut matches = index.images.values().filter(|r| r.id.hex().starts_with(id_text));
        if let Some(first) = matches.next() {
            return match matches.next() {
                None => Ok(first),
                Some(_) => Err(ImageError::Ambiguous(name.into())),
            };
        }
    }
    Err(ImageError::NotFound(name.into()))
}

fn read_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| ImageError::io("read", dir, e))?;
    Ok(rd
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect())
}

/// Unpacks a decompressed layer stream into `dir` and reads it to the end (padding may follow
/// the tar's end-of-archive blocks, and it is part of the diff id); returns the diff id and size.
fn unpack_hashed(decompressed: impl Read, dir: &Path, name: &str) -> Result<(Digest, u64)> {
    let mut tar = HashingReader::new(decompressed, None, None);
    unpack::unpack_layer(&mut tar, dir, name)?;
    std::io::copy(&mut tar, &mut std::io::sink()).map_err(|e| corrupt(name, format!("reading the layer: {e}")))?;
    Ok((Digest::from_hasher(tar.hasher.clone()), tar.count))
}

/// Fails unless a layer's uncompressed content hashed to the diff id its image announces.
fn check_diff_id(name: &str, expected: &Digest, actual: &Digest) -> Result<()> {
    if actual == expected {
        return Ok(());
    }
    Err(ImageError::DigestMismatch {
        what: format!("layer {name} (uncompressed)"),
        expected: expected.to_string(),
        actual: actual.to_string(),
    })
}

fn corrupt(layer: &str, reason: String) -> ImageError {
    ImageError::Unpack {
        layer: layer.to_string(),
        entry: String::new(),
        reason,
    }
}

/// A blob being written: hashed as it goes, renamed into the store by `commit` once its digest checks.
/// Dropped without commit, it leaves nothing.
pub struct BlobWriter {
    store: Store,
    path: PathBuf,
    file: Option<File>,
    hasher: Sha256,
    size: u64,
}

impl BlobWriter {
    /// Checks the digest, makes the data durable and moves it into place. Returns the digest.
    pub fn commit(mut self, expected: Option<&Digest>, what: &str) -> Result<Digest> {
        let digest = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(ImageError::DigestMismatch {
                what: what.to_string(),
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        let file = self.file.take().expect("commit runs once");
        file.sync_data().map_err(|e| ImageError::io("sync", &self.path, e))?;
        drop(file);
        let target = self.store.blob_path(&digest);
        std::fs::rename(&self.path, &target).map_err(|e| ImageError::io("rename", &target, e))?;
        Ok(digest)
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.as_mut().expect("not committed").write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().expect("not committed").flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A reader that hashes and counts what passes through it, optionally copying it to a blob writer and
/// reporting progress.
pub struct HashingReader<'p, R> {
    inner: R,
    /// The hash of everything read so far.
    pub hasher: Sha256,
    /// Bytes read so far.
    pub count: u64,
    sink: Option<BlobWriter>,
    progress: Option<&'p (dyn Fn(u64) + Sync)>,
}

impl<'p, R: Read> HashingReader<'p, R> {
    /// Wraps `inner`.
    pub fn new(inner: R, sink: Option<BlobWriter>, progress: Option<&'p (dyn Fn(u64) + Sync)>) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            sink,
            progress,
        }
    }
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        if let Some(sink) = &mut self.sink {
            sink.write_all(&buf[..n])?;
        }
        self.count += n as u64;
        if let Some(p) = self.progress
            && n > 0
        {
            p(self.count);
        }
        Ok(n)
    }
}

/// A directory removed on drop unless kept.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    fn new(path: PathBuf) -> Result<TempDir> {
        std::fs::create_dir(&path).map_err(|e| ImageError::io("create", &path, e))?;
        Ok(TempDir { path, keep: false })
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &Digest) -> ImageRecord {
        ImageRecord {
            id: id.clone(),
            manifest: Digest::of(b"m"),
            media_type: oci::OCI_MANIFEST.into(),
            repo_digests: BTreeSet::new(),
            layer_sizes: vec![],
            added: String::new(),
        }
    }

    #[test]
    fn lookup_by_tag_id_prefix_and_digest() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let mut index = Index::default();
        let mut ra = record(&a);
        let pinned = Digest::of(b"manifest");
        ra.repo_digests.insert(format!("127.0.0.1:5000/app@{pinned}"));
        index.images.insert(a.clone(), ra);
        index.images.insert(b.clone(), record(&b));
        index.tags.insert("docker.io/library/busybox:latest".into(), a.clone());
        assert_eq!(lookup_in(&index, "busybox").unwrap().id, a);
        assert_eq!(lookup_in(&index, "docker.io/library/busybox:latest").unwrap().id, a);
        assert_eq!(lookup_in(&index, a.as_str()).unwrap().id, a);
        assert_eq!(lookup_in(&index, a.hex()).unwrap().id, a);
        assert_eq!(lookup_in(&index, &b.hex()[..5]).unwrap().id, b);
        assert_eq!(
            lookup_in(&index, &format!("127.0.0.1:5000/app@{pinned}")).unwrap().id,
            a
        );
        assert!(matches!(lookup_in(&index, "busybox:1"), Err(ImageError::NotFound(_))));
        assert!(matches!(lookup_in(&index, "nope"), Err(ImageError::NotFound(_))));
        let common: String = a
            .hex()
            .chars()
            .zip(b.hex().chars())
            .take_while(|(x, y)| x == y)
            .map(|p| p.0)
            .collect();
        if common.is_empty() {
            assert!(matches!(
                lookup_in(&index, ""),
                Err(ImageError::Reference { .. } | ImageError::NotFound(_))
            ));
        } else {
            assert!(matches!(lookup_in(&index, &common), Err(ImageError::Ambiguous(_))));
        }
    }
}
