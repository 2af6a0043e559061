//! Execute: walk a plan in parallel along its `after` edges, doing each operation with the runtime,
//! network and image layers. A failed operation skips everything that waits for it and is reported
//! with its cause; independent branches go on, as Compose does.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::error::ReconcileError;
use super::observed::labels;
use super::plan::{Desired, Kind, Op, Plan};
use super::translate::{self, Context, ENDPOINT_LABEL, ImageInfo, NetMode};
use crate::compose::Project;
use crate::image::ImageError;
use crate::image::auth::DockerConfig;
use crate::image::pull::{self, PullOptions};
use crate::image::reference::Reference;
use crate::image::store::Store;
use crate::network::ipam::parse_prefix;
use crate::network::{NetworkConfig, Networks};
use crate::runtime::health::HealthStatus;
use crate::runtime::state::FileLock;
use crate::runtime::{Container, NetworkSpec, Runtime, StartMode};

/// The layers a project is run on, under one state root.
#[derive(Debug, Clone)]
pub struct Engine {
    /// Containers.
    pub runtime: Runtime,
    /// Networks.
    pub networks: Networks,
}

impl Engine {
    /// The engine under `root`.
    pub fn new(root: &Path) -> Result<Engine, ReconcileError> {
        Ok(Engine {
            runtime: Runtime::new(root)?,
            networks: Networks::new(root)?,
        })
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        self.runtime.root()
    }

    /// Takes the project's lock, waiting (after saying so) while another command holds it.
    pub fn lock(&self, project: &str, say: &dyn Fn(&str)) -> Result<FileLock, ReconcileError> {
        let dir = self.root().join("projects");
        std::fs::create_dir_all(&dir).map_err(ReconcileError::io("create", &dir))?;
        let path = dir.join(format!("{project}.lock"));
        if let Some(l) = FileLock::try_exclusive(&path)? {
            return Ok(l);
        }
        say(&format!(
            "waiting for another berth command on project {project} to finish"
        ));
        Ok(FileLock::exclusive(&path)?)
    }

    /// The containers of a project (one-off ones too), by their labels.
    pub fn containers(&self, project: &str) -> Result<Vec<Container>, ReconcileError> {
        let mut list: Vec<Container> = self
            .runtime
            .list()?
            .into_iter()
            .filter(|c| c.config.spec.labels.get(labels::PROJECT).map(String::as_str) == Some(project))
            .collect();
        list.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(list)
    }

    /// The containers of one service of a project, one-off ones left out, by replica number.
    pub fn service_containers(&self, project: &str, service: &str) -> Result<Vec<Container>, ReconcileError> {
        let mut list: Vec<Container> = self
            .containers(project)?
            .into_iter()
            .filter(|c| labels::service(c) == service && !labels::is_one_off(c))
            .collect();
        list.sort_by_key(labels::number);
        Ok(list)
    }

    /// Stops (signal, grace, then SIGKILL), removes a container and its endpoint.
    pub fn remove(&self, c: &Container, timeout: Option<u64>) -> Result<(), ReconcileError> {
        self.remove_container(c, timeout)?;
        if let Some(key) = c.config.spec.labels.get(ENDPOINT_LABEL) {
            self.networks.disconnect(key)?;
        }
        Ok(())
    }

    /// Stops and removes a container, leaving its endpoint to the caller (`down` tears the whole
    /// network domain down at once instead).
    pub fn remove_container(&self, c: &Container, timeout: Option<u64>) -> Result<(), ReconcileError> {
        if c.is_running() {
            self.stop(c, timeout)?;
        }
        self.runtime.delete(&self.runtime.refresh(c)?, true)?;
        Ok(())
    }

    /// Stops a container (signal, grace, then SIGKILL).
    pub fn stop(&self, c: &Container, timeout: Option<u64>) -> Result<(), ReconcileError> {
        let spec = &c.config.spec;
        let grace = timeout.unwrap_or_else(|| spec.stop_timeout_or_default());
        self.runtime.stop(c, spec.stop_signal_or_default() as i32, grace)?;
        Ok(())
    }
}

/// How to execute.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Operations at once; 0 is unlimited (`COMPOSE_PARALLEL_LIMIT`, `--parallel`).
    pub parallel: usize,
    /// Grace period for stops during recreation and removal (`-t`); `None` uses each container's.
    pub timeout: Option<u64>,
    /// Image pull policy for missing images: `missing` (default), `always`, `never`.
    pub pull: Option<String>,
    /// Start without waiting on `depends_on` conditions (`--no-deps`).
    pub no_deps: bool,
}

