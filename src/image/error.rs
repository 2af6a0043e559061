//! `ImageError`: every way the image store, unpacking, archives and the registry client can fail.
//! Messages are lower-case and name the reference, digest, path or archive entry involved.

use std::path::PathBuf;

/// An error from the image layer.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file-system operation failed on a path.
    #[error("{op} {path}: {error}")]
    Io {
        /// What was being done ("create", "read", "rename", …).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// An image reference does not follow Docker's grammar.
    #[error("invalid reference format {reference:?}: {reason}")]
    Reference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A digest is not `algorithm:hex` of a supported algorithm.
    #[error("invalid digest {digest:?}: {reason}")]
    Digest {
        /// The digest as given.
        digest: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Content did not hash to the digest it was announced with.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was being verified (a blob, a layer, a manifest).
        what: String,
        /// The announced digest.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// A layer archive is unsafe or corrupt; nothing of it is kept.
    #[error("layer {layer}: entry {entry:?}: {reason}")]
    Unpack {
        /// The layer (digest or file) being unpacked.
        layer: String,
        /// The archive entry at fault (empty when the archive itself is broken).
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// A manifest, index, config or archive metadata file is malformed.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which document.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No image matches the reference or id.
    #[error("no such image: {0}")]
    NotFound(String),
    /// An id prefix matches more than one image.
    #[error("multiple images match {0:?}; use a longer id")]
    Ambiguous(String),
    /// The image is used by containers and may not be removed.
    #[error(
        "unable to remove image {image}: it is used by container {containers}; stop and remove it, or use -f to untag"
    )]
    InUse {
        /// The image as named by the user.
        image: String,
        /// The containers that use it.
        containers: String,
    },
    /// An image index has no manifest for the wanted platform.
    #[error("{reference}: no image for platform {platform} (available: {available})")]
    Platform {
        /// The reference being pulled.
        reference: String,
        /// The wanted platform.
        platform: String,
        /// The platforms the index offers.
        available: String,
    },
    /// The registry refused the credentials, or needs some.
    #[error("{registry}: {message}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The registry's answer and what to do.
        message: String,
    },
    /// A registry request failed.
    #[error("{registry}: {message}")]
    Registry {
        /// The registry host.
        registry: String,
        /// What failed.
        message: String,
    },
    /// An image archive (`load`, `import`) is not one berth understands.
    #[error("archive {path}: {reason}")]
    Archive {
        /// The archive.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `--change` instruction is invalid.
    #[error("invalid change {change:?}: {reason}")]
    Change {
        /// The instruction.
        change: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ImageError {
    /// An I/O error on `path` while doing `op`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        ImageError::Io {
            op,
            path: path.into(),
            error,
        }
    }
}

/// A result in the image layer.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;
