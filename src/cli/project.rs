//! The Compose verbs on a project: `up`, `down`, `ps`, `logs`. Flags and output follow Docker
//! Compose v2; the work is the reconciler's.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;

use super::container::{command_text, human_duration, since, status_text, write_table};
use super::{Cli, Result};
use crate::compose::{self, LoadError, Project};
use crate::graph::ServiceGraph;
use crate::reconcile::build::BuildOptions;
use crate::reconcile::down::{self, DownOptions};
use crate::reconcile::execute::{self, Engine, ExecOptions};
use crate::reconcile::observed::{self, labels};
use crate::reconcile::translate::ENDPOINT_LABEL;
use crate::reconcile::{self, plan};
use crate::runtime::Container;
use crate::runtime::lifecycle::{LogRecord, read_log};

// `berth up` flags.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Detached mode: start the containers and return.
    #[arg(short, long)]
    pub detach: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Recreate containers even if their configuration is unchanged.
    #[arg(long)]
    pub force_recreate: bool,
    /// Never recreate existing containers.
    #[arg(long, conflicts_with = "force_recreate")]
    pub no_recreate: bool,
    /// Remove containers of services not in the project.
    #[arg(long)]
    pub remove_orphans: bool,
    /// Replicas of a service: `SERVICE=N` (repeatable).
    #[arg(long)]
    pub scale: Vec<String>,
    /// Create without starting.
    #[arg(long)]
    pub no_start: bool,
    /// Pull images: `missing` (default), `always`, `never`.
    #[arg(long, value_parser = ["missing", "always", "never"])]
    pub pull: Option<String>,
    /// Build images before starting containers (services with `build:`).
    #[arg(long)]
    pub build: bool,
    /// Seconds to wait for containers to stop when recreating or stopping.
    #[arg(short = 't', long = "timeout")]
    pub timeout: Option<u64>,
    /// Operations at once (default: unlimited, or COMPOSE_PARALLEL_LIMIT).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Don't start the services the named ones depend on.
    #[arg(long)]
    pub no_deps: bool,
    /// Wait until the services are running and healthy (implies -d).
    #[arg(long)]
    pub wait: bool,
    /// Seconds `--wait` waits at most.
    #[arg(long, value_name = "SECONDS")]
    pub wait_timeout: Option<u64>,
    /// Stop every container when one stops (attached mode).
    #[arg(long, conflicts_with = "detach")]
    pub abort_on_container_exit: bool,
    /// Stop every container when one fails (attached mode).
    #[arg(long, conflicts_with_all = ["detach", "abort_on_container_exit"])]
    pub abort_on_container_failure: bool,
    /// Return this service's exit code (implies --abort-on-container-exit).
    #[arg(long, value_name = "SERVICE", conflicts_with = "detach")]
    pub exit_code_from: Option<String>,
    /// Show timestamps in attached mode.
    #[arg(long)]
    pub timestamps: bool,
    /// No colours in attached mode.
    #[arg(long)]
    pub no_color: bool,
    /// No prefix in attached mode.
    #[arg(long)]
    pub no_log_prefix: bool,
    /// Attach to these services only (repeatable).
    #[arg(long, value_name = "SERVICE")]
    pub attach: Vec<String>,
    /// Don't attach to these services (repeatable).
    #[arg(long, value_name = "SERVICE")]
    pub no_attach: Vec<String>,
    /// Services to bring up (with their dependencies); default all.
    pub services: Vec<String>,
}

// `berth down` flags.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// Also remove named volumes declared in the project and anonymous volumes.
    #[arg(short, long)]
    pub volumes: bool,
    /// Remove containers of services not in the project.
    #[arg(long)]
    pub remove_orphans: bool,
    /// Seconds to wait for containers to stop before SIGKILL.
    #[arg(short = 't', long = "timeout")]
    pub timeout: Option<u64>,
    /// Also remove images: `local` (those a build named) or `all` (every service's).
    #[arg(long, value_parser = ["local", "all"])]
    pub rmi: Option<String>,
}

// `berth ps` flags.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show stopped containers too.
    #[arg(short, long)]
    pub all: bool,
    /// Only ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Only service names.
    #[arg(long)]
    pub services: bool,
    /// Only containers in this state (`running`, `exited`, `created`, `paused`, `restarting`, `dead`); repeatable.
    #[arg(long)]
    pub status: Vec<String>,
    /// `table` (default) or `json` (JSON Lines).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// Filter: `status=STATE` (as Compose, the one filter it has).
    #[arg(long)]
    pub filter: Vec<String>,
    /// Services to show; default all.
    pub service: Vec<String>,
}

// `berth logs` flags.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow the output.
    #[arg(short, long)]
    pub follow: bool,
    /// Lines from the end of each container's log, or `all`.
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    pub timestamps: bool,
    /// No container-name prefix.
    #[arg(long)]
    pub no_log_prefix: bool,
    /// No colours.
    #[arg(long)]
    pub no_color: bool,
    /// Only lines since a time: RFC 3339, or a duration ago (`10m`, `1h30m`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only lines before a time: RFC 3339, or a duration ago.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this replica of each service.
    #[arg(long)]
    pub index: Option<u32>,
    /// Services to show; default all.
    pub services: Vec<String>,
}

/// `--since`/`--until`: an RFC 3339 time, or a Go duration before now.
fn parse_time(flag: &str, s: &str) -> Result<jiff::Timestamp> {
    if let Ok(ns) = crate::compose::units::parse_duration(s) {
        let ago = jiff::SignedDuration::from_nanos(i64::try_from(ns).unwrap_or(i64::MAX));
        return jiff::Timestamp::now()
            .checked_sub(ago)
            .map_err(|e| anyhow!("invalid --{flag} {s:?}: {e}"));
    }
    s.parse::<jiff::Timestamp>()
        .map_err(|e| anyhow!("invalid --{flag} {s:?}: want RFC 3339 or a duration like 10m ({e})"))
}

/// Fails unless berth runs as root, which containers need.
fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("containers need root (namespaces, mounts and cgroups); run berth with sudo");
    }
    Ok(())
}

/// The engine under the state root.
fn engine(cli: &Cli) -> Result<Engine> {
    Engine::new(&cli.root).with_context(|| format!("state root {}", cli.root.display()))
}

/// Loads the project with `services` selected.
fn load(cli: &Cli, services: &[String]) -> Result<Project> {
    let opts = cli.load_options(std::env::vars(), services, true)?;
    Ok(compose::load(&opts)?)
}

/// The progress lines of the executor, to stderr like Compose's.
fn say(line: &str) {
    eprintln!(" ✔ {line}");
}

// `berth build` flags.
#[derive(Debug, Clone, Args)]
pub struct BuildArgs {
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Pull base images even when stored.
    #[arg(long)]
    pub pull: bool,
    /// A build-time variable, `NAME=value` or `NAME` (from the environment); repeatable.
    #[arg(long = "build-arg", value_name = "NAME[=VALUE]")]
    pub build_args: Vec<String>,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Services; default every service with a `build` section.
    pub services: Vec<String>,
}

