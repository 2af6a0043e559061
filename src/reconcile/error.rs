//! `ReconcileError`: every way observing, planning and executing a project can fail. It wraps the
//! layer errors it meets, whose messages already name the resource.

use crate::graph::GraphError;
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
}
