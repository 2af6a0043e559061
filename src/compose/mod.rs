//! The compose layer: turns compose files into a validated, canonical [`Project`]. It knows nothing
//! of containers, networks on the host, or images; it only reads files and the environment given.

mod canonical;
mod defaults;
pub mod dotenv;
pub mod error;
pub mod interpolate;
mod loader;
mod merge;
mod schema;
mod typecast;
pub mod units;
mod validate;
pub mod yaml;

use std::path::PathBuf;

use indexmap::IndexMap;
use serde::Deserialize;

pub use error::{LoadError, Location};
pub use loader::{discover, is_valid_project_name, normalize_project_name};

/// Everything the loader needs, resolved from the command line and the process environment.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Where relative `-f` paths and discovery start.
    pub working_dir: PathBuf,
    /// Explicit compose files (`-f`), in order. Empty means `COMPOSE_FILE` or discovery.
    pub files: Vec<PathBuf>,
    /// `-p`.
    pub project_name: Option<String>,
    /// `--project-directory`.
    pub project_directory: Option<PathBuf>,
    /// `--env-file`s, replacing the project's `.env`.
    pub env_files: Vec<PathBuf>,
    /// `--profile`s. Empty means `COMPOSE_PROFILES`.
    pub profiles: Vec<String>,
    /// Services named on the command line: they enable their profiles and restrict the output.
    pub services: Vec<String>,
    /// The process environment; it wins over `.env`.
    pub environment: IndexMap<String, String>,
    /// False for `--no-interpolate`.
    pub interpolate: bool,
    /// Home directory for `~` in paths.
    pub home: Option<PathBuf>,
}

/// A loaded project: the canonical document plus typed views of what later layers need.
#[derive(Debug, Clone)]
pub struct Project {
    /// The project name.
    pub name: String,
    /// The project directory, where relative paths were resolved.
    pub working_dir: PathBuf,
    /// The compose files that were read, in merge order.
    pub files: Vec<PathBuf>,
    /// Services by name, in file order.
    pub services: IndexMap<String, Service>,
    /// Every profile any service declares, enabled or not, sorted.
    pub all_profiles: Vec<String>,
    /// The canonical project as Compose's `config --format json` prints it.
    pub canonical: serde_json::Value,
}

/// A service, as far as the graph and the commands need typed fields. Everything else stays in
/// [`Project::canonical`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Service {
    /// `image`.
    pub image: Option<String>,
    /// `profiles`.
    pub profiles: Vec<String>,
    /// `depends_on`, long form.
    pub depends_on: IndexMap<String, DependsOn>,
    /// `links`, as written (`service[:alias]`).
    pub links: Vec<String>,
    /// `volumes_from`, as written (`service[:mode]` or `container:name`).
    pub volumes_from: Vec<String>,
    /// `network_mode`.
    pub network_mode: Option<String>,
    /// `networks` this service joins.
    pub networks: IndexMap<String, Option<serde_json::Value>>,
    /// `environment`, with env files folded in; `None` for variables left unset.
    pub environment: IndexMap<String, Option<String>>,
    /// `command`, long form.
    pub command: Option<Vec<String>>,
    /// `entrypoint`, long form.
    pub entrypoint: Option<Vec<String>>,
}

/// One `depends_on` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct DependsOn {
    /// `service_started`, `service_healthy` or `service_completed_successfully`.
    pub condition: String,
    /// Whether the dependency must exist and start.
    pub required: bool,
    /// Whether to restart this service when the dependency restarts.
    pub restart: bool,
}

impl Service {
    /// Names of the services this one needs, from every kind of reference.
    pub fn dependencies(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.depends_on.keys().map(String::as_str).collect();
        out.extend(self.links.iter().filter_map(|l| l.split(':').next()));
        out.extend(
            self.volumes_from
                .iter()
                .filter(|v| !v.starts_with("container:"))
                .filter_map(|v| v.split(':').next()),
        );
        if let Some(s) = self.network_mode.as_deref().and_then(|m| m.strip_prefix("service:")) {
            out.push(s);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl Project {
    /// Builds the typed view from the canonical document.
    fn from_canonical(
        name: String,
        working_dir: PathBuf,
        files: Vec<PathBuf>,
        all_profiles: Vec<String>,
        canonical: serde_json::Value,
    ) -> Result<Project, LoadError> {
        let mut services = IndexMap::new();
        if let Some(svcs) = canonical.get("services").and_then(|s| s.as_object()) {
            for (k, v) in svcs {
                let svc = Service::deserialize(v)
                    .map_err(|e| LoadError::invalid(None, format!("services.{k}"), format!("invalid service: {e}")))?;
                services.insert(k.clone(), svc);
            }
        }
        Ok(Project {
            name,
            working_dir,
            files,
            services,
            all_profiles,
            canonical,
        })
    }

    /// The image a service runs: its `image`, or the name a build gives it, `<project>-<service>`.
    pub fn image_of(&self, service: &str) -> String {
        match self.services.get(service).and_then(|s| s.image.as_ref()) {
            Some(i) => i.clone(),
            None => format!("{}-{service}", self.name),
        }
    }

    /// Service names in file order.
    pub fn service_names(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(String::as_str)
    }
}

/// Loads, merges, validates and normalises a project.
pub fn load(opts: &LoadOptions) -> Result<Project, LoadError> {
    loader::load(opts)
}
