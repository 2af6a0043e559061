//! berth: a daemonless, Compose-compatible multi-container engine.
//!
//! The library holds every layer; the `berth` binary only parses arguments and prints.

pub mod build;
pub mod cli;
pub mod compose;
pub mod fsutil;
pub mod graph;
pub mod image;
pub mod network;
pub mod reconcile;
pub mod runtime;
