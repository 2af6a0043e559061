//! Observe: one snapshot of what exists for a project, read from the state root (containers by
//! their Compose labels, the project's networks and the volumes). The planner reads only this.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use super::error::ReconcileError;
use crate::network::Networks;
use crate::runtime::lifecycle::Runtime;
use crate::runtime::state::Status as RunStatus;

/// Compose's labels, which berth writes on the containers it makes for a project.
pub mod labels {
    /// The project name.
    pub const PROJECT: &str = "com.docker.compose.project";
    /// The service name.
    pub const SERVICE: &str = "com.docker.compose.service";
    /// The replica number.
    pub const NUMBER: &str = "com.docker.compose.container-number";
    /// The configuration hash.
    pub const CONFIG_HASH: &str = "com.docker.compose.config-hash";
    /// `True` for `run` containers.
    pub const ONEOFF: &str = "com.docker.compose.oneoff";
    /// The project directory.
    pub const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
    /// The compose files, comma-separated.
    pub const CONFIG_FILES: &str = "com.docker.compose.project.config_files";
    /// The image id.
    pub const IMAGE: &str = "com.docker.compose.image";

    use crate::runtime::Container;

    /// A container's service (empty when it has none).
    pub fn service(c: &Container) -> &str {
        c.config.spec.labels.get(SERVICE).map_or("", String::as_str)
    }

    /// A container's replica number (1 when it has none).
    pub fn number(c: &Container) -> u32 {
        c.config
            .spec
            .labels
            .get(NUMBER)
            .and_then(|n| n.parse().ok())
            .unwrap_or(1)
    }

    /// Whether it is a `run` container.
    pub fn is_one_off(c: &Container) -> bool {
        c.config
            .spec
            .labels
            .get(ONEOFF)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// Whether a container runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created, never started.
    Created,
    /// Running (or restarting by its policy).
    Running,
    /// Frozen.
    Paused,
    /// Stopped.
    Exited,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Exited => "exited",
        })
    }
}

/// One container of the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    /// Its name.
    pub name: String,
    /// Its service.
    pub service: String,
    /// Its replica number.
    pub number: u32,
    /// The configuration hash it was made with.
    pub hash: String,
    /// The id of the image it was made from (empty for a root file system directory).
    pub image_id: String,
    /// Whether it runs.
    pub status: Status,
    /// A `run` container.
    pub one_off: bool,
}

/// What exists for a project.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Its containers.
    pub containers: Vec<ObservedContainer>,
    /// Full names of the networks that exist.
    pub networks: BTreeSet<String>,
    /// Full names of the volumes that exist.
    pub volumes: BTreeSet<String>,
}

/// Reads what exists for `project` under the state root. A missing state root is an empty one.
pub fn observe(root: &Path, project: &str) -> Result<Observed, ReconcileError> {
    let mut observed = Observed::default();
    if !root.exists() {
        return Ok(observed);
    }
    if root.join("containers").exists() {
        for c in Runtime::new(root)?.list()? {
            let l = &c.config.spec.labels;
            if l.get(labels::PROJECT).map(String::as_str) != Some(project) {
                continue;
            }
            let Some(service) = l.get(labels::SERVICE) else {
                continue;
            };
            observed.containers.push(ObservedContainer {
                name: c.name().to_string(),
                service: service.clone(),
                number: labels::number(&c),
                hash: l.get(labels::CONFIG_HASH).cloned().unwrap_or_default(),
                image_id: c.config.spec.image_id.clone(),
                status: match c.state.status {
                    RunStatus::Created => Status::Created,
                    RunStatus::Running | RunStatus::Restarting => Status::Running,
                    RunStatus::Paused => Status::Paused,
                    RunStatus::Exited | RunStatus::Dead => Status::Exited,
                },
                one_off: labels::is_one_off(&c),
            });
        }
    }
    observed.networks = Networks::new(root)?.state()?.networks.into_keys().collect();
    if let Ok(entries) = std::fs::read_dir(root.join("volumes")) {
        observed.volumes = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
    }
    Ok(observed)
}