/// Where the executor reports what it did, one line per event (`Container p-web-1  Started`).
pub trait Report: Sync {
    /// One line.
    fn line(&self, text: &str);
}

impl<F: Fn(&str) + Sync> Report for F {
    fn line(&self, text: &str) {
        self(text)
    }
}

/// What one operation ended as.
#[derive(Debug, Clone)]
enum Outcome {
    Pending,
    Done,
    Failed(String),
    Skipped(String),
}

/// Executes `plan` for `project`.
pub fn execute(
    engine: &Engine,
    project: &Project,
    desired: &Desired,
    plan: &Plan,
    opts: &ExecOptions,
    report: &dyn Report,
) -> Result<(), ReconcileError> {
    let images = resolve_images(engine, project, plan, opts, report)?;
    let runner = Runner {
        engine,
        project,
        desired,
        images,
        opts,
        report,
    };
    let n = plan.ops.len();
    let mut waiting: Vec<usize> = plan.ops.iter().map(|o| o.after.len()).collect();
    let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, op) in plan.ops.iter().enumerate() {
        for &a in &op.after {
            dependants[a].push(i);
        }
    }
    let limit = if opts.parallel == 0 { usize::MAX } else { opts.parallel };
    let mut outcome = vec![Outcome::Pending; n];
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let (tx, rx) = mpsc::channel::<(usize, Result<(), ReconcileError>)>();
    std::thread::scope(|s| {
        let mut running = 0;
        loop {
            while running < limit
                && let Some(i) = ready.pop_front()
            {
                let op = &plan.ops[i];
                if let Some(&bad) = op.after.iter().find(|&&a| !matches!(outcome[a], Outcome::Done)) {
                    outcome[i] = Outcome::Skipped(format!(
                        "{} {} did not succeed",
                        plan.ops[bad].kind, plan.ops[bad].resource
                    ));
                    release(i, &dependants, &mut waiting, &mut ready);
                    continue;
                }
                let tx = tx.clone();
                let runner = &runner;
                running += 1;
                s.spawn(move || {
                    let _ = tx.send((i, runner.run(op)));
                });
            }
            if running == 0 {
                break;
            }
            let Ok((i, result)) = rx.recv() else { break };
            running -= 1;
            outcome[i] = match result {
                Ok(()) => Outcome::Done,
                Err(e) => Outcome::Failed(e.to_string()),
            };
            release(i, &dependants, &mut waiting, &mut ready);
        }
    });
    let failures: Vec<String> = plan
        .ops
        .iter()
        .zip(&outcome)
        .filter_map(|(op, o)| match o {
            Outcome::Failed(e) => Some(format!("{} {}: {e}", op.kind, op.resource)),
            Outcome::Skipped(why) => Some(format!("{} {}: skipped: {why}", op.kind, op.resource)),
            Outcome::Pending => Some(format!("{} {}: not run", op.kind, op.resource)),
            Outcome::Done => None,
        })
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ReconcileError::Failed { failures, total: n })
    }
}

/// Marks `i` finished for its dependants, queueing those with nothing left to wait for.
fn release(i: usize, dependants: &[Vec<usize>], waiting: &mut [usize], ready: &mut VecDeque<usize>) {
    for &d in &dependants[i] {
        waiting[d] -= 1;
        if waiting[d] == 0 {
            ready.push_back(d);
        }
    }
}

/// The image of each service a plan creates a container for, pulled first when missing.
fn resolve_images(
    engine: &Engine,
    project: &Project,
    plan: &Plan,
    opts: &ExecOptions,
    report: &dyn Report,
) -> Result<BTreeMap<String, ImageInfo>, ReconcileError> {
    let mut wanted: Vec<&str> = plan
        .ops
        .iter()
        .filter(|o| matches!(o.kind, Kind::Create | Kind::Recreate))
        .filter_map(|o| o.service.as_deref())
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut images = BTreeMap::new();
    if wanted.is_empty() {
        return Ok(images);
    }
    let store = Store::open(engine.root())?;
    for service in wanted {
        images.insert(
            service.to_string(),
            resolve_image(&store, project, service, opts.pull.as_deref(), report)?,
        );
    }
    Ok(images)
}

