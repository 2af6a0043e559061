//! The embedded container runtime: namespaces, overlayfs root, mounts, cgroups, capabilities and seccomp,
//! driven through `nix` with no external runtime. It takes a [`ContainerSpec`] and knows nothing of Compose.

pub mod cgroup;
pub mod control;
pub mod copy;
pub mod error;
pub mod health;
pub mod lifecycle;
pub mod memory;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod spawn;
pub mod spec;
pub mod state;
pub mod supervisor;

pub use error::{Result, RuntimeError};
pub use lifecycle::{Container, Runtime, Standby, StartMode};
pub use spec::*;
