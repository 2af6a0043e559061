//! `berth container …`: the everyday `docker` verbs on berth's own runtime. Flags are parsed here and turned
//! into a `ContainerSpec`; output columns, messages and exit codes follow Docker's.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};

use super::{Cli, Result};
use crate::network::Networks;
use crate::runtime::control::{self, ExecRequest, frame};
use crate::runtime::health::{Health, HealthStatus};
use crate::runtime::lifecycle::read_log;
use crate::runtime::process::{self, parse_signal};
use crate::runtime::state::Status;
use crate::runtime::{
    Container, ContainerSpec, Healthcheck, MountKind, MountSpec, NetworkSpec, RestartPolicy, Runtime, RuntimeError,
    StartMode,
};

/// Exit code for an error of berth itself, as Docker's 125.
const BERTH_ERROR: i32 = 125;

/// `berth container` verbs.
#[derive(Debug, Subcommand)]
// Each subcommand's arguments are built only when it is the one invoked (or its help is shown): building
// every argument of every verb cost about 2 ms at each start of the CLI.
#[command(defer = true)]
pub enum ContainerCommand {
    /// Create and start a container from a root file system directory.
    Run(RunArgs),
    /// Create a container without starting it.
    Create(RunArgs),
    /// Start stopped containers.
    Start {
        /// Attach to its output and wait for it.
        #[arg(short, long)]
        attach: bool,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List containers.
    #[command(alias = "ls")]
    Ps {
        /// Show all containers, not only running ones.
        #[arg(short, long)]
        all: bool,
        /// Only print ids.
        #[arg(short, long)]
        quiet: bool,
        /// Show the size of what each container wrote.
        #[arg(short, long)]
        size: bool,
        /// Don't truncate ids and commands.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Stop running containers: the stop signal, then SIGKILL after the grace period.
    Stop {
        /// Seconds to wait before killing.
        #[arg(short = 't', long = "time")]
        time: Option<u64>,
        /// Signal to send.
        #[arg(short, long)]
        signal: Option<String>,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Restart containers.
    Restart {
        /// Seconds to wait before killing.
        #[arg(short = 't', long = "time")]
        time: Option<u64>,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to containers.
    Kill {
        /// Signal (name or number).
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// Print a container's logs.
    Logs {
        /// Follow the output.
        #[arg(short, long)]
        follow: bool,
        /// Number of lines from the end, or `all`.
        #[arg(short = 'n', long, default_value = "all")]
        tail: String,
        /// Show timestamps.
        #[arg(short, long)]
        timestamps: bool,
        /// The container.
        container: String,
    },
    /// Show containers' low-level details as JSON.
    Inspect {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Kill running containers first.
        #[arg(short, long)]
        force: bool,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show a container's processes.
    Top {
        /// The container.
        container: String,
    },
    /// Freeze all processes of containers.
    Pause {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Thaw them.
    Unpause {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Block until containers stop, then print their exit codes.
    Wait {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show resource usage.
    Stats {
        /// Print one sample and exit.
        #[arg(long)]
        no_stream: bool,
        /// Containers (default: all running).
        containers: Vec<String>,
    },
}

// Flags of `run` and `create`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    #[command(flatten)]
    io: Interaction,
    /// Container name.
    #[arg(long)]
    name: Option<String>,
    /// Environment variables (`KEY=value`, or `KEY` to take it from here).
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Files of environment variables.
    #[arg(long = "env-file")]
    env_file: Vec<PathBuf>,
    /// Bind mounts and volumes: `/host:/ctr[:ro]` or `name:/ctr[:ro]`.
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    /// tmpfs mounts: `/ctr[:size=…,mode=…]`.
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// User: `name`, `uid`, `user:group`.
    #[arg(short, long)]
    user: Option<String>,
    /// Override the entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Run an init as PID 1 that reaps zombies and forwards signals.
    #[arg(long)]
    init: bool,
    /// Mount the root file system read-only.
    #[arg(long)]
    read_only: bool,
    /// Memory limit (e.g. 64m).
    #[arg(short, long)]
    memory: Option<String>,
    /// Memory reservation.
    #[arg(long)]
    memory_reservation: Option<String>,
    /// CPU quota in CPUs.
    #[arg(long)]
    cpus: Option<f64>,
    /// CPU shares.
    #[arg(short = 'c', long)]
    cpu_shares: Option<u64>,
    /// Task limit (-1 unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Add capabilities.
    #[arg(long)]
    cap_add: Vec<String>,
    /// Drop capabilities.
    #[arg(long)]
    cap_drop: Vec<String>,
    /// Give extended privileges.
    #[arg(long)]
    privileged: bool,
    /// Security options: `no-new-privileges[:true]`, `seccomp=unconfined`.
    #[arg(long)]
    security_opt: Vec<String>,
    /// Host name.
    #[arg(short = 'h', long)]
    hostname: Option<String>,
    /// Domain name.
    #[arg(long)]
    domainname: Option<String>,
    /// Restart policy: no, always, on-failure[:N], unless-stopped.
    #[arg(long, default_value = "no")]
    restart: String,
    /// Signal for `stop`.
    #[arg(long)]
    stop_signal: Option<String>,
    /// Seconds `stop` waits.
    #[arg(long)]
    stop_timeout: Option<u64>,
    /// Size of /dev/shm.
    #[arg(long)]
    shm_size: Option<String>,
    /// ulimits: `nofile=1024:2048`.
    #[arg(long)]
    ulimit: Vec<String>,
    /// Namespaced sysctls: `net.ipv4.ip_forward=1`.
    #[arg(long)]
    sysctl: Vec<String>,
    /// Extra groups.
    #[arg(long)]
    group_add: Vec<String>,
    /// Labels: `key=value`.
    #[arg(short, long)]
    label: Vec<String>,
    /// Network: `none` (loopback only, the default), `host`, `ns:PATH` of an existing namespace,
    /// `container:NAME` (share another container's), or the name of a network (`berth network
    /// create`); repeat to join several networks.
    #[arg(long, alias = "net")]
    network: Vec<String>,
    /// Extra DNS names of the container on its first network.
    #[arg(long = "network-alias", alias = "net-alias")]
    network_alias: Vec<String>,
    /// A fixed IPv4 address on the first network.
    #[arg(long)]
    ip: Option<std::net::Ipv4Addr>,
    /// Publish container ports: `[IP:][HOST[-HOST]:]PORT[-PORT][/tcp|udp]`.
    #[arg(short, long)]
    publish: Vec<String>,
    /// Extra /etc/hosts entries: `host:ip`.
    #[arg(long)]
    add_host: Vec<String>,
    /// Run from this root file system directory instead of an image (then no IMAGE is given).
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Pull the image first: `missing` (default), `always` or `never`.
    #[arg(long, default_value = "missing", value_parser = ["missing", "always", "never"])]
    pull: String,
    #[command(flatten)]
    health: HealthArgs,
    /// IMAGE (unless --rootfs is given), then the command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

// Docker's healthcheck flags of `run` and `create`. Durations are Go's (`500ms`, `2s`, `1m30s`);
// zero or absent means the image's value, then Docker's default.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Command to run to check health (run with `/bin/sh -c` in the container).
    #[arg(long)]
    health_cmd: Option<String>,
    /// Time between running the check (default 30s).
    #[arg(long, allow_hyphen_values = true)]
    health_interval: Option<String>,
    /// Maximum time a check may run before it counts as failed (default 30s).
    #[arg(long, allow_hyphen_values = true)]
    health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy (default 3).
    #[arg(long, allow_hyphen_values = true)]
    health_retries: Option<i64>,
    /// Start period for the container to initialize before failures count (default 0s).
    #[arg(long, allow_hyphen_values = true)]
    health_start_period: Option<String>,
    /// Time between running the check during the start period (default 5s).
    #[arg(long, allow_hyphen_values = true)]
    health_start_interval: Option<String>,
    /// Disable any container-specified healthcheck (the image's HEALTHCHECK).
    #[arg(long)]
    no_healthcheck: bool,
}

// `-d`, `-i` and `-t`, shared by `run`, `create` and `exec`.
#[derive(Debug, Args)]
pub struct Interaction {
    /// Run in the background (`run`: print the container id).
    #[arg(short, long)]
    detach: bool,
    /// Keep stdin open.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
}

// Flags of `exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    io: Interaction,
    /// Environment variables.
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// User.
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory.
    #[arg(short, long)]
    workdir: Option<String>,
    /// All capabilities, no seccomp.
    #[arg(long)]
    privileged: bool,
    /// The container.
    container: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

/// Runs a `container` verb.
pub fn run(cli: &Cli, cmd: &ContainerCommand, out: &mut dyn Write) -> Result<i32> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("berth: containers need root (namespaces, mounts and cgroups); run berth with sudo");
        return Ok(if matches!(cmd, ContainerCommand::Run(_)) {
            BERTH_ERROR
        } else {
            1
        });
    }
    let rt = Runtime::new(&cli.root).with_context(|| format!("state root {}", cli.root.display()))?;
    match cmd {
        ContainerCommand::Run(a) => Ok(match run_container(&rt, a, out) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("berth: {e:#}");
                e.downcast_ref::<RuntimeError>().map_or(BERTH_ERROR, |e| match e {
                    RuntimeError::Start { code, .. } => *code,
                    _ => BERTH_ERROR,
                })
            }
        }),
        ContainerCommand::Create(a) => {
            let c = create_container(&rt, a, false)?;
            writeln!(out, "{}", c.id())?;
            Ok(0)
        }
        ContainerCommand::Start { attach, containers } => {
            let mut code = 0;
            for name in containers {
                let c = rt.lookup(name)?;
                if *attach {
                    rt.start(&c, StartMode::AttachFirst)?;
                    let c = rt.refresh(&c)?;
                    code = stream_session(rt.attach(&c, false)?.into_stream(), false, false)?;
                } else {
                    rt.start(&c, StartMode::Detached)?;
                    writeln!(out, "{name}")?;
                }
            }
            Ok(code)
        }
        ContainerCommand::Ps {
            all,
            quiet,
            size,
            no_trunc,
        } => {
            ps(&rt, *all, *quiet, *size, *no_trunc, out)?;
            Ok(0)
        }
        ContainerCommand::Stop {
            time,
            signal,
            containers,
        } => each(&rt, containers, out, |rt, c| {
            let spec = &c.config.spec;
            let sig = match signal {
                Some(s) => parse_signal(s).map_err(|e| anyhow!(e))?,
                None => spec.stop_signal_or_default(),
            };
            rt.stop(c, sig as i32, time.unwrap_or_else(|| spec.stop_timeout_or_default()))?;
            Ok(())
        }),
        ContainerCommand::Restart { time, containers } => each(&rt, containers, out, |rt, c| {
            let spec = &c.config.spec;
            let t = time.unwrap_or_else(|| spec.stop_timeout_or_default());
            rt.stop(c, spec.stop_signal_or_default() as i32, t)?;
            rt.start(&rt.refresh(c)?, StartMode::Detached)?;
            Ok(())
        }),
        ContainerCommand::Kill { signal, containers } => {
            let sig = parse_signal(signal).map_err(|e| anyhow!(e))?;
            each(&rt, containers, out, |rt, c| Ok(rt.kill(c, sig as i32)?))
        }
        ContainerCommand::Exec(a) => exec(&rt, a, out),
        ContainerCommand::Logs {
            follow,
            tail,
            timestamps,
            container,
        } => {
            let c = rt.lookup(container)?;
            logs(&rt, &c, *follow, tail, *timestamps)?;
            Ok(0)
        }
        ContainerCommand::Inspect { containers } => {
            let mut docs = Vec::new();
            for name in containers {
                docs.push(inspect_json(&rt.lookup(name)?));
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&docs)?)?;
            Ok(0)
        }
        ContainerCommand::Rm { force, containers } => each(&rt, containers, out, |rt, c| {
            rt.delete(c, *force)?;
            disconnect(rt, c)
        }),
        ContainerCommand::Top { container } => {
            let c = rt.lookup(container)?;
            top(&rt, &c, out)?;
            Ok(0)
        }
        ContainerCommand::Pause { containers } => each(&rt, containers, out, |rt, c| Ok(rt.pause(c, true)?)),
        ContainerCommand::Unpause { containers } => each(&rt, containers, out, |rt, c| Ok(rt.pause(c, false)?)),
        ContainerCommand::Wait { containers } => {
            for name in containers {
                let c = rt.lookup(name)?;
                writeln!(out, "{}", rt.wait(&c)?)?;
                out.flush()?;
            }
            Ok(0)
        }
        ContainerCommand::Stats { no_stream, containers } => {
            stats(&rt, containers, *no_stream, out)?;
            Ok(0)
        }
    }
}

/// Applies `f` to each named container, printing each name like Docker; fails at the end if any failed.
fn each(
    rt: &Runtime,
    names: &[String],
    out: &mut dyn Write,
    f: impl Fn(&Runtime, &Container) -> Result<()>,
) -> Result<i32> {
    let mut failed = 0;
    for name in names {
        match rt.lookup(name).map_err(anyhow::Error::from).and_then(|c| f(rt, &c)) {
            Ok(()) => writeln!(out, "{name}")?,
            Err(e) => {
                eprintln!("Error response: {e:#}");
                failed += 1;
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

/// The label that ties a container to its network endpoint.
const ENDPOINT_LABEL: &str = "berth.network.endpoint";

/// Creates a container from `run`/`create` flags; a named network gets an endpoint, connected
/// before the container exists for anyone else to start, and removed again if anything fails.
fn create_container(rt: &Runtime, a: &RunArgs, auto_remove: bool) -> Result<Container> {
    let mut spec = build_spec(a, rt)?;
    spec.auto_remove = auto_remove;
    let Some(mut endpoint) = super::network::endpoint_for_run(&a.network, &a.network_alias, a.ip, &a.publish)? else {
        return Ok(rt.create(spec)?);
    };
    let nets = Networks::new(rt.root())?;
    prune_orphans(rt, &nets)?;
    spec.network = NetworkSpec::Path(nets.layout().endpoint(&endpoint.key));
    spec.resolv_conf = Some(nets.resolv_conf(&endpoint.networks[0].network)?);
    spec.labels.insert(ENDPOINT_LABEL.into(), endpoint.key.clone());
    let c = rt.create(spec)?;
    endpoint.names.push(c.name().to_string());
    if let Some(h) = &c.config.spec.hostname {
        endpoint.names.push(h.clone());
    }
    let connected = nets
        .connect(&endpoint)
        .map_err(anyhow::Error::from)
        .and_then(|e| match e.attachments.first() {
            Some(a) => Ok(rt.add_own_address(&c, &a.address.to_string())?),
            None => Ok(()),
        });
    if let Err(e) = connected {
        let _ = rt.delete(&c, true);
        let _ = nets.disconnect(&endpoint.key);
        return Err(e);
    }
    Ok(c)
}

/// `--network container:NAME`: the other container's namespace.
fn shared_netns(rt: &Runtime, name: &str) -> Result<NetworkSpec> {
    Ok(rt.lookup(name)?.shared_network()?)
}

/// Removes the endpoints of `container run` whose container is gone (a detached `--rm` one
/// removes itself, and nobody is there to remove its endpoint), freeing their ports and addresses.
fn prune_orphans(rt: &Runtime, nets: &Networks) -> Result<()> {
    // Endpoints first, containers second: a container is created before its endpoint, so every
    // endpoint seen here has its container in the list unless that container is really gone.
    let seen: std::collections::BTreeSet<String> = nets.state()?.endpoints.into_keys().collect();
    let owned: std::collections::BTreeSet<String> = rt
        .list()?
        .iter()
        .filter_map(|c| c.config.spec.labels.get(ENDPOINT_LABEL).cloned())
        .collect();
    let prefix = super::network::RUN_ENDPOINT_PREFIX;
    nets.prune_endpoints(|e| e.key.starts_with(prefix) && seen.contains(&e.key) && !owned.contains(&e.key))?;
    Ok(())
}

/// `prune_orphans` for commands that have no runtime at hand.
pub fn prune_endpoints(cli: &Cli) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let rt = Runtime::new(&cli.root).with_context(|| format!("state root {}", cli.root.display()))?;
    prune_orphans(&rt, &Networks::new(rt.root())?)
}

/// Removes a container's network endpoint, if it has one.
fn disconnect(rt: &Runtime, c: &Container) -> Result<()> {
    if let Some(key) = c.config.spec.labels.get(ENDPOINT_LABEL) {
        Networks::new(rt.root())?.disconnect(key)?;
    }
    Ok(())
}

/// `berth port CONTAINER [PORT[/PROTO]]`.
pub fn port(cli: &Cli, name: &str, filter: Option<&str>, out: &mut dyn Write) -> Result<i32> {
    let rt = Runtime::new(&cli.root).with_context(|| format!("state root {}", cli.root.display()))?;
    let c = rt.lookup(name)?;
    let key = c.config.spec.labels.get(ENDPOINT_LABEL);
    match key
        .map(|k| Networks::new(rt.root()).and_then(|n| n.endpoint(k)))
        .transpose()?
        .flatten()
    {
        Some(e) => super::network::port(&e, filter, out),
        None if filter.is_some() => bail!("no public port '{}' published for {name}", filter.unwrap_or_default()),
        None => Ok(0),
    }
}

fn run_container(rt: &Runtime, a: &RunArgs, out: &mut dyn Write) -> Result<i32> {
    // The supervisor loads while the container is created.
    let standby = rt.standby()?;
    let c = create_container(rt, a, a.rm)?;
    if a.io.detach {
        if let Err(e) = rt.start_on(&c, StartMode::Detached, standby) {
            if a.rm {
                let _ = rt.delete(&rt.refresh(&c)?, true);
                let _ = disconnect(rt, &c);
            }
            return Err(e.into());
        }
        writeln!(out, "{}", c.id())?;
        return Ok(0);
    }
    if let Err(e) = rt.start_on(&c, StartMode::AttachFirst, standby) {
        if a.rm {
            let _ = disconnect(rt, &c);
        }
        return Err(e.into());
    }
    let c = rt.refresh(&c)?;
    proxy_signals(rt, &c);
    let session = rt.attach(&c, a.io.interactive)?.into_stream();
    let code = stream_session(session, a.io.interactive, a.io.tty);
    if a.rm {
        // The supervisor removes the container; its endpoint is ours to remove.
        let _ = disconnect(rt, &c);
    }
    code
}

fn parse_bytes(s: &str) -> Result<u64> {
    crate::compose::units::parse_bytes(s)
        .map(|v| v as u64)
        .map_err(|e| anyhow!("invalid size {s:?}: {e}"))
}

fn build_spec(a: &RunArgs, rt: &Runtime) -> Result<ContainerSpec> {
    let (source, command) = match &a.rootfs {
        Some(dir) => {
            let dir = std::fs::canonicalize(dir).with_context(|| format!("rootfs {}", dir.display()))?;
            (super::image::RootfsSource::directory(dir), a.command.as_slice())
        }
        None => {
            let (image, command) = a
                .command
                .split_first()
                .ok_or_else(|| anyhow!("an IMAGE (or --rootfs DIR) is required"))?;
            (super::image::RootfsSource::image(rt.root(), image, &a.pull)?, command)
        }
    };
    let defaults = source.defaults.clone().unwrap_or_default();
    let mut env = defaults.env.clone().unwrap_or_default();
    for f in &a.env_file {
        let text = std::fs::read_to_string(f).with_context(|| format!("env file {}", f.display()))?;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            env.push(env_entry(line));
        }
    }
    for e in a.env.iter().map(|e| env_entry(e)) {
        crate::runtime::process::set_env(&mut env, e);
    }
    let entrypoint = a.entrypoint.as_ref().map(|e| vec![e.clone()]);
    let args = crate::runtime::process::combine_command(
        defaults.entrypoint.as_deref().unwrap_or_default(),
        defaults.cmd.as_deref().unwrap_or_default(),
        entrypoint.as_deref(),
        (!command.is_empty()).then_some(command),
    );
    if args.is_empty() {
        bail!("no command specified (the image has no default command)");
    }
    let mut mounts = Vec::new();
    for v in &a.volume {
        mounts.push(parse_volume(v, rt)?);
    }
    for t in &a.tmpfs {
        let (target, opts) = t.split_once(':').unwrap_or((t, ""));
        let mut size = None;
        let mut mode = None;
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o.split_once('=') {
                Some(("size", v)) => size = Some(parse_bytes(v)?),
                Some(("mode", v)) => {
                    mode = Some(u32::from_str_radix(v, 8).map_err(|_| anyhow!("invalid tmpfs mode {v:?}"))?)
                }
                _ => bail!("unsupported tmpfs option {o:?}"),
            }
        }
        mounts.push(MountSpec {
            kind: MountKind::Tmpfs { size, mode },
            target: target.to_string(),
            read_only: false,
        });
    }
    let mut spec = ContainerSpec {
        name: a.name.clone().unwrap_or_default(),
        image: source.name.clone(),
        image_id: source.id.clone(),
        rootfs: crate::runtime::RootfsSpec {
            layers: source.layers.clone(),
            read_only: a.read_only,
        },
        hostname: a.hostname.clone(),
        domainname: a.domainname.clone(),
        mounts,
        init: a.init,
        restart: RestartPolicy::parse(&a.restart).map_err(|e| anyhow!(e))?,
        stop_signal: a.stop_signal.clone().or(defaults.stop_signal.clone()),
        stop_timeout: a.stop_timeout,
        shm_size: a.shm_size.as_deref().map(parse_bytes).transpose()?,
        ..Default::default()
    };
    if a.rm && spec.restart != RestartPolicy::No {
        bail!("conflicting options: cannot specify both --restart and --rm");
    }
    spec.process.args = args;
    spec.process.env = env;
    spec.process.user = a.user.clone().or(defaults.user.clone()).unwrap_or_default();
    spec.process.group_add = a.group_add.clone();
    spec.process.working_dir = a
        .workdir
        .clone()
        .or(defaults.working_dir.clone().filter(|w| !w.is_empty()));
    spec.process.tty = a.io.tty;
    spec.process.stdin = a.io.interactive;
    for u in &a.ulimit {
        let (name, limits) = u.split_once('=').ok_or_else(|| anyhow!("invalid ulimit {u:?}"))?;
        let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
        let p = |s: &str| s.parse::<u64>().map_err(|_| anyhow!("invalid ulimit {u:?}"));
        spec.process.rlimits.insert(name.to_string(), (p(soft)?, p(hard)?));
    }
    spec.resources.memory = a.memory.as_deref().map(parse_bytes).transpose()?;
    spec.resources.memory_reservation = a.memory_reservation.as_deref().map(parse_bytes).transpose()?;
    spec.resources.cpus = a.cpus;
    spec.resources.cpu_shares = a.cpu_shares;
    spec.resources.pids_limit = a.pids_limit;
    spec.security.privileged = a.privileged;
    spec.security.cap_add = a.cap_add.clone();
    spec.security.cap_drop = a.cap_drop.clone();
    for o in &a.security_opt {
        spec.security.apply_option(o).map_err(|e| anyhow!(e))?;
    }
    for s in &a.sysctl {
        let (k, v) = s.split_once('=').ok_or_else(|| anyhow!("invalid sysctl {s:?}"))?;
        spec.sysctls.insert(k.to_string(), v.to_string());
    }
    for l in &a.label {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        spec.labels.insert(k.to_string(), v.to_string());
    }
    for h in &a.add_host {
        let (host, ip) = h
            .split_once(':')
            .ok_or_else(|| anyhow!("invalid --add-host {h:?}: want host:ip"))?;
        spec.extra_hosts.push((host.to_string(), ip.to_string()));
    }
    spec.healthcheck = healthcheck(&a.health, defaults.healthcheck.as_ref())?;
    spec.network = match a.network.first().map_or("none", String::as_str) {
        "none" => NetworkSpec::None,
        "host" => NetworkSpec::Host,
        other => match (other.strip_prefix("ns:"), other.strip_prefix("container:")) {
            (Some(p), _) => NetworkSpec::Path(PathBuf::from(p)),
            (_, Some(name)) => shared_netns(rt, name)?,
            // A named network: `create_container` connects the endpoint.
            _ => NetworkSpec::None,
        },
    };
    Ok(spec)
}

/// The container's healthcheck as Docker's CLI and daemon make it: `--no-healthcheck` gives a `NONE`
/// test; any `--health-*` flag gives a check whose empty fields (no command, zero times) come from
/// the image's; no flag at all keeps the image's check.
fn healthcheck(a: &HealthArgs, image: Option<&serde_json::Value>) -> Result<Option<Healthcheck>> {
    let duration = |flag: &str, v: &Option<String>| -> Result<Option<Duration>> {
        let Some(v) = v else { return Ok(None) };
        let ns = crate::compose::units::parse_duration(v).map_err(|e| anyhow!("invalid --{flag}: {e}"))?;
        if ns < 0 {
            bail!("--{flag} cannot be negative");
        }
        Ok(Some(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))))
    };
    let flags = Healthcheck {
        test: a
            .health_cmd
            .iter()
            .filter(|c| !c.is_empty())
            .flat_map(|c| ["CMD-SHELL".to_string(), c.clone()])
            .collect(),
        interval: duration("health-interval", &a.health_interval)?,
        timeout: duration("health-timeout", &a.health_timeout)?,
        retries: match a.health_retries {
            Some(r) if r < 0 => bail!("--health-retries cannot be negative"),
            Some(r) => Some(u32::try_from(r).map_err(|_| anyhow!("--health-retries {r} is too large"))?),
            None => None,
        },
        start_period: duration("health-start-period", &a.health_start_period)?,
        start_interval: duration("health-start-interval", &a.health_start_interval)?,
    };
    let is_set = |d: Option<Duration>| d.is_some_and(|d| !d.is_zero());
    let have_flags = !flags.test.is_empty()
        || is_set(flags.interval)
        || is_set(flags.timeout)
        || flags.retries.is_some_and(|r| r > 0)
        || is_set(flags.start_period)
        || is_set(flags.start_interval);
    let image = image.map(Healthcheck::from_docker);
    let check = if a.no_healthcheck {
        if have_flags {
            bail!("--no-healthcheck conflicts with --health-* options");
        }
        Some(Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        })
    } else if have_flags {
        Some(match &image {
            Some(i) => flags.or_from(i),
            None => flags,
        })
    } else {
        image
    };
    if let Some(c) = &check {
        c.validate()?;
    }
    Ok(check)
}

/// `Config.Healthcheck` of `inspect`, in Docker's shape (times in nanoseconds, zero fields left out).
fn healthcheck_json(c: &Healthcheck) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("Test".into(), serde_json::json!(c.test));
    for (k, d) in [
        ("Interval", c.interval),
        ("Timeout", c.timeout),
        ("StartPeriod", c.start_period),
        ("StartInterval", c.start_interval),
    ] {
        if let Some(d) = d.filter(|d| !d.is_zero()) {
            m.insert(
                k.into(),
                serde_json::json!(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            );
        }
    }
    if let Some(r) = c.retries.filter(|r| *r > 0) {
        m.insert("Retries".into(), serde_json::json!(r));
    }
    serde_json::Value::Object(m)
}

/// `State.Health` of `inspect`, in Docker's shape.
fn health_json(h: &Health) -> serde_json::Value {
    serde_json::json!({
        "Status": h.status.to_string(),
        "FailingStreak": h.failing_streak,
        "Log": h.log.iter().map(|r| serde_json::json!({
            "Start": r.start,
            "End": r.end,
            "ExitCode": r.exit_code,
            "Output": r.output,
        })).collect::<Vec<_>>(),
    })
}

/// `KEY=value` as is; a bare `KEY` takes its value from this process's environment, or is dropped.
fn env_entry(e: &str) -> String {
    if e.contains('=') {
        return e.to_string();
    }
    match std::env::var(e) {
        Ok(v) => format!("{e}={v}"),
        Err(_) => e.to_string(),
    }
}

fn parse_volume(v: &str, rt: &Runtime) -> Result<MountSpec> {
    let parts: Vec<&str> = v.split(':').collect();
    let (source, target, opts) = match parts.as_slice() {
        [t] => return anonymous_volume(t, rt),
        [s, t] => (*s, *t, ""),
        [s, t, o] => (*s, *t, *o),
        _ => bail!("invalid volume specification {v:?}"),
    };
    let mut read_only = false;
    let mut propagation = None;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" | "readonly" => read_only = true,
            "rw" => read_only = false,
            "z" | "Z" => {}
            p @ ("private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave") => {
                propagation = Some(p.to_string())
            }
            other => bail!("invalid mode {other:?} in volume {v:?}"),
        }
    }
    let kind = if source.starts_with('/') || source.starts_with('.') {
        let source = std::fs::canonicalize(source).with_context(|| format!("bind source path {source}"))?;
        MountKind::Bind { source, propagation }
    } else {
        MountKind::Volume {
            source: named_volume(source, rt)?,
        }
    };
    Ok(MountSpec {
        kind,
        target: target.to_string(),
        read_only,
    })
}

