//! `RuntimeError`: every way the container runtime can fail. Messages are lower-case and name the path,
//! container or operation involved.

use std::path::PathBuf;

/// An error from the container runtime layer.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Copying into or out of a container failed.
    #[error("cannot copy {path}: {reason}")]
    Copy {
        /// The path in the container.
        path: String,
        /// Why.
        reason: String,
    },
    /// A file-system operation failed on a path.
    // The cause is part of the message and deliberately not a `source`: callers print the message
    // (to clients, logs and error frames), and a chain would repeat it.
    #[error("{op} {path}: {error}")]
    Io {
        /// What was being done ("create", "read", "mount", …).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A system call failed.
    #[error("{op}: {errno}")]
    Sys {
        /// What was being done, with its arguments.
        op: String,
        /// The errno.
        errno: nix::Error,
    },
    /// A cgroup could not be created, configured or read.
    #[error("cgroup {path}: {message}")]
    Cgroup {
        /// The cgroup directory or file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The seccomp profile could not be compiled or loaded.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// The container specification is invalid.
    #[error("invalid container spec: {0}")]
    Spec(String),
    /// No container has this name or id.
    #[error("no such container: {0}")]
    NotFound(String),
    /// A container name or id prefix matches more than one container.
    #[error("multiple containers match {0:?}; use a longer id")]
    Ambiguous(String),
    /// A container with this name already exists.
    #[error("the container name {0:?} is already in use")]
    NameInUse(String),
    /// The container is in the wrong state for the operation.
    #[error("container {id} is {state}: {hint}")]
    State {
        /// The container's name.
        id: String,
        /// Its state.
        state: String,
        /// What the caller can do.
        hint: String,
    },
    /// The supervisor did not answer or answered with an error.
    #[error("supervisor of {id}: {message}")]
    Supervisor {
        /// The container's name.
        id: String,
        /// What happened.
        message: String,
    },
    /// The process could not be started; `code` is Docker's exit code for it (125, 126 or 127).
    #[error("{message}")]
    Start {
        /// 125: berth could not set the container up; 126: the command cannot run; 127: not found.
        code: i32,
        /// What went wrong.
        message: String,
    },
    /// A state record is corrupt.
    #[error("corrupt state file {path}: {message}")]
    Corrupt {
        /// The record.
        path: PathBuf,
        /// The parse error.
        message: String,
    },
}

/// The runtime layer's result.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

impl RuntimeError {
    /// Wraps an I/O error with the operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |error| RuntimeError::Io { op, path, error }
    }

    /// Wraps an errno with a description of the call.
    pub fn sys(op: impl Into<String>) -> impl FnOnce(nix::Error) -> Self {
        let op = op.into();
        move |errno| RuntimeError::Sys { op, errno }
    }
}
