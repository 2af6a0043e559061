//! The image store: content-addressed blobs, references, unpacked layer snapshots, the registry client
//! and image archives. It knows nothing of Compose, and nothing of containers beyond the layer
//! directories it hands out.

pub mod archive;
pub mod auth;
pub mod error;
pub mod import;
pub mod oci;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

pub use error::{ImageError, Result};

/// Where transfers report progress, one layer at a time.
pub trait Progress: Sync {
    /// A layer's status changed (`Downloading`, `Pull complete`, `Pushed`, …), or bytes moved
    /// (`current` of `total`).
    fn layer(&self, id: &str, status: &str, current: u64, total: Option<u64>);
}

/// Progress that goes nowhere.
pub struct Quiet;

impl Progress for Quiet {
    fn layer(&self, _: &str, _: &str, _: u64, _: Option<u64>) {}
}