/// `berth build`: builds the services' images, independent ones at once.
pub fn build(cli: &Cli, args: &BuildArgs, out: &mut dyn Write) -> Result<i32> {
    let project = load(cli, &args.services)?;
    let names: Vec<String> = if args.services.is_empty() {
        project.service_names().map(str::to_string).collect()
    } else {
        args.services.clone()
    };
    let opts = BuildOptions {
        no_cache: args.no_cache,
        pull: args.pull,
        args: super::build::parse_build_args(&args.build_args),
    };
    let built = build_missing(cli, &project, &names, true, &opts, args.quiet)?;
    if !args.quiet {
        for (service, id) in &built {
            writeln!(out, "{service}  Built {}", id.short())?;
        }
    }
    Ok(0)
}

/// Builds the images of `services` that have a `build` section and are missing (or all of them
/// with `always`), showing each build's steps prefixed with its service.
fn build_missing(
    cli: &Cli,
    project: &Project,
    services: &[String],
    always: bool,
    opts: &BuildOptions,
    quiet: bool,
) -> Result<BTreeMap<String, crate::image::reference::Digest>> {
    let store = crate::image::store::Store::open(&cli.root)?;
    let mut wanted = Vec::new();
    for s in services {
        if reconcile::build::needs_build(&store, project, s, always)? {
            wanted.push(s.clone());
        }
    }
    if wanted.is_empty() {
        return Ok(BTreeMap::new());
    }
    require_root()?;
    let runtime = crate::runtime::Runtime::new(&cli.root)?;
    let width = wanted.iter().map(String::len).max().unwrap_or(0);
    let display = |service: &str| -> Box<dyn crate::build::Progress + Send> {
        Box::new(super::build::ClassicDisplay::new(
            quiet,
            &format!("{service:width$} | "),
        ))
    };
    Ok(reconcile::build::build_services(
        &store, &runtime, project, &wanted, opts, &display,
    )?)
}

/// Records the id of each service's stored image in `desired`, so containers made from another
/// image are recreated.
fn image_ids(cli: &Cli, project: &Project, desired: &mut plan::Desired) -> Result<()> {
    if !cli.root.join("images").exists() {
        return Ok(());
    }
    let store = crate::image::store::Store::open(&cli.root)?;
    for s in &mut desired.services {
        s.image_id = store.lookup(&project.image_of(&s.name)).ok().map(|r| r.id.to_string());
    }
    Ok(())
}

