//! The image builder: Dockerfiles to images in the local store, on berth's own runtime.
//!
//! It knows nothing of Compose; callers describe a build with a `BuildSpec`.

pub mod ignore;
pub mod layer;
pub mod shell;
