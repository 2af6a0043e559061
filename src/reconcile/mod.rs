//! The reconciler: observe (`observed.rs`), plan (`plan.rs`, pure), execute. This layer is the
//! only one that knows both Compose's `Project` and the runtime, network and image layers; it
//! translates the one into the others' specs. `desired` turns a project into what the planner
//! needs.

pub mod build;
pub mod down;
pub mod error;
pub mod execute;
pub mod hash;
pub mod observed;
pub mod plan;
pub mod translate;

use crate::compose::Project;
use crate::graph::ServiceGraph;
pub use error::ReconcileError;
use plan::{Desired, DesiredService};

/// What `project` wants, services in dependency order (each after what it needs).
pub fn desired(project: &Project) -> Result<Desired, ReconcileError> {
    let c = &project.canonical;
    let resource_name = |kind: &str, key: &str| -> String {
        c[kind][key]["name"]
            .as_str()
            .map_or_else(|| format!("{}_{key}", project.name), str::to_string)
    };
    let created = |kind: &str| -> Vec<String> {
        c[kind]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| !v["external"].as_bool().unwrap_or(false))
                    .map(|(k, _)| resource_name(kind, k))
                    .collect()
            })
            .unwrap_or_default()
    };
    let order: Vec<String> = ServiceGraph::new(project)?
        .start_levels()
        .into_iter()
        .flatten()
        .collect();
    let mut services = Vec::new();
    for name in order {
        let (Some(svc), Some(doc)) = (project.services.get(&name), c["services"].get(&name)) else {
            continue;
        };
        let replicas = doc["deploy"]["replicas"]
            .as_u64()
            .or_else(|| doc["scale"].as_u64())
            .unwrap_or(1) as u32;
        let networks = if svc.network_mode.is_some() {
            Vec::new()
        } else {
            svc.networks.keys().map(|k| resource_name("networks", k)).collect()
        };
        let volumes = doc["volumes"]
            .as_array()
            .map(|vs| {
                vs.iter()
                    .filter(|v| v["type"] == "volume")
                    .filter_map(|v| v["source"].as_str())
                    .map(|s| resource_name("volumes", s))
                    .collect()
            })
            .unwrap_or_default();
        services.push(DesiredService {
            name: name.clone(),
            replicas,
            container_name: doc["container_name"].as_str().map(str::to_string),
            hash: hash::config_hash(doc),
            image_id: None,
            dependencies: svc
                .dependencies()
                .into_iter()
                .filter(|d| project.services.contains_key(*d))
                .map(str::to_string)
                .collect(),
            restart_with: svc
                .depends_on
                .iter()
                .filter(|(d, c)| c.restart && project.services.contains_key(*d))
                .map(|(d, _)| d.clone())
                .collect(),
            networks,
            volumes,
        });
    }
    Ok(Desired {
        project: project.name.clone(),
        services,
        networks: created("networks"),
        volumes: created("volumes"),
    })
}