/// The image of one service, pulled first when missing (or always, by the policy: `--pull`,
/// else the service's `pull_policy`, else `missing`).
pub fn resolve_image(
    store: &Store,
    project: &Project,
    service: &str,
    pull: Option<&str>,
    report: &dyn Report,
) -> Result<ImageInfo, ReconcileError> {
    let doc = &project.canonical["services"][service];
    let name = project.image_of(service);
    let policy = pull
        .map(str::to_string)
        .or_else(|| doc["pull_policy"].as_str().map(str::to_string))
        .unwrap_or_else(|| "missing".into());
    let found = match store.lookup(&name) {
        Ok(r) => Some(r),
        Err(ImageError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let record = match (found, policy.as_str()) {
        (Some(r), p) if p != "always" => r,
        (None, "never") => {
            return Err(ReconcileError::Invalid {
                key: format!("services.{service}.image"),
                message: format!("no such image: {name} (and the pull policy is never)"),
            });
        }
        (None, _) if doc["image"].is_null() => {
            return Err(ReconcileError::Invalid {
                key: format!("services.{service}.build"),
                message: format!("image {name} must be built first (berth build {service})"),
            });
        }
        _ => {
            report.line(&format!("{service} Pulling {name}"));
            let reference = Reference::parse(&name)?;
            let credentials = DockerConfig::default_location().credentials(&reference.registry)?;
            let pulled = pull::pull(
                store,
                &reference,
                credentials,
                &PullOptions::default(),
                &crate::image::Quiet,
            )?;
            report.line(&format!("{service} Pulled"));
            store.lookup(pulled.id.as_str())?
        }
    };
    let config = store.config(&record)?;
    Ok(ImageInfo {
        name,
        id: record.id.to_string(),
        layers: store.layer_dirs(&record)?,
        defaults: config.config.unwrap_or_default(),
    })
}

/// What every operation needs.
struct Runner<'a> {
    engine: &'a Engine,
    project: &'a Project,
    desired: &'a Desired,
    images: BTreeMap<String, ImageInfo>,
    opts: &'a ExecOptions,
    report: &'a dyn Report,
}

impl Runner<'_> {
    fn run(&self, op: &Op) -> Result<(), ReconcileError> {
        let rt = &self.engine.runtime;
        let service = op.service.as_deref().unwrap_or_default();
        match op.kind {
            Kind::CreateNetwork => {
                self.create_network(&op.resource)?;
                self.report.line(&format!("Network {}  Created", op.resource));
            }
            Kind::CreateVolume => {
                create_volume(self.engine.root(), &op.resource, &self.project.name)?;
                self.report.line(&format!("Volume {}  Created", op.resource));
            }
            Kind::Create => {
                self.create(service, op.number, &op.resource)?;
                self.report.line(&format!("Container {}  Created", op.resource));
            }
            Kind::Start => {
                if !self.opts.no_deps {
                    wait_dependencies(self.engine, self.project, service, self.report)?;
                }
                rt.start(&rt.lookup(&op.resource)?, StartMode::Detached)?;
                self.report.line(&format!("Container {}  Started", op.resource));
            }
            Kind::Recreate => {
                self.engine.remove(&rt.lookup(&op.resource)?, self.opts.timeout)?;
                let c = self.create(service, op.number, &op.resource)?;
                self.report.line(&format!("Container {}  Recreated", op.resource));
                if !self.opts.no_deps {
                    wait_dependencies(self.engine, self.project, service, self.report)?;
                }
                rt.start(&c, StartMode::Detached)?;
                self.report.line(&format!("Container {}  Started", op.resource));
            }
            Kind::Restart => {
                let c = rt.lookup(&op.resource)?;
                self.engine.stop(&c, self.opts.timeout)?;
                if !self.opts.no_deps {
                    wait_dependencies(self.engine, self.project, service, self.report)?;
                }
                rt.start(&rt.refresh(&c)?, StartMode::Detached)?;
                self.report.line(&format!("Container {}  Restarted", op.resource));
            }
            Kind::Remove => {
                self.engine.remove(&rt.lookup(&op.resource)?, self.opts.timeout)?;
                self.report.line(&format!("Container {}  Removed", op.resource));
            }
        }
        Ok(())
    }

    /// Creates the network with full name `name` from its project entry.
    fn create_network(&self, name: &str) -> Result<(), ReconcileError> {
        let nets = self.project.canonical["networks"].as_object();
        let (key, doc) = nets
            .and_then(|m| m.iter().find(|(_, v)| v["name"].as_str() == Some(name)))
            .ok_or_else(|| ReconcileError::Invalid {
                key: "networks".into(),
                message: format!("no network is named {name}"),
            })?;
        let bad = |message: String| ReconcileError::Invalid {
            key: format!("networks.{key}"),
            message,
        };
        match doc["driver"].as_str() {
            None | Some("bridge") => {}
            Some(d) => return Err(bad(format!("driver {d:?} is not supported; berth has bridge networks"))),
        }
        let ipam = doc["ipam"]["config"].as_array().and_then(|a| a.first());
        let subnet = ipam
            .and_then(|c| c["subnet"].as_str())
            .map(|s| parse_prefix(s).map_err(|e| bad(e.to_string())))
            .transpose()?;
        let gateway = ipam
            .and_then(|c| c["gateway"].as_str())
            .map(|g| g.parse().map_err(|_| bad(format!("invalid gateway {g:?}"))))
            .transpose()?;
        let mut labels: BTreeMap<String, String> = doc["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        labels.insert(labels::PROJECT.into(), self.project.name.clone());
        labels.insert("com.docker.compose.network".into(), key.clone());
        self.engine.networks.create_network(&NetworkConfig {
            name: name.to_string(),
            domain: self.project.name.clone(),
            internal: doc["internal"].as_bool().unwrap_or(false),
            subnet,
            gateway,
            labels,
        })?;
        Ok(())
    }

    /// Creates replica `number` of `service` as `name`: volumes, host paths, the endpoint, then
    /// the container. A failure leaves no endpoint behind.
    fn create(&self, service: &str, number: u32, name: &str) -> Result<Container, ReconcileError> {
        let image = self.images.get(service).ok_or_else(|| ReconcileError::Invalid {
            key: format!("services.{service}.image"),
            message: "no image was resolved".into(),
        })?;
        let hash = self
            .desired
            .services
            .iter()
            .find(|s| s.name == service)
            .map(|s| s.hash.clone())
            .unwrap_or_default();
        let ctx = Context {
            project: self.project,
            root: self.engine.root(),
        };
        let t = translate::translate(ctx, service, number, name, &hash, image)?;
        create_translated(self.engine, self.project, service, image, t)
    }
}

/// Creates a translated container: its volumes (filled from the image when empty), host paths,
/// `volumes_from` mounts, shared network namespace or endpoint, then the container itself. A
/// failure leaves no endpoint behind.
pub fn create_translated(
    engine: &Engine,
    project: &Project,
    service: &str,
    image: &ImageInfo,
    mut t: translate::Translated,
) -> Result<Container, ReconcileError> {
    for v in &t.external_volumes {
        if !translate::volume_dir(engine.root(), v).exists() {
            return Err(ReconcileError::Invalid {
                key: format!("services.{service}.volumes"),
                message: format!("external volume {v} not found"),
            });
        }
    }
    for (volume, target) in &t.volumes {
        create_volume(engine.root(), volume, &project.name)?;
        // As Docker: an empty volume takes the image's content at its mount point.
        let dir = translate::volume_dir(engine.root(), volume);
        let empty = std::fs::read_dir(&dir)
            .map_err(ReconcileError::io("read", &dir))?
            .next()
            .is_none();
        if empty && !t.no_copy.contains(target) {
            prefill_volume(&image.layers, target, &dir)?;
        }
    }
    for p in &t.host_paths {
        if !p.exists() {
            std::fs::create_dir_all(p).map_err(ReconcileError::io("create", p))?;
        }
    }
    let rt = &engine.runtime;
    volumes_from(engine, project, service, &mut t.spec)?;
    match &t.net {
        NetMode::Endpoint | NetMode::Host | NetMode::None => {}
        NetMode::Service(s) => {
            let first = engine
                .service_containers(&project.name, s)?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    ReconcileError::Dependency(format!("service {s} has no container to share its network"))
                })?;
            t.spec.network = first.shared_network()?;
        }
        NetMode::Container(c) => t.spec.network = rt.lookup(c)?.shared_network()?,
    }
    let Some(endpoint) = &t.endpoint else {
        return Ok(rt.create(t.spec)?);
    };
    let nets = &engine.networks;
    // An endpoint left by a killed `up` is replaced.
    nets.disconnect(&endpoint.key)?;
    let record = nets.connect(endpoint)?;
    t.spec.network = NetworkSpec::Path(nets.layout().endpoint(&endpoint.key));
    t.spec.resolv_conf = Some(nets.resolv_conf(&endpoint.networks[0].network)?);
    let created = rt.create(t.spec).map_err(ReconcileError::from).and_then(|c| {
        let own = record.attachments.first().map(|a| a.address.to_string());
        if let Some(Err(e)) = own.map(|a| rt.add_own_address(&c, &a)) {
            let _ = rt.delete(&c, true);
            return Err(e.into());
        }
        Ok(c)
    });
    if created.is_err() {
        let _ = nets.disconnect(&endpoint.key);
    }
    created
}

