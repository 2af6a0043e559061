//! `ReconcileError`: every way observing, planning and executing a project can fail. It wraps the
//! layer errors it meets, whose messages already name the resource.

use std::path::PathBuf;

use crate::graph::GraphError;
use crate::image::ImageError;
use crate::network::NetworkError;
use crate::runtime::error::RuntimeError;

/// An error from the reconciler.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The project's dependency graph is unusable (a cycle).
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// Reading or changing containers failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Reading or changing networks failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// Finding or pulling an image failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A service asks for something berth cannot give a container.
    #[error("{key}: {message}")]
    Invalid {
        /// Key path in the project, e.g. `services.web.ports[0]`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A file operation on the state root failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Service builds failed; each is named with its cause.
    #[error("{0}")]
    Build(String),
    /// A dependency did not reach the state a service waits for.
    #[error("dependency failed to start: {0}")]
    Dependency(String),
    /// Some operations of a plan failed; each is named with its cause.
    #[error("{} of {total} operations failed:\n{}", failures.len(), failures.join("\n"))]
    Failed {
        /// `resource: error` lines.
        failures: Vec<String>,
        /// Operations in the plan.
        total: usize,
    },
}

impl ReconcileError {
    /// A closure for `map_err` on I/O results.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ReconcileError::Io { op, path, source }
    }
}
