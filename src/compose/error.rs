//! `LoadError`: every way loading a compose project can fail, with file, line:column and key path.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// A place in a compose input file: file name, 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file as the user named it (or as discovery found it).
    pub file: Arc<str>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// An optional location, shown as `file:line:col: ` or as nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct At(pub Option<Location>);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(loc) => write!(f, "{loc}: "),
            None => Ok(()),
        }
    }
}

/// A key path shown as `services.web.ports[1]: ` or as nothing when empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPath(pub String);

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "{}: ", self.0)
        }
    }
}

/// Everything that can go wrong while loading a compose project.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read.
    #[error("{}: {}", path.display(), io_message(error))]
    Io {
        /// The file or directory that failed.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// No compose file was given and none was found.
    #[error(
        "no configuration file provided: not found (looked for compose.yaml, compose.yml, \
         docker-compose.yml and docker-compose.yaml in {} and its parents)",
        dir.display()
    )]
    NotFound {
        /// The directory the search started from.
        dir: PathBuf,
    },
    /// The YAML itself is malformed.
    #[error("{location}: yaml syntax error: {message}")]
    Syntax {
        /// Where the parser stopped.
        location: Location,
        /// What the parser saw.
        message: String,
    },
    /// The input is well-formed YAML but not a valid compose project.
    #[error("{at}{path}{message}")]
    Invalid {
        /// Where the offending value is, when known.
        at: At,
        /// The key path of the offending value, e.g. `services.web.ports[1]`.
        path: KeyPath,
        /// What is wrong, lower-case.
        message: String,
    },
    /// A dotenv file is malformed.
    #[error("{}: {error}", path.display())]
    Dotenv {
        /// The dotenv file.
        path: PathBuf,
        /// The problem in it.
        error: super::dotenv::DotenvError,
    },
    /// An explicitly given project name is not valid.
    #[error(
        "invalid project name {name:?}: must consist only of lowercase alphanumeric characters, \
         hyphens, and underscores as well as start with a letter or number"
    )]
    ProjectName {
        /// The name as given.
        name: String,
    },
}

impl LoadError {
    /// An `Invalid` error at an optional location and key path.
    pub fn invalid(loc: Option<Location>, path: impl Into<String>, message: impl Into<String>) -> Self {
        LoadError::Invalid {
            at: At(loc),
            path: KeyPath(path.into()),
            message: message.into(),
        }
    }

    /// An `Io` error for `path`.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        LoadError::Io {
            path: path.into(),
            error,
        }
    }
}

/// A lower-case description of an I/O error, without the OS error number.
fn io_message(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::NotFound => "no such file or directory".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::IsADirectory => "is a directory, not a file".into(),
        ErrorKind::InvalidData => "not valid utf-8 text".into(),
        _ => {
            let text = e.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text).to_string();
            let mut c = text.chars();
            match c.next() {
                Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
                None => text,
            }
        }
    }
}
