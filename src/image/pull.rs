//! `pull`: resolve a reference to a manifest (choosing a platform from an index), fetch the config, and
//! fetch the layers in parallel, each written to its blob and unpacked in the same pass. Layers already
//! unpacked are skipped; the image is recorded only once everything is stored and verified.

use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::oci::{self, ImageConfig, Index, Manifest, Platform};
use super::reference::{Digest, Reference};
use super::registry::{Client, Credentials, RegistryOptions};
use super::store::{ImageRecord, Store, Unpack};
use super::{ImageError, Progress, Result};

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform to pick from an index (default: the host's).
    pub platform: Option<Platform>,
    /// Layers fetched at once.
    pub parallel: usize,
    /// Registry connection settings.
    pub registry: RegistryOptions,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: None,
            parallel: 4,
            registry: RegistryOptions::default(),
        }
    }
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image id.
    pub id: Digest,
    /// The digest the registry knows the reference by.
    pub digest: Digest,
    /// True when the image was already complete locally.
    pub up_to_date: bool,
}

/// Pulls `reference` into the store and tags it.
pub fn pull(
    store: &Store,
    reference: &Reference,
    credentials: Option<Credentials>,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let scope = format!("repository:{}:pull", reference.repository);
    let client = Client::new(&reference.registry, credentials, &options.registry, vec![scope]);
    let repo = &reference.repository;
    let top = client.manifest(repo, &reference.registry_reference())?;
    let manifest_doc = if oci::is_index(&top.media_type) {
        let index: Index = oci::parse_json(&format!("index of {reference}"), &top.bytes)?;
        let want = options.platform.clone().unwrap_or_else(Platform::host);
        let chosen = index
            .manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
            .ok_or_else(|| ImageError::Platform {
                reference: reference.to_string(),
                platform: want.to_string(),
                available: index
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let m = client.manifest(repo, chosen.digest.as_str())?;
        if m.digest != chosen.digest {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest of {reference} for {want}"),
                expected: chosen.digest.to_string(),
                actual: m.digest.to_string(),
            });
        }
        m
    } else {
        top.clone()
    };
    let manifest: Manifest = oci::parse_json(&format!("manifest of {reference}"), &manifest_doc.bytes)?;
    let id = manifest.config.digest.clone();
    let _writer = store.writer()?;
    let repo_digest = format!("{}@{}", reference.name(), top.digest);
    let tags: Vec<Reference> = reference.tag.is_some().then(|| reference.clone()).into_iter().collect();

    if !store.has_blob(&id) {
        let (_, body) = client.blob(repo, &id)?;
        let mut bytes = Vec::new();
        std::io::Read::take(body, 16 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| ImageError::Registry {
                registry: reference.registry.clone(),
                message: e.to_string(),
            })?;
        store.write_blob(&bytes, Some(&id))?;
    }
    let config: ImageConfig = oci::parse_json(&format!("image config of {reference}"), &store.read_blob(&id)?)?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::Malformed {
            what: format!("image {reference}"),
            reason: format!(
                "the manifest has {} layers but the config lists {} diff ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        });
    }
    let complete = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .all(|(l, _)| store.has_blob(&l.digest));
    let up_to_date = complete && store.has_blob(&manifest_doc.digest);

    if !complete {
        fetch_layers(store, &client, repo, &manifest, &config, options.parallel, progress)?;
    } else {
        for l in &manifest.layers {
            progress.layer(l.digest.short(), "Already exists", 0, None);
        }
    }
    store.write_blob(&manifest_doc.bytes, Some(&manifest_doc.digest))?;
    let record = ImageRecord {
        id: id.clone(),
        manifest: manifest_doc.digest.clone(),
        media_type: manifest_doc.media_type.clone(),
        repo_digests: [repo_digest].into_iter().collect(),
        layer_sizes: config.rootfs.diff_ids.iter().map(|d| store.layer_size(d)).collect(),
        added: jiff::Timestamp::now().to_string(),
    };
    store.add_image(record, &tags)?;
    Ok(Pulled {
        id,
        digest: top.digest,
        up_to_date,
    })
}

/// Fetches and unpacks the missing layers, `parallel` at a time; the first failure stops the rest.
fn fetch_layers(
    store: &Store,
    client: &Client,
    repo: &str,
    manifest: &Manifest,
    config: &ImageConfig,
    parallel: usize,
    progress: &dyn Progress,
) -> Result<()> {
    let jobs: Vec<_> = manifest.layers.iter().zip(&config.rootfs.diff_ids).collect();
    for (l, _) in &jobs {
        progress.layer(l.digest.short(), "Pulling fs layer", 0, Some(l.size));
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<ImageError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, jobs.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= jobs.len() || failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let (desc, diff_id) = jobs[i];
                    if let Err(e) = fetch_layer(store, client, repo, desc, diff_id, progress) {
                        failed.store(true, Ordering::Relaxed);
                        first_error.lock().expect("not poisoned").get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match first_error.into_inner().expect("not poisoned") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn fetch_layer(
    store: &Store,
    client: &Client,
    repo: &str,
    desc: &oci::Descriptor,
    diff_id: &Digest,
    progress: &dyn Progress,
) -> Result<()> {
    let short = desc.digest.short();
    // A stored blob was verified when it was written; the layer is unpacked at first use.
    if store.has_blob(&desc.digest) {
        progress.layer(short, "Already exists", desc.size, Some(desc.size));
        return Ok(());
    }
    if !desc.urls.is_empty() {
        return Err(ImageError::Registry {
            registry: client.registry().to_string(),
            message: format!(
                "layer {short} is a foreign layer (served from {}); berth does not fetch those",
                desc.urls[0]
            ),
        });
    }
    let (_, body) = client.blob(repo, &desc.digest)?;
    let total = desc.size;
    let report = |n: u64| progress.layer(short, "Downloading", n, Some(total));
    store.ingest_layer(
        std::io::BufReader::with_capacity(1 << 18, body),
        short,
        Some(&desc.digest),
        Some(diff_id),
        Unpack::Later,
        &report,
    )?;
    progress.layer(short, "Pull complete", total, Some(total));
    Ok(())
}