fn anonymous_volume(target: &str, rt: &Runtime) -> Result<MountSpec> {
    let name = crate::runtime::state::new_id();
    Ok(MountSpec {
        kind: MountKind::Volume {
            source: named_volume(&name, rt)?,
        },
        target: target.to_string(),
        read_only: false,
    })
}

/// The data directory of a named volume, created on first use.
fn named_volume(name: &str, rt: &Runtime) -> Result<PathBuf> {
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        bail!("invalid volume name {name:?}");
    }
    let dir = rt.root().join("volumes").join(name).join("_data");
    std::fs::create_dir_all(&dir).with_context(|| format!("create volume {}", dir.display()))?;
    Ok(dir)
}

/// Puts the terminal in raw mode while alive.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = nix::sys::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a valid winsize.
    let r = unsafe { libc::ioctl(std::io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 received by this CLI to the
/// container, like Docker's `--sig-proxy`. Call before spawning other threads: they inherit the mask.
fn proxy_signals(rt: &Runtime, c: &Container) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    let (rt, c) = (rt.clone(), c.clone());
    std::thread::spawn(move || {
        while let Ok(sig) = set.wait() {
            if let Err(e) = rt.refresh(&c).and_then(|c| rt.kill(&c, sig as i32)) {
                eprintln!("berth: forwarding {sig}: {e}");
            }
        }
    });
}

/// Relays a streaming session: stdin frames out (when `stdin`), stdout/stderr frames in, until the exit
/// frame; returns the exit code. A start failure arrives as an exit frame with a message.
fn stream_session(stream: std::os::unix::net::UnixStream, stdin: bool, tty: bool) -> Result<i32> {
    let _raw = if tty && nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
        RawMode::enter()
    } else {
        None
    };
    if tty && let Some((rows, cols)) = terminal_size() {
        let mut p = rows.to_le_bytes().to_vec();
        p.extend_from_slice(&cols.to_le_bytes());
        let mut w = &stream;
        let _ = w.write_all(&control::encode_frame(frame::RESIZE, &p));
    }
    if stdin {
        let mut w = stream.try_clone()?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut input = std::io::stdin();
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = w.write_all(&control::encode_frame(frame::STDIN_EOF, &[]));
                        return;
                    }
                    Ok(n) => {
                        if w.write_all(&control::encode_frame(frame::STDIN, &buf[..n])).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    let mut r = std::io::BufReader::new(&stream);
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    loop {
        let Some((kind, data)) = control::read_frame(&mut r)? else {
            bail!("the supervisor closed the connection before the container exited");
        };
        match kind {
            frame::STDOUT => {
                let mut o = stdout.lock();
                o.write_all(&data)?;
                o.flush()?;
            }
            frame::STDERR => {
                let mut e = stderr.lock();
                e.write_all(&data)?;
                e.flush()?;
            }
            frame::EXIT => {
                let (code, message) = control::exit_payload(&data);
                if !message.is_empty() {
                    drop(_raw);
                    eprintln!("berth: {message}");
                }
                return Ok(code);
            }
            _ => {}
        }
    }
}

fn exec(rt: &Runtime, a: &ExecArgs, out: &mut dyn Write) -> Result<i32> {
    let _ = out;
    let c = rt.lookup(&a.container)?;
    exec_in(
        rt,
        &c,
        ExecRequest {
            args: a.command.clone(),
            env: a.env.iter().map(|e| env_entry(e)).collect(),
            user: a.user.clone(),
            working_dir: a.workdir.clone(),
            tty: a.io.tty,
            stdin: a.io.interactive,
            privileged: a.privileged,
            detach: a.io.detach,
        },
    )
}

/// Runs an exec session in `c`: with `detach`, returns once it started; otherwise streams it
/// (stdin, tty) and returns its exit code.
pub fn exec_in(rt: &Runtime, c: &Container, req: ExecRequest) -> Result<i32> {
    let (detach, stdin, tty) = (req.detach, req.stdin, req.tty);
    let client = rt.exec(c, req)?;
    if detach {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(client.into_stream()), &mut line)?;
        return match serde_json::from_str::<control::Response>(&line) {
            Ok(control::Response::Started { .. }) => Ok(0),
            Ok(control::Response::Error { message }) => bail!("{message}"),
            // A start failure comes as an exit frame.
            _ => bail!("exec failed to start"),
        };
    }
    stream_session(client.into_stream(), stdin, tty)
}