/// Adds the mounts of `volumes_from` sources (a service's first container, or a named one),
/// read-only when asked; a target the service mounts itself is left alone.
fn volumes_from(
    engine: &Engine,
    project: &Project,
    service: &str,
    spec: &mut crate::runtime::ContainerSpec,
) -> Result<(), ReconcileError> {
    let Some(svc) = project.services.get(service) else {
        return Ok(());
    };
    for entry in &svc.volumes_from {
        let (source, mode) = match entry.strip_prefix("container:") {
            Some(rest) => {
                let (name, mode) = rest.split_once(':').unwrap_or((rest, "rw"));
                (engine.runtime.lookup(name)?, mode)
            }
            None => {
                let (s, mode) = entry.split_once(':').unwrap_or((entry, "rw"));
                let first = engine
                    .service_containers(&project.name, s)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        ReconcileError::Dependency(format!("service {s} has no container to share volumes"))
                    })?;
                (first, mode)
            }
        };
        for m in &source.config.spec.mounts {
            if matches!(m.kind, crate::runtime::MountKind::Tmpfs { .. })
                || spec.mounts.iter().any(|x| x.target == m.target)
            {
                continue;
            }
            let mut m = m.clone();
            m.read_only |= mode == "ro";
            spec.mounts.push(m);
        }
    }
    Ok(())
}

