//! The image builder: Dockerfiles to images in the local store, on berth's own runtime.
//!
//! It knows nothing of Compose; callers describe a build with a `BuildSpec`.

pub mod builder;
pub mod copy;
pub mod dockerfile;
pub mod error;
pub mod ignore;
pub mod layer;
pub mod shell;

pub use builder::{BuildSpec, Built, DockerfileSource, Event, Progress, Silent, build};
pub use error::{BuildError, Result};