/// Starts a created container attached: its output streams here (and stdin with
/// `interactive`), signals are forwarded, and its exit code is returned.
pub fn start_attached(rt: &Runtime, c: &Container, interactive: bool, tty: bool) -> Result<i32> {
    rt.start(c, StartMode::AttachFirst)?;
    let c = rt.refresh(c)?;
    proxy_signals(rt, &c);
    let session = rt.attach(&c, interactive)?.into_stream();
    stream_session(session, interactive, tty)
}

/// Docker's human durations: "Less than a second", "5 seconds", "About a minute", "3 hours", …
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let m = s / 60;
    let h = m / 60;
    match () {
        _ if s < 1 => "Less than a second".into(),
        _ if s == 1 => "1 second".into(),
        _ if s < 60 => format!("{s} seconds"),
        _ if m == 1 => "About a minute".into(),
        _ if m < 60 => format!("{m} minutes"),
        _ if h == 1 => "About an hour".into(),
        _ if h < 48 => format!("{h} hours"),
        _ if h < 24 * 7 * 2 => format!("{} days", h / 24),
        _ if h < 24 * 30 * 2 => format!("{} weeks", h / 24 / 7),
        _ if h < 24 * 365 * 2 => format!("{} months", h / 24 / 30),
        _ => format!("{} years", h / 24 / 365),
    }
}

