//! `down`: stop and remove a project's containers level by level in reverse dependency order,
//! every container of a level at once (so a project waits at most one grace period per level),
//! then its networks, and with `-v` its volumes.

use std::collections::BTreeSet;

use super::error::ReconcileError;
use super::execute::{Engine, Report, volume_project};
use super::observed::labels;
use crate::runtime::Container;

/// `down`'s choices.
#[derive(Debug, Clone, Default)]
pub struct DownOptions {
    /// Grace period (`-t`); `None` uses each container's.
    pub timeout: Option<u64>,
    /// Remove the project's named and anonymous volumes (`-v`).
    pub volumes: bool,
    /// Also remove containers of services the project no longer has.
    pub remove_orphans: bool,
}

/// Applies `f` to containers level by level, all of a level at once; returns each container's
/// name and result, in level order.
pub fn in_levels(
    levels: Vec<Vec<&Container>>,
    f: impl Fn(&Container) -> Result<(), ReconcileError> + Sync,
) -> Vec<(String, Result<(), ReconcileError>)> {
    let mut out = Vec::new();
    for level in levels.into_iter().filter(|l| !l.is_empty()) {
        std::thread::scope(|s| {
            let handles: Vec<_> = level
                .iter()
                .map(|c| {
                    let f = &f;
                    s.spawn(move || f(c))
                })
                .collect();
            for (c, h) in level.iter().zip(handles) {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(ReconcileError::Dependency(format!("{}: a worker panicked", c.name()))));
                out.push((c.name().to_string(), r));
            }
        });
    }
    out
}

/// Takes project `name` down. `stop_levels` are the project's services, dependants first; a
/// container of a service in none of them is an orphan.
pub fn down(
    engine: &Engine,
    name: &str,
    stop_levels: &[Vec<String>],
    declared_volumes: &[String],
    opts: &DownOptions,
    report: &dyn Report,
) -> Result<(), ReconcileError> {
    let containers = engine.containers(name)?;
    let known: BTreeSet<&str> = stop_levels.iter().flatten().map(String::as_str).collect();
    let service_of = |c: &Container| c.config.spec.labels.get(labels::SERVICE).cloned().unwrap_or_default();
    let mut levels: Vec<Vec<&Container>> = Vec::new();
    let orphans: Vec<&Container> = containers
        .iter()
        .filter(|c| !known.contains(service_of(c).as_str()))
        .collect();
    if opts.remove_orphans {
        levels.push(orphans.clone());
    } else {
        for c in &orphans {
            report.line(&format!(
                "warning: found orphan container {} (service {}); run with --remove-orphans to remove it",
                c.name(),
                service_of(c)
            ));
        }
    }
    for level in stop_levels {
        levels.push(containers.iter().filter(|c| level.contains(&service_of(c))).collect());
    }
    let mut failures = Vec::new();
    // With no orphan left, the network domain goes as a whole after the containers, endpoints and
    // all; otherwise each container's endpoint goes with it.
    let whole_domain = orphans.is_empty() || opts.remove_orphans;
    let results = in_levels(levels, |c| {
        if c.is_running() {
            report.line(&format!("Container {}  Stopping", c.name()));
        }
        if whole_domain {
            engine.remove_container(c, opts.timeout)
        } else {
            engine.remove(c, opts.timeout)
        }
    });
    for (c, r) in results {
        match r {
            Ok(()) => report.line(&format!("Container {c}  Removed")),
            Err(e) => failures.push(format!("remove container {c}: {e}")),
        }
    }
    let networks: Vec<String> = engine
        .networks
        .state()?
        .networks
        .values()
        .filter(|n| n.domain == name)
        .map(|n| n.name.clone())
        .collect();
    if !whole_domain {
        if !networks.is_empty() {
            report.line(&format!(
                "networks of {name} are kept: orphan containers still use them"
            ));
        }
    } else if !networks.is_empty() {
        match engine.networks.teardown_domain(name) {
            Ok(()) => {
                for n in &networks {
                    report.line(&format!("Network {n}  Removed"));
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    if opts.volumes {
        let root = engine.root().join("volumes");
        let mut names: BTreeSet<String> = declared_volumes.iter().cloned().collect();
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let v = e.file_name().to_string_lossy().into_owned();
                if volume_project(engine.root(), &v).as_deref() == Some(name) {
                    names.insert(v);
                }
            }
        }
        for v in names {
            let dir = root.join(&v);
            if !dir.exists() {
                continue;
            }
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => report.line(&format!("Volume {v}  Removed")),
                Err(e) => failures.push(format!("remove volume {v}: {e}")),
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        let total = failures.len();
        Err(ReconcileError::Failed { failures, total })
    }
}
