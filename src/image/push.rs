//! `push`: send an image's blobs that the registry lacks — mounting them from another repository of
//! the same registry when the image came from one — then put its manifest under the tag.

use super::reference::{Digest, Reference};
use super::registry::{Client, Credentials, RegistryOptions, Upload};
use super::store::Store;
use super::{ImageError, Progress, Result};

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The manifest digest the registry now has.
    pub digest: Digest,
    /// The manifest's size.
    pub size: usize,
}

/// Pushes the local image `reference` names to its registry.
pub fn push(
    store: &Store,
    reference: &Reference,
    credentials: Option<Credentials>,
    options: &RegistryOptions,
    progress: &dyn Progress,
) -> Result<Pushed> {
    let name = reference.to_string();
    let record = store.lookup(&name)?;
    let tag = reference.tag.clone().ok_or_else(|| ImageError::Reference {
        reference: name.clone(),
        reason: "push needs a tag".into(),
    })?;
    let manifest = store.manifest(&record)?;
    let manifest_bytes = store.read_blob(&record.manifest)?;
    // Repositories of the same registry that already hold this image: blobs can be mounted from them.
    let sources: Vec<String> = record
        .repo_digests
        .iter()
        .filter_map(|rd| rd.split_once('@').map(|(n, _)| n))
        .filter_map(|n| n.strip_prefix(&format!("{}/", reference.registry)))
        .filter(|repo| *repo != reference.repository)
        .map(str::to_string)
        .collect();
    let mut scopes = vec![format!("repository:{}:pull,push", reference.repository)];
    scopes.extend(sources.iter().map(|s| format!("repository:{s}:pull")));
    let client = Client::new(&reference.registry, credentials, options, scopes);
    let repo = &reference.repository;
    let mut blobs: Vec<(&Digest, u64)> = manifest.layers.iter().map(|l| (&l.digest, l.size)).collect();
    blobs.push((&manifest.config.digest, manifest.config.size));
    for (digest, size) in &blobs {
        progress.layer(digest.short(), "Preparing", 0, Some(*size));
    }
    for (digest, size) in blobs {
        let short = digest.short();
        if client.has_blob(repo, digest)? {
            progress.layer(short, "Layer already exists", size, Some(size));
            continue;
        }
        let mut mounted = None;
        for source in &sources {
            if client.mount_blob(repo, digest, source)? {
                mounted = Some(source);
                break;
            }
        }
        if let Some(source) = mounted {
            progress.layer(short, &format!("Mounted from {source}"), size, Some(size));
            continue;
        }
        progress.layer(short, "Pushing", 0, Some(size));
        client.upload_blob(repo, digest, Upload::File(&store.blob_path(digest)))?;
        progress.layer(short, "Pushed", size, Some(size));
    }
    let digest = client.put_manifest(repo, &tag, &record.media_type, &manifest_bytes)?;
    store.add_repo_digest(&record.id, format!("{}@{digest}", reference.name()))?;
    Ok(Pushed {
        digest,
        size: manifest_bytes.len(),
    })
}