pub fn since(ts: &str) -> Duration {
    ts.parse::<jiff::Timestamp>()
        .ok()
        .and_then(|t| jiff::Timestamp::now().duration_since(t).try_into().ok())
        .unwrap_or_default()
}

/// The STATUS column: `Up 3 seconds`, `Exited (0) 2 minutes ago`, …
pub fn status_text(c: &Container) -> String {
    let s = &c.state;
    match s.status {
        Status::Created => "Created".into(),
        Status::Running => {
            let up = format!("Up {}", human_duration(since(s.started_at.as_deref().unwrap_or(""))));
            match &s.health {
                Some(h) if h.status == HealthStatus::Starting => format!("{up} (health: starting)"),
                Some(h) => format!("{up} ({})", h.status),
                None => up,
            }
        }
        Status::Paused => format!(
            "Up {} (Paused)",
            human_duration(since(s.started_at.as_deref().unwrap_or("")))
        ),
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            s.exit_code.unwrap_or(0),
            human_duration(since(s.finished_at.as_deref().unwrap_or("")))
        ),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            s.exit_code.unwrap_or(0),
            human_duration(since(s.finished_at.as_deref().unwrap_or("")))
        ),
        Status::Dead => "Dead".into(),
    }
}

/// The COMMAND column, quoted and cut at 20 characters unless `no_trunc`.
pub fn command_text(c: &Container, no_trunc: bool) -> String {
    let cmd = c.config.spec.process.args.join(" ");
    if no_trunc || cmd.chars().count() <= 20 {
        return format!("\"{cmd}\"");
    }
    format!("\"{}…\"", cmd.chars().take(19).collect::<String>())
}