/// Creates a volume's directory with its owner label, unless it exists.
pub fn create_volume(root: &Path, name: &str, project: &str) -> Result<(), ReconcileError> {
    let dir = translate::volume_dir(root, name);
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).map_err(ReconcileError::io("create", &dir))?;
    let meta = serde_json::json!({ "labels": { labels::PROJECT: project } });
    let path = root.join("volumes").join(name).join("volume.json");
    std::fs::write(&path, meta.to_string()).map_err(ReconcileError::io("write", &path))
}

/// The project a volume was created for, if any.
pub fn volume_project(root: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(root.join("volumes").join(name).join("volume.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["labels"][labels::PROJECT].as_str().map(str::to_string)
}

/// Fills a new volume with what the image has at the mount target, as Docker does: layers from
/// the bottom up, so upper ones win. Whiteouts are not applied (a file an upper layer deleted may
/// appear); nothing outside the target is read, since symlinks are copied as links.
fn prefill_volume(layers: &[PathBuf], target: &str, dir: &Path) -> Result<(), ReconcileError> {
    let rel = target.trim_start_matches('/');
    for layer in layers.iter().rev() {
        let src = layer.join(rel);
        // Only a real directory inside the layer; a symlinked target is not followed.
        match std::fs::symlink_metadata(&src) {
            Ok(m) if m.is_dir() => copy_tree(&src, dir)?,
            _ => {}
        }
    }
    Ok(())
}

/// Copies a directory tree, keeping modes, owners and symlinks.
fn copy_tree(src: &Path, dst: &Path) -> Result<(), ReconcileError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(src).map_err(ReconcileError::io("read", src))?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(ReconcileError::io("chmod", dst))?;
    let _ = std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()));
    for entry in std::fs::read_dir(src).map_err(ReconcileError::io("read", src))? {
        let entry = entry.map_err(ReconcileError::io("read", src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let m = std::fs::symlink_metadata(&from).map_err(ReconcileError::io("read", &from))?;
        let ft = m.file_type();
        if ft.is_dir() {
            if !to.exists() {
                std::fs::create_dir(&to).map_err(ReconcileError::io("create", &to))?;
            }
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            let link = std::fs::read_link(&from).map_err(ReconcileError::io("read", &from))?;
            let _ = std::fs::remove_file(&to);
            std::os::unix::fs::symlink(&link, &to).map_err(ReconcileError::io("create", &to))?;
            let _ = std::os::unix::fs::lchown(&to, Some(m.uid()), Some(m.gid()));
        } else if ft.is_file() {
            std::fs::copy(&from, &to).map_err(ReconcileError::io("copy", &from))?;
            let _ = std::os::unix::fs::lchown(&to, Some(m.uid()), Some(m.gid()));
        }
    }
    Ok(())
}

/// Waits until every dependency of `service` meets its `depends_on` condition.
pub fn wait_dependencies(
    engine: &Engine,
    project: &Project,
    service: &str,
    report: &dyn Report,
) -> Result<(), ReconcileError> {
    let Some(svc) = project.services.get(service) else {
        return Ok(());
    };
    for (dep, cond) in &svc.depends_on {
        let condition = if cond.condition.is_empty() {
            "service_started"
        } else {
            cond.condition.as_str()
        };
        let containers = engine.service_containers(&project.name, dep)?;
        if containers.is_empty() {
            if cond.required {
                return Err(ReconcileError::Dependency(format!("service {dep} has no container")));
            }
            report.line(&format!("{service}: optional dependency {dep} is not running"));
            continue;
        }
        for c in containers {
            let met = match condition {
                "service_healthy" => wait_healthy(engine, &c),
                "service_completed_successfully" => {
                    let code = engine.runtime.wait(&c)?;
                    if code == 0 {
                        Ok(())
                    } else {
                        Err(ReconcileError::Dependency(format!(
                            "service {dep} didn't complete successfully: exit {code}"
                        )))
                    }
                }
                _ => Ok(()),
            };
            match met {
                Ok(()) => {}
                Err(e) if !cond.required => report.line(&format!("{service}: optional dependency {dep}: {e}")),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Polls a container until its healthcheck reports healthy.
fn wait_healthy(engine: &Engine, c: &Container) -> Result<(), ReconcileError> {
    let name = c.name().to_string();
    loop {
        let c = engine.runtime.refresh(c)?;
        if !c.is_running() {
            return Err(ReconcileError::Dependency(format!(
                "container {name} exited ({})",
                c.state.exit_code.unwrap_or(-1)
            )));
        }
        let checked = c.config.spec.healthcheck.as_ref().is_some_and(|h| h.enabled());
        match health_status(&c) {
            None if !checked => {
                return Err(ReconcileError::Dependency(format!(
                    "container {name} has no healthcheck configured"
                )));
            }
            Some(HealthStatus::Healthy) => return Ok(()),
            Some(HealthStatus::Unhealthy) => {
                return Err(ReconcileError::Dependency(format!("container {name} is unhealthy")));
            }
            None | Some(HealthStatus::Starting) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The health status the supervisor recorded (`starting`, `healthy`, `unhealthy`), if the
/// container runs with a healthcheck.
pub fn health_status(c: &Container) -> Option<HealthStatus> {
    c.state.health.as_ref().filter(|_| c.is_running()).map(|h| h.status)
}

/// Waits until every container is running, and healthy when it has a healthcheck (`up --wait`);
/// a container that stops (other than a one-shot that exited 0 with no restart policy) or turns
/// unhealthy is an error, as is `timeout`.
pub fn wait_ready(engine: &Engine, containers: &[Container], timeout: Option<Duration>) -> Result<(), ReconcileError> {
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    for c in containers {
        loop {
            let c = engine.runtime.refresh(c)?;
            let checked = c.config.spec.healthcheck.as_ref().is_some_and(|h| h.enabled());
            if !c.is_running() {
                let code = c.state.exit_code.unwrap_or(-1);
                if code == 0 && c.config.spec.restart == crate::runtime::RestartPolicy::No {
                    break;
                }
                return Err(ReconcileError::Dependency(format!(
                    "container {} exited ({code})",
                    c.name()
                )));
            }
            match health_status(&c) {
                Some(HealthStatus::Unhealthy) => {
                    return Err(ReconcileError::Dependency(format!(
                        "container {} is unhealthy",
                        c.name()
                    )));
                }
                Some(HealthStatus::Healthy) => break,
                _ if !checked && c.state.status == crate::runtime::state::Status::Running => break,
                _ => {}
            }
            if deadline.is_some_and(|d| std::time::Instant::now() > d) {
                return Err(ReconcileError::Dependency(format!(
                    "timed out waiting for container {} to be ready",
                    c.name()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}