/// `berth up`.
pub fn up(cli: &Cli, args: &UpArgs, out: &mut dyn Write) -> Result<i32> {
    let project = load(cli, &args.services)?;
    let mut scale = BTreeMap::new();
    for s in &args.scale {
        let (svc, n) = s
            .split_once('=')
            .and_then(|(k, v)| Some((k, v.parse::<u32>().ok()?)))
            .ok_or_else(|| anyhow!("invalid --scale {s:?}: want SERVICE=N"))?;
        if !project.services.contains_key(svc) {
            bail!("invalid --scale {s:?}: no such service: {svc}");
        }
        scale.insert(svc.to_string(), n);
    }
    let options = plan::Options {
        force_recreate: args.force_recreate,
        no_recreate: args.no_recreate,
        remove_orphans: args.remove_orphans,
        scale,
        no_start: args.no_start,
    };
    let mut desired = reconcile::desired(&project)?;
    if args.no_deps && !args.services.is_empty() {
        desired.services.retain(|s| args.services.contains(&s.name));
    }
    let names: Vec<String> = desired.services.iter().map(|s| s.name.clone()).collect();
    if !args.dry_run {
        build_missing(cli, &project, &names, args.build, &BuildOptions::default(), false)?;
    }
    image_ids(cli, &project, &mut desired)?;
    if args.dry_run {
        let observed = observed::observe(&cli.root, &project.name)?;
        write!(out, "{}", plan::plan(&desired, &observed, &options))?;
        return Ok(0);
    }
    require_root()?;
    if let Some(s) = &args.exit_code_from
        && !project.services.contains_key(s)
    {
        bail!("invalid --exit-code-from {s:?}: no such service");
    }
    let engine = engine(cli)?;
    let _lock = engine.lock(&project.name, &|m| eprintln!("{m}"))?;
    let observed = observed::observe(&cli.root, &project.name)?;
    let plan = plan::plan(&desired, &observed, &options);
    for w in &plan.warnings {
        eprintln!("WARN {w}");
    }
    let parallel = match args.parallel {
        Some(n) => n,
        None => std::env::var("COMPOSE_PARALLEL_LIMIT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    };
    let exec = ExecOptions {
        parallel,
        timeout: args.timeout,
        pull: args.pull.clone(),
        no_deps: args.no_deps,
    };
    execute::execute(&engine, &project, &desired, &plan, &exec, &say)?;
    if args.wait {
        let chosen: Vec<String> = desired.services.iter().map(|s| s.name.clone()).collect();
        let list = service_containers(&engine, &project.name, &chosen)?;
        execute::wait_ready(&engine, &list, args.wait_timeout.map(Duration::from_secs))?;
        return Ok(0);
    }
    if args.detach || args.no_start {
        return Ok(0);
    }
    drop(_lock);
    let mut attached = service_containers(&engine, &project.name, &args.services)?;
    attached.retain(|c| {
        let s = service(c).to_string();
        (args.attach.is_empty() || args.attach.contains(&s)) && !args.no_attach.contains(&s)
    });
    let levels = ServiceGraph::new(&project)?.stop_levels();
    attach(&engine, &project.name, attached, &levels, args, out)
}

/// Why an attached `up` ends.
enum Ending {
    /// Every container stopped by itself.
    AllExited,
    /// A container stopped (or failed) and took the others down: its exit code.
    Aborted(i32),
    /// Ctrl-C.
    Interrupted,
}

/// Attached mode: streams every container's log until all have stopped. The first Ctrl-C stops
/// them gracefully (dependants first, a level at a time), a second one kills them.
fn attach(
    engine: &Engine,
    project: &str,
    containers: Vec<Container>,
    stop_levels: &[Vec<String>],
    args: &UpArgs,
    out: &mut dyn Write,
) -> Result<i32> {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.thread_block()?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    let short = |c: &Container| short_name(project, c);
    let names: Vec<String> = containers.iter().map(short).collect();
    eprintln!("Attaching to {}", names.join(", "));
    let width = names.iter().map(String::len).max().unwrap_or(0);
    let printer = LogPrinter {
        width,
        prefix: !args.no_log_prefix,
        timestamps: args.timestamps,
        color: !args.no_color && nix::unistd::isatty(std::io::stdout()).unwrap_or(false),
        since: None,
        until: None,
    };
    let mut followed: Vec<(Container, String, usize, u64)> = containers
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let p = short(&c);
            (c, p, i, 0)
        })
        .collect();
    // Ctrl-C and aborts stop every container of the project, attached or not, as Compose does.
    let everyone = service_containers(engine, project, &[])?;
    let mut exited = vec![false; followed.len()];
    let mut ending = None;
    let mut interrupts = 0;
    let mut stopper: Option<std::thread::JoinHandle<()>> = None;
    let abort_on_exit = args.abort_on_container_exit || args.exit_code_from.is_some();
    loop {
        let batch = read_new(&mut followed)?;
        printer.print(out, &followed, batch)?;
        let mut all_done = true;
        let mut abort = false;
        for (k, (c, prefix, _, _)) in followed.iter_mut().enumerate() {
            let now = engine.runtime.refresh(c)?;
            if now.is_running() {
                all_done = false;
                continue;
            }
            if !exited[k] && now.state.status != crate::runtime::state::Status::Created {
                exited[k] = true;
                let code = now.state.exit_code.unwrap_or(-1);
                writeln!(out, "{prefix} exited with code {code}")?;
                let aborts = abort_on_exit || (args.abort_on_container_failure && code != 0);
                if aborts && ending.is_none() && stopper.is_none() {
                    ending = Some(Ending::Aborted(code));
                    abort = true;
                }
            }
            *c = now;
        }
        if abort {
            eprintln!("Aborting on container exit...");
            stopper = Some(stop_all(engine, &everyone, stop_levels, args.timeout));
        }
        if all_done {
            break;
        }
        while let Ok(Some(_)) = signals.read_signal() {
            interrupts += 1;
            if interrupts == 1 {
                eprintln!("Gracefully stopping... (press Ctrl+C again to force)");
                ending.get_or_insert(Ending::Interrupted);
                if stopper.is_none() {
                    stopper = Some(stop_all(engine, &everyone, stop_levels, args.timeout));
                }
            } else {
                for c in &everyone {
                    let _ = engine.runtime.kill(c, Signal::SIGKILL as i32);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(h) = stopper {
        let _ = h.join();
    }
    let ending = ending.unwrap_or(Ending::AllExited);
    Ok(match (&args.exit_code_from, ending) {
        (Some(svc), _) => followed
            .iter()
            .find(|(c, ..)| service(c) == svc)
            .and_then(|(c, ..)| c.state.exit_code)
            .unwrap_or(0),
        (None, Ending::Aborted(code)) => code,
        (None, Ending::Interrupted) => 130,
        (None, Ending::AllExited) => 0,
    })
}

/// Stops containers in the background, dependants first, a level at a time.
fn stop_all(
    engine: &Engine,
    containers: &[Container],
    stop_levels: &[Vec<String>],
    timeout: Option<u64>,
) -> std::thread::JoinHandle<()> {
    let engine = engine.clone();
    let containers = containers.to_vec();
    let levels = stop_levels.to_vec();
    std::thread::spawn(move || {
        let results = down::in_levels(leveled(&containers, &levels), |c| {
            let c = engine.runtime.refresh(c)?;
            if c.is_running() {
                engine.stop(&c, timeout)?;
                say(&format!("Container {}  Stopped", c.name()));
            }
            Ok(())
        });
        for (c, r) in results {
            if let Err(e) = r {
                eprintln!("error: container {c}: {e}");
            }
        }
    })
}

/// `berth down`. Without a compose file, `-p NAME` names the project and its containers are
/// found by their labels.
pub fn down(cli: &Cli, args: &DownArgs, out: &mut dyn Write) -> Result<i32> {
    require_root()?;
    let (name, loaded, mut levels) = project_and_levels(cli)?;
    levels.reverse();
    let volumes = match &loaded {
        Some(p) if args.volumes => reconcile::desired(p)?.volumes,
        _ => Vec::new(),
    };
    let engine = engine(cli)?;
    let _lock = engine.lock(&name, &|m| eprintln!("{m}"))?;
    // Without the file every container counts as the project's own.
    let remove_orphans = args.remove_orphans || levels.is_empty();
    let opts = DownOptions {
        timeout: args.timeout,
        volumes: args.volumes,
        remove_orphans,
    };
    down::down(&engine, &name, &levels, &volumes, &opts, &say)?;
    if let (Some(which), Some(project)) = (&args.rmi, &loaded) {
        remove_images(cli, project, which, out)?;
    }
    Ok(0)
}

/// The `-p` name, when there is no compose file to load, checked as the loader checks it.
fn flag_project_name(cli: &Cli) -> Result<String> {
    let name = cli.project_name.clone().unwrap_or_default();
    if !crate::compose::is_valid_project_name(&name) {
        bail!(
            "invalid project name {name:?}: it must contain only lowercase letters, digits, dashes and underscores, and start with a letter or digit"
        );
    }
    Ok(name)
}

/// Whether loading failed only because there is no compose file.
fn is_not_found(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<LoadError>(), Some(LoadError::NotFound { .. }))
}

/// The project and its name; without a compose file, only the name `-p` gives.
fn project_or_name(cli: &Cli) -> Result<(String, Option<Project>)> {
    match load(cli, &[]) {
        Ok(p) => Ok((p.name.clone(), Some(p))),
        Err(e) if is_not_found(&e) && cli.project_name.is_some() => Ok((flag_project_name(cli)?, None)),
        Err(e) => Err(e),
    }
}

/// The project's name: from the files, or `-p` when there are none.
fn project_name(cli: &Cli) -> Result<String> {
    Ok(project_or_name(cli)?.0)
}

/// The project's containers of the given services (all when empty), one-off ones left out.
fn service_containers(engine: &Engine, project: &str, services: &[String]) -> Result<Vec<Container>> {
    let list = engine.containers(project)?;
    if let Some(s) = services.iter().find(|s| !list.iter().any(|c| service(c) == s.as_str())) {
        bail!("no such service: {s}");
    }
    Ok(list
        .into_iter()
        .filter(|c| !labels::is_one_off(c))
        .filter(|c| services.is_empty() || services.iter().any(|s| s == service(c)))
        .collect())
}

use labels::service;

/// The container of replica `index` of `svc` in `list`.
fn replica<'a>(list: &'a [Container], svc: &str, index: u32) -> Option<&'a Container> {
    list.iter().find(|c| service(c) == svc && labels::number(c) == index)
}

/// `berth ps`.
pub fn ps(cli: &Cli, args: &PsArgs, out: &mut dyn Write) -> Result<i32> {
    let name = project_name(cli)?;
    let engine = engine(cli)?;
    let mut list = service_containers(&engine, &name, &args.service)?;
    let mut statuses = args.status.clone();
    for f in &args.filter {
        match f.split_once('=') {
            Some(("status", v)) => statuses.push(v.to_string()),
            _ => bail!("invalid filter {f:?}: the supported filter is status=STATE"),
        }
    }
    list.retain(|c| {
        let state = c.state.status.to_string();
        if !statuses.is_empty() {
            return statuses.contains(&state);
        }
        args.all || c.is_running()
    });
    if args.services {
        let mut names: Vec<&str> = list.iter().map(service).collect();
        names.dedup();
        for s in names {
            writeln!(out, "{s}")?;
        }
        return Ok(0);
    }
    if args.quiet {
        for c in &list {
            writeln!(out, "{}", c.id())?;
        }
        return Ok(0);
    }
    let endpoints = engine.networks.state()?.endpoints;
    let publishers = |c: &Container| -> Vec<serde_json::Value> {
        let key = c.config.spec.labels.get(ENDPOINT_LABEL);
        key.and_then(|k| endpoints.get(k))
            .map(|e| {
                e.ports
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "URL": p.host_ip.to_string(),
                            "TargetPort": p.container_port,
                            "PublishedPort": p.bound,
                            "Protocol": p.proto.as_str(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    if args.format == "json" {
        for c in &list {
            let publishers = publishers(c);
            let networks: Vec<String> = c
                .config
                .spec
                .labels
                .get(ENDPOINT_LABEL)
                .and_then(|k| endpoints.get(k))
                .map(|e| e.attachments.iter().map(|a| a.network.clone()).collect())
                .unwrap_or_default();
            let labels: Vec<String> = c.config.spec.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let doc = serde_json::json!({
                "Command": command_text(c, true),
                "CreatedAt": c.config.created,
                "ExitCode": c.state.exit_code.unwrap_or(0),
                "Health": execute::health_status(c).map(|h| h.to_string()).unwrap_or_default(),
                "ID": c.id(),
                "Image": c.config.spec.image,
                "Labels": labels.join(","),
                "LocalVolumes": c.config.spec.mounts.iter().filter(|m| matches!(m.kind, crate::runtime::MountKind::Volume { .. })).count().to_string(),
                "Mounts": "",
                "Name": c.name(),
                "Names": c.name(),
                "Networks": networks.join(","),
                "Ports": ports_text(&publishers),
                "Project": name,
                "Publishers": publishers,
                "RunningFor": format!("{} ago", human_duration(since(&c.config.created))),
                "Service": service(c),
                "Size": "0B",
                "State": c.state.status.to_string(),
                "Status": status_text(c),
            });
            writeln!(out, "{doc}")?;
        }
        return Ok(0);
    }
    let mut rows = vec![vec![
        "NAME".to_string(),
        "IMAGE".into(),
        "COMMAND".into(),
        "SERVICE".into(),
        "CREATED".into(),
        "STATUS".into(),
        "PORTS".into(),
    ]];
    for c in &list {
        rows.push(vec![
            c.name().to_string(),
            c.config.spec.image.clone(),
            command_text(c, false),
            service(c).to_string(),
            format!("{} ago", human_duration(since(&c.config.created))),
            status_text(c),
            ports_text(&publishers(c)),
        ]);
    }
    write_table(out, &rows)?;
    Ok(0)
}

/// Ports as Compose's table shows them: `127.0.0.1:8080->80/tcp`.
fn ports_text(publishers: &[serde_json::Value]) -> String {
    publishers
        .iter()
        .map(|p| {
            format!(
                "{}:{}->{}/{}",
                p["URL"].as_str().unwrap_or_default(),
                p["PublishedPort"],
                p["TargetPort"],
                p["Protocol"].as_str().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `berth logs`: every container's log, merged in time order, prefixed with its name.
pub fn logs(cli: &Cli, args: &LogsArgs, out: &mut dyn Write) -> Result<i32> {
    let name = project_name(cli)?;
    let engine = engine(cli)?;
    let mut list = service_containers(&engine, &name, &args.services)?;
    if let Some(i) = args.index {
        list.retain(|c| labels::number(c) == i);
    }
    let since = args.since.as_deref().map(|s| parse_time("since", s)).transpose()?;
    let until = args.until.as_deref().map(|s| parse_time("until", s)).transpose()?;
    let tail = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(n.parse::<usize>().map_err(|_| anyhow!("invalid --tail {n:?}"))?),
    };
    let prefix_of = |c: &Container| short_name(&name, c);
    let width = list.iter().map(|c| prefix_of(c).len()).max().unwrap_or(0);
    let color = !args.no_color && nix::unistd::isatty(std::io::stdout()).unwrap_or(false);
    let printer = LogPrinter {
        width,
        prefix: !args.no_log_prefix,
        timestamps: args.timestamps,
        color,
        since,
        until,
    };
    let mut followed: Vec<(Container, String, usize, u64)> = Vec::new();
    let mut batch: Vec<(usize, LogRecord)> = Vec::new();
    for (i, c) in list.into_iter().enumerate() {
        let (recs, offset) = read_log(&c.dir.log(), 0, tail)?;
        batch.extend(recs.into_iter().map(|r| (i, r)));
        let p = prefix_of(&c);
        followed.push((c, p, i, offset));
    }
    printer.print(out, &followed, batch)?;
    if !args.follow {
        return Ok(0);
    }
    loop {
        let any_running = followed
            .iter()
            .any(|(c, ..)| engine.runtime.refresh(c).is_ok_and(|c| c.is_running()));
        let batch = read_new(&mut followed)?;
        printer.print(out, &followed, batch)?;
        if !any_running {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The records written since the last read of each followed container's log (its offset moves on).
fn read_new(followed: &mut [(Container, String, usize, u64)]) -> Result<Vec<(usize, LogRecord)>> {
    let mut batch = Vec::new();
    for (c, _, i, offset) in followed {
        let (recs, next) = read_log(&c.dir.log(), *offset, None)?;
        *offset = next;
        batch.extend(recs.into_iter().map(|r| (*i, r)));
    }
    Ok(batch)
}

/// A container's name without its project's prefix, as log lines show it (`web-1`).
fn short_name(project: &str, c: &Container) -> String {
    c.name()
        .strip_prefix(&format!("{project}-"))
        .unwrap_or(c.name())
        .to_string()
}

/// How `logs` writes records.
struct LogPrinter {
    width: usize,
    prefix: bool,
    timestamps: bool,
    color: bool,
    since: Option<jiff::Timestamp>,
    until: Option<jiff::Timestamp>,
}

impl LogPrinter {
    /// Writes a batch in time order (RFC 3339 times of one zone sort as text).
    fn print(
        &self,
        out: &mut dyn Write,
        containers: &[(Container, String, usize, u64)],
        mut batch: Vec<(usize, LogRecord)>,
    ) -> Result<()> {
        batch.sort_by(|a, b| a.1.time.cmp(&b.1.time));
        if self.since.is_some() || self.until.is_some() {
            batch.retain(|(_, r)| {
                let Ok(t) = r.time.parse::<jiff::Timestamp>() else {
                    return true;
                };
                self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
            });
        }
        for (i, r) in batch {
            let mut line = String::new();
            if self.prefix {
                let p = &containers[i].1;
                if self.color {
                    let code = 31 + (i % 6);
                    line.push_str(&format!("\x1b[{code}m{p:<w$}  |\x1b[0m ", w = self.width));
                } else {
                    line.push_str(&format!("{p:<w$}  | ", w = self.width));
                }
            }
            if self.timestamps {
                line.push_str(&r.time);
                line.push(' ');
            }
            line.push_str(&r.log);
            if !line.ends_with('\n') {
                line.push('\n');
            }
            out.write_all(line.as_bytes())?;
        }
        out.flush()?;
        Ok(())
    }
}

// Flags of the verbs that act on services' containers.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// Seconds to wait for a stop before SIGKILL (stop, restart).
    #[arg(short = 't', long = "timeout")]
    pub timeout: Option<u64>,
    /// Services; default all.
    pub services: Vec<String>,
}

/// The simple life-cycle verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Stop, dependants first.
    Stop,
    /// Start, dependencies first (waiting on their conditions).
    Start,
    /// Stop then start.
    Restart,
    /// Freeze.
    Pause,
    /// Thaw.
    Unpause,
}

/// The project, its name and its start levels; without a compose file (`-p NAME` only), one
/// level of whatever services its containers have.
fn project_and_levels(cli: &Cli) -> Result<(String, Option<Project>, Vec<Vec<String>>)> {
    let (name, project) = project_or_name(cli)?;
    let levels = match &project {
        Some(p) => ServiceGraph::new(p)?.start_levels(),
        None => Vec::new(),
    };
    Ok((name, project, levels))
}

/// Groups containers by levels of services; containers of services in no level go last.
fn leveled<'a>(containers: &'a [Container], levels: &[Vec<String>]) -> Vec<Vec<&'a Container>> {
    let mut out: Vec<Vec<&Container>> = levels
        .iter()
        .map(|l| {
            containers
                .iter()
                .filter(|c| l.iter().any(|s| s == service(c)))
                .collect()
        })
        .collect();
    out.push(
        containers
            .iter()
            .filter(|c| !levels.iter().flatten().any(|s| s == service(c)))
            .collect(),
    );
    out
}

/// `stop`, `start`, `restart`, `pause`, `unpause` on the services' containers, level by level.
pub fn lifecycle(cli: &Cli, verb: Verb, args: &ServiceArgs) -> Result<i32> {
    require_root()?;
    let (name, project, mut levels) = project_and_levels(cli)?;
    let engine = engine(cli)?;
    let _lock = engine.lock(&name, &|m| eprintln!("{m}"))?;
    let mut services = args.services.clone();
    if let (Verb::Restart, Some(p), false) = (verb, &project, services.is_empty()) {
        // Compose's `depends_on.<x>.restart: true`: restarting x restarts these too.
        for (name, svc) in &p.services {
            if svc.depends_on.iter().any(|(d, c)| c.restart && services.contains(d)) && !services.contains(name) {
                services.push(name.clone());
            }
        }
    }
    let list = service_containers(&engine, &name, &services)?;
    if matches!(verb, Verb::Stop | Verb::Pause) {
        levels.reverse();
    }
    let rt = &engine.runtime;
    let stop = |c: &Container| -> std::result::Result<(), reconcile::ReconcileError> {
        if c.is_running() {
            engine.stop(c, args.timeout)?;
            say(&format!("Container {}  Stopped", c.name()));
        }
        Ok(())
    };
    let start = |c: &Container| -> std::result::Result<(), reconcile::ReconcileError> {
        let c = rt.refresh(c)?;
        if c.is_running() {
            return Ok(());
        }
        if let Some(p) = &project {
            execute::wait_dependencies(&engine, p, service(&c), &say)?;
        }
        rt.start(&c, crate::runtime::StartMode::Detached)?;
        say(&format!("Container {}  Started", c.name()));
        Ok(())
    };
    let results = match verb {
        Verb::Stop => down::in_levels(leveled(&list, &levels), stop),
        Verb::Start => down::in_levels(leveled(&list, &levels), start),
        Verb::Restart => {
            let mut reversed = levels.clone();
            reversed.reverse();
            let mut r = down::in_levels(leveled(&list, &reversed), stop);
            r.extend(down::in_levels(leveled(&list, &levels), start));
            r
        }
        Verb::Pause | Verb::Unpause => down::in_levels(leveled(&list, &levels), |c| {
            let freeze = verb == Verb::Pause;
            if c.is_running() && (c.state.status == crate::runtime::state::Status::Paused) != freeze {
                rt.pause(c, freeze)?;
                say(&format!(
                    "Container {}  {}",
                    c.name(),
                    if freeze { "Paused" } else { "Unpaused" }
                ));
            }
            Ok(())
        }),
    };
    report_failures(results)
}

/// Prints each failure; exit code 1 when any.
fn report_failures(results: Vec<(String, std::result::Result<(), reconcile::ReconcileError>)>) -> Result<i32> {
    let mut code = 0;
    for (c, r) in results {
        if let Err(e) = r {
            eprintln!("error: container {c}: {e}");
            code = 1;
        }
    }
    Ok(code)
}

/// `kill [-s SIGNAL] [SERVICES]`: signals the running containers.
pub fn kill(cli: &Cli, signal: &str, services: &[String]) -> Result<i32> {
    require_root()?;
    let sig = crate::runtime::process::parse_signal(signal).map_err(|e| anyhow!(e))?;
    let name = project_name(cli)?;
    let engine = engine(cli)?;
    let list = service_containers(&engine, &name, services)?;
    let running: Vec<&Container> = list.iter().filter(|c| c.is_running()).collect();
    let results = down::in_levels(vec![running], |c| {
        engine.runtime.kill(c, sig as i32)?;
        say(&format!("Container {}  Killed", c.name()));
        Ok(())
    });
    report_failures(results)
}

/// `rm [-f] [-s] [-v] [SERVICES]`: removes stopped containers (with `-s`, stops them first).
pub fn rm(cli: &Cli, stop: bool, volumes: bool, services: &[String]) -> Result<i32> {
    require_root()?;
    let name = project_name(cli)?;
    let engine = engine(cli)?;
    let _lock = engine.lock(&name, &|m| eprintln!("{m}"))?;
    let list = service_containers(&engine, &name, services)?;
    let chosen: Vec<&Container> = list.iter().filter(|c| stop || !c.is_running()).collect();
    if chosen.is_empty() {
        eprintln!("No stopped containers");
        return Ok(0);
    }
    let results = down::in_levels(vec![chosen], |c| {
        engine.remove(c, None)?;
        if volumes {
            for m in &c.config.spec.mounts {
                // Only anonymous volumes go with their container, as with Compose's `rm -v`.
                if let crate::runtime::MountKind::Volume { source } = &m.kind
                    && let Some(dir) = source.parent()
                    && dir
                        .file_name()
                        .is_some_and(|n| crate::reconcile::translate::is_anonymous_volume(&n.to_string_lossy()))
                {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
        say(&format!("Container {}  Removed", c.name()));
        Ok(())
    });
    report_failures(results)
}

/// `top [SERVICES]`: each running container's processes.
pub fn top(cli: &Cli, services: &[String], out: &mut dyn Write) -> Result<i32> {
    require_root()?;
    let name = project_name(cli)?;
    let engine = engine(cli)?;
    for c in service_containers(&engine, &name, services)?
        .iter()
        .filter(|c| c.is_running())
    {
        writeln!(out, "{}", c.name())?;
        super::container::top(&engine.runtime, c, out)?;
        writeln!(out)?;
    }
    Ok(0)
}

/// `port SERVICE PRIVATE_PORT`: the host address a container port is published on.
pub fn port(cli: &Cli, svc: &str, private: u16, protocol: &str, index: u32, out: &mut dyn Write) -> Result<i32> {
    let name = project_name(cli)?;
    let engine = engine(cli)?;
    let list = service_containers(&engine, &name, &[svc.to_string()])?;
    let c = replica(&list, svc, index).ok_or_else(|| anyhow!("service {svc} has no container with index {index}"))?;
    let endpoints = engine.networks.state()?.endpoints;
    let found = c
        .config
        .spec
        .labels
        .get(ENDPOINT_LABEL)
        .and_then(|k| endpoints.get(k))
        .and_then(|e| {
            e.ports
                .iter()
                .find(|p| p.container_port == private && p.proto.as_str() == protocol)
        });
    match found {
        Some(p) => {
            writeln!(out, "{}:{}", p.host_ip, p.bound)?;
            Ok(0)
        }
        None => bail!("no port {private}/{protocol} is published for {}", c.name()),
    }
}

/// `wait SERVICES`: blocks until the containers stop; prints their exit codes.
pub fn wait(cli: &Cli, services: &[String], out: &mut dyn Write) -> Result<i32> {
    require_root()?;
    let name = project_name(cli)?;
    let engine = engine(cli)?;
    let mut last = 0;
    for c in service_containers(&engine, &name, services)? {
        last = engine.runtime.wait(&c)?;
        writeln!(out, "{last}")?;
        out.flush()?;
    }
    Ok(last)
}

/// `ls [-a] [-q] [--format json]`: the projects that have containers, with their states.
pub fn ls(cli: &Cli, all: bool, quiet: bool, json: bool, out: &mut dyn Write) -> Result<i32> {
    let rt = crate::runtime::Runtime::new(&cli.root).with_context(|| format!("state root {}", cli.root.display()))?;
    // Project → (state → count, config files).
    let mut projects: BTreeMap<String, (BTreeMap<String, usize>, String)> = BTreeMap::new();
    for c in rt.list()? {
        let l = &c.config.spec.labels;
        let Some(p) = l.get(labels::PROJECT) else { continue };
        let entry = projects.entry(p.clone()).or_insert_with(|| {
            (
                BTreeMap::new(),
                l.get(labels::CONFIG_FILES).cloned().unwrap_or_default(),
            )
        });
        *entry.0.entry(c.state.status.to_string()).or_default() += 1;
    }
    let mut rows = vec![vec!["NAME".to_string(), "STATUS".into(), "CONFIG FILES".into()]];
    for (name, (states, files)) in &projects {
        if !all && !states.contains_key("running") {
            continue;
        }
        let status: Vec<String> = states.iter().map(|(s, n)| format!("{s}({n})")).collect();
        if quiet {
            writeln!(out, "{name}")?;
        } else if json {
            let doc = serde_json::json!({"Name": name, "Status": status.join(", "), "ConfigFiles": files});
            writeln!(out, "{doc}")?;
        } else {
            rows.push(vec![name.clone(), status.join(", "), files.clone()]);
        }
    }
    if !quiet && !json {
        write_table(out, &rows)?;
    }
    Ok(0)
}

/// Whether `name` is a service of the project in this directory.
pub fn is_service(cli: &Cli, name: &str) -> bool {
    load(cli, &[]).is_ok_and(|p| p.services.contains_key(name))
}

// `berth exec` flags.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Run in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// Environment variables (`KEY=value`).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// User.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// No pseudo-terminal (default: one when stdin is a terminal).
    #[arg(short = 'T', long = "no-tty")]
    pub no_tty: bool,
    /// Which replica.
    #[arg(long, default_value_t = 1)]
    pub index: u32,
    /// All capabilities, no seccomp.
    #[arg(long)]
    pub privileged: bool,
    /// The service.
    pub service: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

/// `berth exec SERVICE CMD…` in replica `--index` of the service.
pub fn exec(cli: &Cli, args: &ExecArgs) -> Result<i32> {
    require_root()?;
    let name = project_name(cli)?;
    let engine = engine(cli)?;
    let list = service_containers(&engine, &name, std::slice::from_ref(&args.service))?;
    let c = replica(&list, &args.service, args.index)
        .ok_or_else(|| anyhow!("service {} has no container with index {}", args.service, args.index))?;
    if !c.is_running() {
        bail!("container {} is not running", c.name());
    }
    let tty = !args.no_tty && !args.detach && nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    let req = crate::runtime::control::ExecRequest {
        args: args.command.clone(),
        env: args.env.clone(),
        user: args.user.clone(),
        working_dir: args.workdir.clone(),
        tty,
        stdin: !args.detach,
        privileged: args.privileged,
        detach: args.detach,
    };
    super::container::exec_in(&engine.runtime, c, req)
}

// `berth run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run in the background; print the container name.
    #[arg(short, long)]
    pub detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Container name (default `<project>-<service>-run-<id>`).
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variables (`KEY=value`).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Override the entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Publish a port: `[IP:][HOST:]PORT[/PROTO]`.
    #[arg(short, long)]
    pub publish: Vec<String>,
    /// Publish the service's own ports.
    #[arg(short = 'P', long)]
    pub service_ports: bool,
    /// Bind mounts and volumes: `/host:/ctr[:ro]` or `name:/ctr[:ro]`.
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// Working directory.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Don't start the services it depends on.
    #[arg(long)]
    pub no_deps: bool,
    /// No pseudo-terminal (default: one when stdin is a terminal).
    #[arg(short = 'T', long = "no-TTY")]
    pub no_tty: bool,
    /// Give it the service's network aliases.
    #[arg(long)]
    pub use_aliases: bool,
    /// The service.
    pub service: String,
    /// Command and arguments (default: the service's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `berth run SERVICE [CMD…]`: a one-off container of the service, after its dependencies are up.
pub fn run(cli: &Cli, args: &RunArgs, out: &mut dyn Write) -> Result<i32> {
    use crate::reconcile::translate::{self, Context};
    require_root()?;
    let project = load(cli, std::slice::from_ref(&args.service))?;
    let svc = project
        .services
        .get(&args.service)
        .ok_or_else(|| anyhow!("no such service: {}", args.service))?;
    let engine = engine(cli)?;
    let deps: Vec<String> = svc.dependencies().iter().map(|s| s.to_string()).collect();
    {
        let _lock = engine.lock(&project.name, &|m| eprintln!("{m}"))?;
        // The project's networks and volumes, and unless --no-deps the dependencies, are brought up.
        let mut desired = reconcile::desired(&project)?;
        desired.services.retain(|s| !args.no_deps && deps.contains(&s.name));
        let observed = observed::observe(&cli.root, &project.name)?;
        let plan = plan::plan(&desired, &observed, &plan::Options::default());
        execute::execute(&engine, &project, &desired, &plan, &ExecOptions::default(), &say)?;
    }
    build_missing(
        cli,
        &project,
        std::slice::from_ref(&args.service),
        false,
        &BuildOptions::default(),
        false,
    )?;
    let store = crate::image::store::Store::open(&cli.root)?;
    let image = execute::resolve_image(&store, &project, &args.service, None, &say)?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}-run-{}", project.name, args.service, crate::fsutil::random_hex(6)));
    // The command and entrypoint given here replace the service's, and translation combines them
    // with the image's as for any container.
    let mut project = project;
    let doc = &mut project.canonical["services"][&args.service];
    if let Some(e) = &args.entrypoint {
        let words = crate::compose::units::shell_split(e).map_err(|e| anyhow!("invalid --entrypoint: {e}"))?;
        doc["entrypoint"] = serde_json::json!(words);
    }
    if !args.command.is_empty() {
        doc["command"] = serde_json::json!(args.command);
    }
    let ctx = Context {
        project: &project,
        root: &cli.root,
    };
    let mut t = translate::translate(ctx, &args.service, 1, &name, "", &image)?;
    let spec = &mut t.spec;
    spec.labels.insert(labels::ONEOFF.into(), "True".into());
    spec.labels.remove(labels::NUMBER);
    spec.labels.remove(labels::CONFIG_HASH);
    spec.restart = crate::runtime::RestartPolicy::No;
    spec.auto_remove = args.rm && args.detach;
    for e in &args.env {
        crate::runtime::process::set_env(&mut spec.process.env, e.clone());
    }
    if let Some(u) = &args.user {
        spec.process.user = u.clone();
    }
    if let Some(w) = &args.workdir {
        spec.process.working_dir = Some(w.clone());
    }
    for v in &args.volume {
        let parts: Vec<&str> = v.split(':').collect();
        let (source, target, ro) = match parts.as_slice() {
            [s, t] => (*s, *t, false),
            [s, t, "ro"] => (*s, *t, true),
            [s, t, "rw"] => (*s, *t, false),
            _ => bail!("invalid volume {v:?}: want SOURCE:TARGET[:ro]"),
        };
        let kind = if source.starts_with('/') || source.starts_with('.') {
            let source = std::fs::canonicalize(source).with_context(|| format!("bind source path {source}"))?;
            crate::runtime::MountKind::Bind {
                source,
                propagation: None,
            }
        } else {
            let full = format!("{}_{source}", project.name);
            execute::create_volume(&cli.root, &full, &project.name)?;
            crate::runtime::MountKind::Volume {
                source: translate::volume_dir(&cli.root, &full),
            }
        };
        spec.mounts.retain(|m| m.target != target);
        spec.mounts.push(crate::runtime::MountSpec {
            kind,
            target: target.to_string(),
            read_only: ro,
        });
    }
    let tty = !args.no_tty && !args.detach && nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    spec.process.tty = tty;
    spec.process.stdin = !args.detach;
    if let Some(e) = &mut t.endpoint {
        // Like Compose: the service's ports only with --service-ports, its aliases only with --use-aliases.
        if !args.service_ports {
            e.ports.clear();
        }
        for p in &args.publish {
            e.ports.extend(super::network::parse_publish(p)?);
        }
        if !args.use_aliases {
            e.names.retain(|n| *n != args.service);
            for a in &mut e.networks {
                a.aliases.clear();
            }
        }
    }
    let c = execute::create_translated(&engine, &project, &args.service, &image, t)?;
    let endpoint = c.config.spec.labels.get(ENDPOINT_LABEL).cloned();
    if args.detach {
        engine.runtime.start(&c, crate::runtime::StartMode::Detached)?;
        writeln!(out, "{}", c.name())?;
        return Ok(0);
    }
    let code = super::container::start_attached(&engine.runtime, &c, true, tty);
    if args.rm {
        let _ = engine.runtime.delete(&engine.runtime.refresh(&c)?, true);
        if let Some(k) = endpoint {
            let _ = engine.networks.disconnect(&k);
        }
    }
    code
}

/// The image name of each chosen service (all when `services` is empty): `image`, or the name
/// a build would give it, `<project>-<service>`; with whether it comes from `build` only.
fn service_images(project: &Project, services: &[String]) -> Vec<(String, String, bool)> {
    project
        .services
        .iter()
        .filter(|(name, _)| services.is_empty() || services.contains(name))
        .map(|(name, svc)| (name.clone(), project.image_of(name), svc.image.is_none()))
        .collect()
}

/// `pull [-q] [--ignore-pull-failures] [SERVICES]`: pulls the services' images (not those that
/// are only built).
pub fn pull(cli: &Cli, quiet: bool, ignore_failures: bool, services: &[String], out: &mut dyn Write) -> Result<i32> {
    let project = load(cli, services)?;
    let mut code = 0;
    for (svc, image, built) in service_images(&project, services) {
        if built {
            continue;
        }
        let cmd = super::image::ImageCommand::Pull {
            platform: project.canonical["services"][&svc]["platform"]
                .as_str()
                .map(str::to_string),
            quiet,
            insecure_registry: Vec::new(),
            name: image.clone(),
        };
        if let Err(e) = super::image::run(cli, &cmd, out) {
            if !ignore_failures {
                return Err(e.context(format!("service {svc}")));
            }
            eprintln!("warning: service {svc}: {e:#}");
            code = 1;
        }
    }
    Ok(if ignore_failures { 0 } else { code })
}

/// `push [-q] [SERVICES]`: pushes the services' images.
pub fn push(cli: &Cli, quiet: bool, services: &[String], out: &mut dyn Write) -> Result<i32> {
    let project = load(cli, services)?;
    for (svc, image, _) in service_images(&project, services) {
        let cmd = super::image::ImageCommand::Push {
            quiet,
            insecure_registry: Vec::new(),
            name: image,
        };
        super::image::run(cli, &cmd, out).map_err(|e| e.context(format!("service {svc}")))?;
    }
    Ok(0)
}

/// `down --rmi local|all`: the images of the project's services (`local`: only those without an
/// `image:` name, which a build named), removed when no container uses them.
fn remove_images(cli: &Cli, project: &Project, which: &str, out: &mut dyn Write) -> Result<()> {
    let images: Vec<String> = service_images(project, &[])
        .into_iter()
        .filter(|(_, _, built)| which == "all" || *built)
        .map(|(_, image, _)| image)
        .collect();
    let store = crate::image::store::Store::open(&cli.root)?;
    for image in images {
        if store.lookup(&image).is_err() {
            continue;
        }
        let cmd = super::image::ImageCommand::Rm(super::image::RmArgs {
            force: false,
            images: vec![image.clone()],
        });
        if let Err(e) = super::image::run(cli, &cmd, out) {
            eprintln!("warning: image {image}: {e:#}");
        }
    }
    Ok(())
}

// `berth create` flags.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Recreate containers even if their configuration is unchanged.
    #[arg(long)]
    pub force_recreate: bool,
    /// Never recreate existing containers.
    #[arg(long, conflicts_with = "force_recreate")]
    pub no_recreate: bool,
    /// Pull images: `missing` (default), `always`, `never`.
    #[arg(long, value_parser = ["missing", "always", "never"])]
    pub pull: Option<String>,
    /// Services; default all.
    pub services: Vec<String>,
}

impl UpArgs {
    /// `create`: `up --no-start` with these choices.
    pub fn create(force_recreate: bool, no_recreate: bool, pull: Option<String>, services: Vec<String>) -> UpArgs {
        UpArgs {
            detach: true,
            dry_run: false,
            force_recreate,
            no_recreate,
            remove_orphans: false,
            scale: Vec::new(),
            no_start: true,
            pull,
            build: false,
            timeout: None,
            parallel: None,
            no_deps: false,
            wait: false,
            wait_timeout: None,
            abort_on_container_exit: false,
            abort_on_container_failure: false,
            exit_code_from: None,
            timestamps: false,
            no_color: false,
            no_log_prefix: false,
            attach: Vec::new(),
            no_attach: Vec::new(),
            services,
        }
    }
}

/// What `events` remembers of a container between two looks.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    status: String,
    health: Option<crate::runtime::health::HealthStatus>,
    restarts: u32,
}

/// `events [--json] [SERVICES]`: the project's container events as they happen. With no daemon
/// to publish them, they are observed: the containers' records are read ten times a second and
/// each change becomes Docker's event (`create`, `start`, `die`, `pause`, `unpause`,
/// `restart`, `health_status: …`, `destroy`). Runs until interrupted.
pub fn events(cli: &Cli, json: bool, services: &[String], out: &mut dyn Write) -> Result<i32> {
    let (name, project) = project_or_name(cli)?;
    if let Some(s) = services
        .iter()
        .find(|s| project.as_ref().is_some_and(|p| !p.services.contains_key(*s)))
    {
        bail!("no such service: {s}");
    }
    let engine = engine(cli)?;
    let mut seen: BTreeMap<String, (Container, Seen)> = BTreeMap::new();
    let mut first = true;
    loop {
        let now: Vec<Container> = engine
            .containers(&name)?
            .into_iter()
            .filter(|c| services.is_empty() || services.iter().any(|s| s == service(c)))
            .collect();
        let mut current = BTreeMap::new();
        for c in now {
            let s = Seen {
                status: c.state.status.to_string(),
                health: execute::health_status(&c),
                restarts: c.state.restart_count,
            };
            let mut actions = Vec::new();
            match seen.get(c.id()) {
                None if first => {}
                None => {
                    actions.push("create".to_string());
                    if c.is_running() {
                        actions.push("start".into());
                    }
                }
                Some((_, old)) => {
                    if s.restarts > old.restarts {
                        actions.push("die".into());
                        actions.push("restart".into());
                    } else if old.status != s.status {
                        actions.push(match (old.status.as_str(), s.status.as_str()) {
                            ("paused", "running") => "unpause".into(),
                            (_, "paused") => "pause".into(),
                            (_, "running") => "start".into(),
                            (_, "exited") | (_, "dead") => "die".into(),
                            (_, other) => other.to_string(),
                        });
                    }
                    if let Some(h) = s.health
                        && old.health != Some(h)
                    {
                        actions.push(format!("health_status: {h}"));
                    }
                }
            }
            for a in actions {
                write_event(out, json, &c, &a)?;
            }
            current.insert(c.id().to_string(), (c, s));
        }
        for (id, (c, _)) in &seen {
            if !current.contains_key(id) {
                write_event(out, json, c, "destroy")?;
            }
        }
        out.flush()?;
        seen = current;
        first = false;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One event line, as Compose prints it (`--json`: one object per line).
fn write_event(out: &mut dyn Write, json: bool, c: &Container, action: &str) -> Result<()> {
    let time = jiff::Timestamp::now();
    let image = &c.config.spec.image;
    if json {
        let doc = serde_json::json!({
            "time": time.to_string(),
            "type": "container",
            "action": action,
            "id": c.id(),
            "service": service(c),
            "attributes": {"name": c.name(), "image": image},
        });
        writeln!(out, "{doc}")?;
    } else {
        writeln!(
            out,
            "{time} container {action} {} (image={image}, name={})",
            c.id(),
            c.name()
        )?;
    }
    Ok(())
}

/// `cp [--index N] SRC DEST`: one side is `SERVICE:PATH` (or `CONTAINER:PATH`), the other a host
/// path (`-` for a tar stream on stdin or stdout), as `docker compose cp`.
pub fn cp(cli: &Cli, index: u32, src: &str, dest: &str) -> Result<i32> {
    require_root()?;
    let name = project_name(cli)?;
    let engine = engine(cli)?;
    let split = |arg: &str| -> Option<(String, String)> {
        let (who, path) = arg.split_once(':')?;
        (!who.is_empty() && !who.contains('/')).then(|| (who.to_string(), path.to_string()))
    };
    let container = |who: &str| -> Result<Container> {
        let list = service_containers(&engine, &name, &[])?;
        if let Some(c) = replica(&list, who, index) {
            return Ok(c.clone());
        }
        Ok(engine.runtime.lookup(who)?)
    };
    let base = |p: &str| -> String {
        std::path::Path::new(p)
            .file_name()
            .map_or_else(|| ".".to_string(), |n| n.to_string_lossy().into_owned())
    };
    match (split(src), split(dest)) {
        (Some((who, path)), None) => {
            let c = container(&who)?;
            if dest == "-" {
                let mut to_stdout =
                    |r: &mut dyn std::io::Read| std::io::copy(r, &mut std::io::stdout().lock()).map(|_| ());
                engine.runtime.copy_out(&c, &path, &base(&path), &mut to_stdout)?;
                return Ok(0);
            }
            let host = std::path::Path::new(dest);
            let (dir, top) = if host.is_dir() {
                (host.to_path_buf(), base(&path))
            } else {
                let parent = host
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."));
                (parent.to_path_buf(), base(dest))
            };
            if !dir.is_dir() {
                bail!("{}: no such directory", dir.display());
            }
            // Streamed; unpack keeps every entry inside `dir`, whatever the container put in it.
            let mut unpack = |r: &mut dyn std::io::Read| {
                let mut archive = tar::Archive::new(r);
                archive.set_preserve_permissions(true);
                archive.set_overwrite(true);
                archive.unpack(&dir)
            };
            engine
                .runtime
                .copy_out(&c, &path, &top, &mut unpack)
                .with_context(|| format!("copy into {}", dir.display()))?;
            Ok(0)
        }
        (None, Some((who, path))) => {
            let c = container(&who)?;
            if src == "-" {
                let mut from_stdin =
                    |w: &mut dyn std::io::Write| std::io::copy(&mut std::io::stdin().lock(), w).map(|_| ());
                engine.runtime.copy_in(&c, &path, &mut from_stdin)?;
                return Ok(0);
            }
            let host = std::path::Path::new(src);
            std::fs::symlink_metadata(host).with_context(|| format!("copy {src}"))?;
            let top = base(src);
            let mut write = |w: &mut dyn std::io::Write| crate::runtime::copy::write_tar(w, host, &top);
            engine.runtime.copy_in(&c, &path, &mut write)?;
            Ok(0)
        }
        _ => bail!("cp needs one SERVICE:PATH (or CONTAINER:PATH) and one host path"),
    }
}