fn dir_size(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Bytes with Docker's units (decimal: kB, MB, GB).
pub fn human_size(n: u64) -> String {
    match scale(n, 1000.0, &["B", "kB", "MB", "GB", "TB"]) {
        (_, "B") => format!("{n}B"),
        (v, unit) => {
            // Four significant digits, trailing zeros dropped: Go's %.4g, as Docker prints sizes.
            let digits = [10.0, 100.0, 1000.0].iter().filter(|&&bound| v >= bound).count() + 1;
            let decimals = 4 - digits;
            let text = format!("{v:.decimals$}");
            let text = if text.contains('.') {
                text.trim_end_matches('0').trim_end_matches('.')
            } else {
                &text
            };
            format!("{text}{unit}")
        }
    }
}

/// Binary units for memory (KiB, MiB, GiB), as `docker stats`.
fn human_binary(n: u64) -> String {
    let (v, unit) = scale(n, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB"]);
    format!("{v:.2}{unit}").replace(".00B", "B")
}

/// `n` divided by `base` until it is below it (or the units run out), with the unit reached.
fn scale(n: u64, base: f64, units: &[&'static str]) -> (f64, &'static str) {
    let mut v = n as f64;
    let mut i = 0;
    while v >= base && i < units.len() - 1 {
        v /= base;
        i += 1;
    }
    (v, units[i])
}

fn ps(rt: &Runtime, all: bool, quiet: bool, size: bool, no_trunc: bool, out: &mut dyn Write) -> Result<()> {
    let list: Vec<Container> = rt.list()?.into_iter().filter(|c| all || c.is_running()).collect();
    let id = |c: &Container| {
        if no_trunc {
            c.id().to_string()
        } else {
            c.id()[..12].to_string()
        }
    };
    if quiet {
        for c in &list {
            writeln!(out, "{}", id(c))?;
        }
        return Ok(());
    }
    let mut rows = vec![vec![
        "CONTAINER ID".to_string(),
        "IMAGE".into(),
        "COMMAND".into(),
        "CREATED".into(),
        "STATUS".into(),
        "PORTS".into(),
        "NAMES".into(),
    ]];
    if size {
        rows[0].push("SIZE".into());
    }
    for c in &list {
        let mut row = vec![
            id(c),
            c.config.spec.image.clone(),
            command_text(c, no_trunc),
            format!("{} ago", human_duration(since(&c.config.created))),
            status_text(c),
            String::new(),
            c.name().to_string(),
        ];
        if size {
            row.push(human_size(dir_size(&c.dir.upper())));
        }
        rows.push(row);
    }
    write_table(out, &rows)
}

/// Writes rows in columns separated by three spaces, like Docker's tabwriter.
pub fn write_table(out: &mut dyn Write, rows: &[Vec<String>]) -> Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn logs(rt: &Runtime, c: &Container, follow: bool, tail: &str, timestamps: bool) -> Result<()> {
    let tail = match tail {
        "all" | "-1" => None,
        n => Some(n.parse::<usize>().map_err(|_| anyhow!("invalid --tail {n:?}"))?),
    };
    let print = |recs: &[crate::runtime::lifecycle::LogRecord]| -> Result<()> {
        let stdout = std::io::stdout();
        let stderr = std::io::stderr();
        for r in recs {
            let line = if timestamps {
                format!("{} {}", r.time, r.log)
            } else {
                r.log.clone()
            };
            if r.stream == "stderr" {
                stderr.lock().write_all(line.as_bytes())?;
            } else {
                stdout.lock().write_all(line.as_bytes())?;
            }
        }
        std::io::stdout().flush()?;
        Ok(())
    };
    let (recs, mut offset) = read_log(&c.dir.log(), 0, tail)?;
    print(&recs)?;
    if !follow {
        return Ok(());
    }
    loop {
        let running = rt.refresh(c).map(|c| c.is_running()).unwrap_or(false);
        let (recs, next) = read_log(&c.dir.log(), offset, None)?;
        offset = next;
        print(&recs)?;
        if !running {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn inspect_json(c: &Container) -> serde_json::Value {
    let spec = &c.config.spec;
    let s = &c.state;
    let mut doc = serde_json::json!({
        "Id": c.id(),
        "Created": c.config.created,
        "Path": spec.process.args.first(),
        "Args": spec.process.args.get(1..).unwrap_or_default(),
        "State": {
            "Status": s.status.to_string(),
            "Running": matches!(s.status, Status::Running | Status::Paused),
            "Paused": s.status == Status::Paused,
            "Restarting": s.status == Status::Restarting,
            "OOMKilled": s.oom_killed,
            "Dead": s.status == Status::Dead,
            "Pid": s.pid.unwrap_or(0),
            "ExitCode": s.exit_code.unwrap_or(0),
            "Error": s.error.clone().unwrap_or_default(),
            "StartedAt": s.started_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "FinishedAt": s.finished_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        },
        "Image": spec.image,
        "Name": format!("/{}", c.name()),
        "RestartCount": s.restart_count,
        "LogPath": c.dir.log(),
        "Config": {
            "Hostname": spec.hostname.clone().unwrap_or_else(|| c.id()[..12].to_string()),
            "Domainname": spec.domainname.clone().unwrap_or_default(),
            "User": spec.process.user,
            "Tty": spec.process.tty,
            "OpenStdin": spec.process.stdin,
            "Env": spec.process.env,
            "Cmd": spec.process.args,
            "Image": spec.image,
            "WorkingDir": spec.process.working_dir.clone().unwrap_or_default(),
            "Labels": spec.labels,
            "StopSignal": spec.stop_signal,
            "StopTimeout": spec.stop_timeout,
        },
        "HostConfig": {
            "Memory": spec.resources.memory.unwrap_or(0),
            "MemoryReservation": spec.resources.memory_reservation.unwrap_or(0),
            "NanoCpus": spec.resources.cpus.map_or(0, |c| (c * 1e9) as i64),
            "CpuShares": spec.resources.cpu_shares.unwrap_or(0),
            "PidsLimit": spec.resources.pids_limit,
            "CapAdd": spec.security.cap_add,
            "CapDrop": spec.security.cap_drop,
            "Privileged": spec.security.privileged,
            "ReadonlyRootfs": spec.rootfs.read_only,
            "Init": spec.init,
            "AutoRemove": spec.auto_remove,
            "RestartPolicy": spec.restart,
            "NetworkMode": match &spec.network {
                NetworkSpec::None => "none".to_string(),
                NetworkSpec::Host => "host".to_string(),
                NetworkSpec::Path(p) => format!("ns:{}", p.display()),
            },
        },
        "Mounts": spec.mounts,
        "GraphDriver": {
            "Name": "overlay2",
            "Data": {
                "LowerDir": spec.rootfs.layers,
                "UpperDir": c.dir.upper(),
                "WorkDir": c.dir.work(),
                "MergedDir": c.dir.merged(),
            }
        },
    });
    // Health exists while the process runs (a dead supervisor may have left a stale record).
    if let Some(h) = s
        .health
        .as_ref()
        .filter(|_| matches!(s.status, Status::Running | Status::Paused))
    {
        doc["State"]["Health"] = health_json(h);
    }
    if let Some(hc) = &spec.healthcheck {
        doc["Config"]["Healthcheck"] = healthcheck_json(hc);
    }
    doc
}

/// The processes of a container as a table.
pub fn top(rt: &Runtime, c: &Container, out: &mut dyn Write) -> Result<()> {
    let procs = rt.top(c)?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let mut rows = vec![vec![
        "UID".to_string(),
        "PID".into(),
        "PPID".into(),
        "TIME".into(),
        "CMD".into(),
    ]];
    // The host's user names, as `ps` prints them; read from the file, not through NSS (berth is static).
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for p in procs {
        let secs = p.cpu_ticks / hz;
        let user = process::user_name(&passwd, p.uid).map_or(p.uid.to_string(), str::to_string);
        rows.push(vec![
            user,
            p.pid.to_string(),
            p.ppid.to_string(),
            format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
            p.cmd,
        ]);
    }
    write_table(out, &rows)
}

fn stats(rt: &Runtime, names: &[String], no_stream: bool, out: &mut dyn Write) -> Result<()> {
    let list: Vec<Container> = if names.is_empty() {
        rt.list()?.into_iter().filter(|c| c.is_running()).collect()
    } else {
        names
            .iter()
            .map(|n| rt.lookup(n))
            .collect::<std::result::Result<_, _>>()?
    };
    loop {
        let first: Vec<_> = list.iter().map(|c| rt.stats(c).ok()).collect();
        let t0 = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(500));
        let elapsed = t0.elapsed().as_nanos() as f64;
        let mut rows = vec![vec![
            "CONTAINER ID".to_string(),
            "NAME".into(),
            "CPU %".into(),
            "MEM USAGE / LIMIT".into(),
            "MEM %".into(),
            "NET I/O".into(),
            "BLOCK I/O".into(),
            "PIDS".into(),
        ]];
        let host_mem = host_memory();
        for (c, before) in list.iter().zip(first) {
            let now = rt.stats(c).ok();
            let (cpu, mem, limit, pids) = match (before, now) {
                (Some(b), Some(n)) => {
                    let cpu = n.cpu_usage_ns.saturating_sub(b.cpu_usage_ns) as f64 / elapsed * 100.0;
                    let limit = n.memory_limit.filter(|l| *l < host_mem).unwrap_or(host_mem);
                    (cpu, n.memory_usage, limit, n.pids)
                }
                _ => (0.0, 0, host_mem, 0),
            };
            rows.push(vec![
                c.id()[..12].to_string(),
                c.name().to_string(),
                format!("{cpu:.2}%"),
                format!("{} / {}", human_binary(mem), human_binary(limit)),
                format!("{:.2}%", mem as f64 / limit.max(1) as f64 * 100.0),
                "0B / 0B".into(),
                "0B / 0B".into(),
                pids.to_string(),
            ]);
        }
        write_table(out, &rows)?;
        out.flush()?;
        if no_stream {
            return Ok(());
        }
    }
}

fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(Duration::from_millis(300)), "Less than a second");
        assert_eq!(human_duration(Duration::from_secs(5)), "5 seconds");
        assert_eq!(human_duration(Duration::from_secs(65)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600)), "3 hours");
        assert_eq!(human_duration(Duration::from_secs(3 * 86400)), "3 days");
    }

    fn health_args(flags: &[&str]) -> HealthArgs {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            h: HealthArgs,
        }
        let mut argv = vec!["x"];
        argv.extend_from_slice(flags);
        <P as clap::Parser>::parse_from(argv).h
    }

    #[test]
    fn healthchecks_merge_flags_over_the_image_like_docker() {
        let image = serde_json::json!({
            "Test": ["CMD", "curl", "-f", "http://localhost/"],
            "Interval": 10_000_000_000u64,
            "Retries": 5,
        });
        // No flag: the image's check.
        let c = healthcheck(&health_args(&[]), Some(&image)).unwrap().unwrap();
        assert_eq!(c.test, ["CMD", "curl", "-f", "http://localhost/"]);
        assert_eq!((c.interval, c.retries), (Some(Duration::from_secs(10)), Some(5)));
        assert_eq!(healthcheck(&health_args(&[]), None).unwrap(), None);
        // Flags replace what they set; the rest comes from the image.
        let c = healthcheck(&health_args(&["--health-interval", "1m30s"]), Some(&image))
            .unwrap()
            .unwrap();
        assert_eq!(c.test, ["CMD", "curl", "-f", "http://localhost/"]);
        assert_eq!((c.interval, c.retries), (Some(Duration::from_secs(90)), Some(5)));
        let c = healthcheck(
            &health_args(&["--health-cmd", "true", "--health-timeout", "500ms"]),
            Some(&image),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.test, ["CMD-SHELL", "true"]);
        assert_eq!(c.timeout, Some(Duration::from_millis(500)));
        assert_eq!(c.interval, Some(Duration::from_secs(10)));
        // --no-healthcheck: NONE, whatever the image says.
        let c = healthcheck(&health_args(&["--no-healthcheck"]), Some(&image))
            .unwrap()
            .unwrap();
        assert_eq!(c.test, ["NONE"]);
        assert!(!c.enabled());
        for (flags, err) in [
            (&["--no-healthcheck", "--health-retries", "2"][..], "conflicts"),
            (&["--health-start-period", "-5s"], "cannot be negative"),
            (&["--health-interval", "10us"], "cannot be less than 1ms"),
        ] {
            let e = healthcheck(&health_args(flags), None).unwrap_err().to_string();
            assert!(e.contains(err), "{flags:?}: {e}");
        }
        // An image check of an unknown form is refused at create, as Docker does.
        let bad = serde_json::json!({"Test": ["SHELL", "x"]});
        assert!(healthcheck(&health_args(&[]), Some(&bad)).is_err());
    }

    #[test]
    fn sizes_use_decimal_units() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1500), "1.5kB");
        assert_eq!(human_size(2_130_000), "2.13MB");
        assert_eq!(human_size(123_456_789), "123.5MB");
        assert_eq!(human_size(2_000_000), "2MB");
        // Four significant digits on each side of a power of ten.
        assert_eq!(human_size(9_999), "9.999kB");
        assert_eq!(human_size(56_780), "56.78kB");
        assert_eq!(human_size(999_900), "999.9kB");
        assert_eq!(human_binary(64 << 20), "64.00MiB");
    }
}
