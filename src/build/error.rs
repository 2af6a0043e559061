//! `BuildError`, the builder's one error type.

use std::path::{Path, PathBuf};

use crate::image::ImageError;
use crate::runtime::RuntimeError;

/// Everything that can go wrong in a build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse.
    #[error("{file}:{line}: {message}{}", show_text(text))]
    Syntax {
        /// The Dockerfile (or `<inline>`).
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
        /// The offending line.
        text: String,
    },
    /// An instruction that parses but cannot be carried out as written.
    #[error("{file}:{line}: {instruction}: {message}")]
    Instruction {
        /// The Dockerfile (or `<inline>`).
        file: String,
        /// 1-based line of the instruction.
        line: usize,
        /// The instruction, shortened (`COPY app /srv`).
        instruction: String,
        /// What is wrong.
        message: String,
    },
    /// A `RUN` step's command failed.
    #[error("step {step} failed: {command}: exit code {code}{}", show_tail(output))]
    Run {
        /// `2/5`, or `build 2/5` in a multi-stage build.
        step: String,
        /// The command as written.
        command: String,
        /// Its exit code.
        code: i32,
        /// The last lines it printed.
        output: String,
    },
    /// The build as a whole is asked for something that does not exist (target, context, Dockerfile).
    #[error("{0}")]
    Invalid(String),
    /// A file-system operation on the context or the state root failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The image store failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The runtime failed while running a step.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl BuildError {
    /// A closure mapping an I/O error on `path` while doing `action`.
    pub fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
        move |source| BuildError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

fn show_text(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("\n  | {text}")
    }
}

fn show_tail(output: &str) -> String {
    if output.trim().is_empty() {
        String::new()
    } else {
        let lines: String = output.trim_end().lines().map(|l| format!("\n  | {l}")).collect();
        format!("; last output:{lines}")
    }
}

/// The builder's result type.
pub type Result<T, E = BuildError> = std::result::Result<T, E>;
