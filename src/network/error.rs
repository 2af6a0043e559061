//! `NetworkError`: every way the network layer can fail. Messages are lower-case and name the
//! network, endpoint, interface, address or port involved.

use std::path::PathBuf;

/// An error from the network layer.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A file-system operation failed on a path.
    #[error("{op} {path}: {error}")]
    Io {
        /// What was being done ("create", "read", "mount", …).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A system call failed outside any one path (a socket, a namespace switch).
    #[error("{op}: {error}")]
    Sys {
        /// What was being done.
        op: String,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A netlink request was refused by the kernel.
    #[error("netlink: {op}: {error}")]
    Netlink {
        /// The request ("create bridge br-1a2b", "add address 10.0.0.1/24 to eth0").
        op: String,
        /// The kernel's answer.
        error: std::io::Error,
    },
    /// No subnet is free, or a requested one overlaps something.
    #[error("address pool: {0}")]
    Ipam(String),
    /// A host port cannot be bound.
    #[error("cannot publish {proto} port {addr}: {reason}")]
    PortConflict {
        /// `tcp` or `udp`.
        proto: &'static str,
        /// The host address and port.
        addr: String,
        /// Why, naming what holds the port when it is known.
        reason: String,
    },
    /// A network, endpoint or namespace does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A request is inconsistent (bad subnet, duplicate name, network still in use).
    #[error("{0}")]
    Invalid(String),
    /// The per-domain network daemon could not be started or reached.
    #[error("network daemon for {domain}: {reason}")]
    Daemon {
        /// The domain (project or standalone network) it serves.
        domain: String,
        /// What went wrong.
        reason: String,
    },
    /// A host name has no address, or no resolver answered for it.
    #[error("cannot resolve host {host}: {reason}")]
    Lookup {
        /// The name looked up.
        host: String,
        /// What was tried and how it ended.
        reason: String,
    },
    /// A teardown finished but some steps failed; every failure is listed.
    #[error("teardown of {what} left errors: {}", .errors.join("; "))]
    Teardown {
        /// What was being torn down.
        what: String,
        /// Each step that failed.
        errors: Vec<String>,
    },
}

impl NetworkError {
    /// An I/O error on `path` while doing `op`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        NetworkError::Io {
            op,
            path: path.into(),
            error,
        }
    }

    /// A system call error while doing `op`.
    pub fn sys(op: impl Into<String>, error: impl Into<std::io::Error>) -> Self {
        NetworkError::Sys {
            op: op.into(),
            error: error.into(),
        }
    }
}

/// Results of the network layer.
pub type Result<T, E = NetworkError> = std::result::Result<T, E>;
