//! `Runtime`: the life-cycle verbs on containers under one state root — create, start, kill, stop, wait,
//! pause, exec, top, stats, logs, delete — as seen from a CLI process. Long-lived work happens in the
//! per-container supervisor; this side only records, spawns and asks.

use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cgroup::{Cgroup, CgroupStats};
use super::control::{Client, ExecRequest, Request, Response};
use super::error::{Result, RuntimeError};
use super::spec::{ContainerSpec, NetworkSpec};
use super::state::{
    ContainerConfig, ContainerDir, FileLock, RunState, Status, new_id, now, write_json, write_json_atomic,
};
use super::supervisor::{ATTACH_FLAG, EXE_FD_ENV, GO_FD_ENV, READY_FD_ENV, STANDBY_FLAG, SUBCOMMAND};

/// Containers under one state root.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
}

/// A container as listed: its record and its observed state.
#[derive(Debug, Clone)]
pub struct Container {
    /// The immutable record.
    pub config: ContainerConfig,
    /// The state, with a dead supervisor shown as `dead`.
    pub state: RunState,
    /// Its state directory.
    pub dir: ContainerDir,
}

impl Container {
    /// The id.
    pub fn id(&self) -> &str {
        &self.config.id
    }
    /// The name.
    pub fn name(&self) -> &str {
        &self.config.spec.name
    }
    /// Whether a process runs (or is paused, or waits to restart).
    pub fn is_running(&self) -> bool {
        matches!(self.state.status, Status::Running | Status::Paused | Status::Restarting)
    }
    /// The network namespace another container joins to share this one's (`--network
    /// container:NAME`, Compose's `network_mode: service:x`): its kept namespace, the host's, or its
    /// running process's.
    pub fn shared_network(&self) -> Result<NetworkSpec> {
        Ok(match &self.config.spec.network {
            NetworkSpec::Path(p) => NetworkSpec::Path(p.clone()),
            NetworkSpec::Host => NetworkSpec::Host,
            NetworkSpec::None => match self.state.pid {
                Some(pid) if self.is_running() => NetworkSpec::Path(PathBuf::from(format!("/proc/{pid}/ns/net"))),
                _ => {
                    return Err(RuntimeError::State {
                        id: self.name().to_string(),
                        state: self.state.status.to_string(),
                        hint: "its network namespace can be joined only while it runs".into(),
                    });
                }
            },
        })
    }

    /// The cgroup.
    pub fn cgroup(&self) -> Result<Cgroup> {
        Cgroup::for_container(&self.config.id)
    }
}

/// How `start` should hand over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// Return once the process has been executed (or failed to be).
    Detached,
    /// Return once the supervisor listens; it starts the process when a client attaches.
    AttachFirst,
}

/// One log record, as stored (Docker's json-file format).
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
pub struct LogRecord {
    /// The line, with its newline.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// RFC 3339 time.
    pub time: String,
}

impl Runtime {
    /// Opens (and creates) the state root.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let containers = root.join("containers");
        std::fs::create_dir_all(&containers).map_err(RuntimeError::io("create", &containers))?;
        set_mode(&root, 0o711)?;
        Ok(Runtime { root })
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Records a new container: validates the spec, picks an id and name, prepares its directory.
    pub fn create(&self, mut spec: ContainerSpec) -> Result<Container> {
        validate(&spec)?;
        let _lock = FileLock::exclusive(&self.root.join("containers.lock"))?;
        super::state::sweep_removing(&self.root);
        let existing = self.list()?;
        if spec.name.is_empty() {
            spec.name = generate_name(&existing);
        } else if existing.iter().any(|c| c.name() == spec.name) {
            return Err(RuntimeError::NameInUse(spec.name));
        }
        let id = new_id();
        let dir = ContainerDir::new(&self.root, &id);
        let hostname = spec.hostname.clone().unwrap_or_else(|| id[..12].to_string());
        // A removed container's emptied directory, if one is spare, is filled in where it is (nothing lists
        // `spare/`) and renamed into place: only `upper/` and `work/` are made anew (see `state::recycle`).
        let spare = super::state::take_spare(&self.root).map(|dir| ContainerDir { dir });
        let made = (|| -> Result<ContainerConfig> {
            let at = spare.as_ref().unwrap_or(&dir);
            let mut mkdir = std::fs::DirBuilder::new();
            if spare.is_none() {
                mkdir
                    .mode(0o700)
                    .create(&dir.dir)
                    .map_err(RuntimeError::io("create", &dir.dir))?;
            }
            mkdir.mode(0o755);
            let mount_point = spare.is_none().then(|| dir.merged());
            for d in [at.upper(), at.work()].into_iter().chain(mount_point) {
                mkdir.create(&d).map_err(RuntimeError::io("create", &d))?;
            }
            let write = |name: &str, body: String| {
                let p = at.etc(name);
                std::fs::write(&p, body).map_err(RuntimeError::io("write", &p))
            };
            write("hostname", format!("{hostname}\n"))?;
            write("hosts", hosts_file(&spec))?;
            write("resolv.conf", resolv_conf(&spec))?;
            let config = ContainerConfig {
                id: id.clone(),
                created: now(),
                spec: spec.clone(),
            };
            // No state.json: a missing one reads as the default, a created container's.
            match &spare {
                Some(spare) => {
                    write_json(&spare.config(), &config)?;
                    std::fs::rename(&spare.dir, &dir.dir).map_err(RuntimeError::io("rename", &spare.dir))?;
                }
                // config.json last: a directory without it is an unfinished create and is ignored by `list`.
                None => write_json_atomic(&dir.config(), &config)?,
            }
            Ok(config)
        })();
        match made {
            Ok(config) => Ok(Container {
                config,
                state: RunState::default(),
                dir,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir.dir);
                if let Some(spare) = &spare {
                    let _ = std::fs::remove_dir_all(&spare.dir);
                }
                Err(e)
            }
        }
    }

    /// Appends `/etc/hosts` entries (`host`, `address`) to a container that has not started yet,
    /// such as its own address, which the network layer assigns after `create`.
    pub fn add_hosts(&self, c: &Container, entries: &[(String, String)]) -> Result<()> {
        let path = c.dir.etc("hosts");
        let mut text = std::fs::read_to_string(&path).map_err(RuntimeError::io("read", &path))?;
        for (host, addr) in entries {
            text.push_str(&format!("{addr}\t{host}\n"));
        }
        std::fs::write(&path, text).map_err(RuntimeError::io("write", &path))
    }

    /// Maps the container's host name (by default its short id) to `address` in its /etc/hosts,
    /// as Docker does with the address on its first network.
    pub fn add_own_address(&self, c: &Container, address: &str) -> Result<()> {
        let host = c
            .config
            .spec
            .hostname
            .clone()
            .unwrap_or_else(|| c.id()[..12].to_string());
        self.add_hosts(c, &[(host, address.to_string())])
    }

    /// Every container, newest first.
    pub fn list(&self) -> Result<Vec<Container>> {
        let base = self.root.join("containers");
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&base).map_err(RuntimeError::io("read", &base))?;
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let dir = ContainerDir::new(&self.root, &id);
            let config = match dir.read_config() {
                Ok(c) => c,
                // Half-created or being removed.
                Err(RuntimeError::Io { .. }) => continue,
                Err(e) => return Err(e),
            };
            let state = dir.observed_state()?;
            out.push(Container { config, state, dir });
        }
        out.sort_by(|a, b| b.config.created.cmp(&a.config.created));
        Ok(out)
    }

    fn get(&self, id: &str) -> Result<Container> {
        let dir = ContainerDir::new(&self.root, id);
        let config = dir.read_config().map_err(|_| RuntimeError::NotFound(id.to_string()))?;
        let state = dir.observed_state()?;
        Ok(Container { config, state, dir })
    }

    /// Finds a container by full name, full id, or unique id prefix.
    pub fn lookup(&self, name_or_id: &str) -> Result<Container> {
        let all = self.list()?;
        if let Some(c) = all.iter().find(|c| c.name() == name_or_id || c.id() == name_or_id) {
            return Ok(c.clone());
        }
        let mut by_prefix = all.into_iter().filter(|c| c.id().starts_with(name_or_id));
        match (by_prefix.next(), by_prefix.next()) {
            (Some(c), None) if !name_or_id.is_empty() => Ok(c),
            (Some(_), Some(_)) => Err(RuntimeError::Ambiguous(name_or_id.to_string())),
            _ => Err(RuntimeError::NotFound(name_or_id.to_string())),
        }
    }

    /// Re-reads a container's state.
    pub fn refresh(&self, c: &Container) -> Result<Container> {
        self.get(c.id())
    }

    /// Starts a created or exited container under a new supervisor.
    pub fn start(&self, c: &Container, mode: StartMode) -> Result<()> {
        self.ready_to_start(c)?;
        self.standby()?.go(&self.root, c.id(), mode)
    }

    /// Starts a supervisor before its container is known, so that loading the binary overlaps the caller's
    /// own work on the container (`create`, on another core); [`Runtime::start_on`] hands the container over.
    /// Dropped unused, the supervisor exits.
    pub fn standby(&self) -> Result<Standby> {
        spawn_standby(&self.root)
    }

    /// `start`, with a supervisor from [`Runtime::standby`].
    pub fn start_on(&self, c: &Container, mode: StartMode, standby: Standby) -> Result<()> {
        self.ready_to_start(c)?;
        standby.go(&self.root, c.id(), mode)
    }

    /// Refuses a running container; clears what a dead supervisor left.
    fn ready_to_start(&self, c: &Container) -> Result<()> {
        if c.is_running() {
            return Err(RuntimeError::State {
                id: c.name().to_string(),
                state: c.state.status.to_string(),
                hint: "it is already running".into(),
            });
        }
        if c.state.status == Status::Dead {
            self.cleanup_dead(c)?;
        }
        Ok(())
    }

    /// Sends a signal to the container's first process.
    pub fn kill(&self, c: &Container, signal: i32) -> Result<()> {
        self.require_running(c)?;
        match self.client(c)?.call(&Request::Kill { signal })? {
            Response::Ok => Ok(()),
            other => Err(self.unexpected(c, other)),
        }
    }

    /// Sends `signal`, waits up to `timeout` seconds, then SIGKILL; returns the exit code.
    ///
    /// A first process that can never receive `signal` (the kernel drops signals a namespace's
    /// PID 1 has no handler for, such as `sleep` run as the container's command) gets no grace
    /// period: waiting could only end in SIGKILL. Docker waits the full period in that case.
    pub fn stop(&self, c: &Container, signal: i32, timeout: u64) -> Result<Option<i32>> {
        if !c.is_running() {
            return Ok(c.state.exit_code);
        }
        let timeout = match c.state.pid {
            Some(pid) if c.state.status == Status::Running && !super::process::receives(pid, signal) => 0,
            _ => timeout,
        };
        match self.ask_until_exit(c, &Request::Stop { signal, timeout })? {
            Some(Response::Exited { code }) => Ok(Some(code)),
            Some(other) => Err(self.unexpected(c, other)),
            None => Ok(self.refresh(c)?.state.exit_code),
        }
    }

    /// Blocks until the container has exited for good; returns its exit code.
    pub fn wait(&self, c: &Container) -> Result<i32> {
        if c.is_running()
            && let Some(Response::Exited { code }) = self.ask_until_exit(c, &Request::Wait)?
        {
            return Ok(code);
        }
        // Not running, or the supervisor ended without answering: read what it recorded.
        Ok(self.refresh(c)?.state.exit_code.unwrap_or(-1))
    }

    /// Sends a request that is answered when the container exits, and waits until the supervisor is gone.
    /// `None`: the supervisor ended before it took the request (the container was exiting as we asked).
    fn ask_until_exit(&self, c: &Container, req: &Request) -> Result<Option<Response>> {
        let answer = self.client(c).and_then(|client| client.call(req));
        self.wait_supervisor_gone(c);
        match answer {
            Ok(r) => Ok(Some(r)),
            Err(_) if !c.dir.supervisor_alive() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Freezes or thaws every process of the container.
    pub fn pause(&self, c: &Container, freeze: bool) -> Result<()> {
        self.require_running(c)?;
        let req = if freeze { Request::Pause } else { Request::Unpause };
        match self.client(c)?.call(&req)? {
            Response::Ok => Ok(()),
            other => Err(self.unexpected(c, other)),
        }
    }

    /// Opens a streaming exec session; the caller drives the frames.
    pub fn exec(&self, c: &Container, req: ExecRequest) -> Result<Client> {
        self.require_running(c)?;
        let mut client = self.client(c)?;
        client.send(&Request::Exec(req))?;
        Ok(client)
    }

    /// Opens a streaming attach session.
    pub fn attach(&self, c: &Container, stdin: bool) -> Result<Client> {
        let mut client = self.client(c)?;
        client.send(&Request::Attach { stdin })?;
        Ok(client)
    }

    /// Removes a container and everything it owns. A running one needs `force` (it is killed first).
    pub fn delete(&self, c: &Container, force: bool) -> Result<()> {
        if c.is_running() {
            if !force {
                return Err(RuntimeError::State {
                    id: c.name().to_string(),
                    state: c.state.status.to_string(),
                    hint: "stop the container before removing it, or force the removal".into(),
                });
            }
            self.stop(c, nix::sys::signal::Signal::SIGKILL as i32, 0)?;
        }
        self.wait_supervisor_gone(c);
        self.cleanup_dead(c)?;
        c.dir.remove().map_err(RuntimeError::io("remove", &c.dir.dir))
    }

    /// Clears what a killed supervisor left behind: processes and the cgroup.
    fn cleanup_dead(&self, c: &Container) -> Result<()> {
        let cg = c.cgroup()?;
        let _ = cg.kill_all();
        cg.delete()?;
        if c.state.status == Status::Dead {
            let mut s = c.state.clone();
            s.status = Status::Exited;
            s.pid = None;
            s.health = None;
            s.finished_at.get_or_insert_with(now);
            c.dir.write_state(&s)?;
        }
        Ok(())
    }

    /// The container's processes: host pid, ppid, uid, start-relative CPU time and command line.
    pub fn top(&self, c: &Container) -> Result<Vec<ProcessInfo>> {
        self.require_running(c)?;
        let mut out = Vec::new();
        for pid in c.cgroup()?.pids()? {
            if let Some(p) = ProcessInfo::read(pid) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Memory, CPU and pids from the cgroup.
    pub fn stats(&self, c: &Container) -> Result<CgroupStats> {
        c.cgroup()?.stats()
    }

    /// Reads the log records; `tail` keeps the last N.
    pub fn logs(&self, c: &Container, tail: Option<usize>) -> Result<(Vec<LogRecord>, u64)> {
        read_log(&c.dir.log(), 0, tail)
    }

    fn require_running(&self, c: &Container) -> Result<()> {
        if c.is_running() {
            return Ok(());
        }
        Err(RuntimeError::State {
            id: c.name().to_string(),
            state: c.state.status.to_string(),
            hint: "start it first".into(),
        })
    }

    fn client(&self, c: &Container) -> Result<Client> {
        Client::connect(&c.dir.socket(), c.name())
    }

    fn unexpected(&self, c: &Container, r: Response) -> RuntimeError {
        RuntimeError::Supervisor {
            id: c.name().to_string(),
            message: match r {
                Response::Error { message } => message,
                other => format!("unexpected answer {other:?}"),
            },
        }
    }

    /// The supervisor exits right after answering; wait (briefly) until its lock is free.
    fn wait_supervisor_gone(&self, c: &Container) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.dir.supervisor_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Reads log records from byte `offset`; returns them and the offset after the last complete line.
pub fn read_log(path: &Path, offset: u64, tail: Option<usize>) -> Result<(Vec<LogRecord>, u64)> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(RuntimeError::io("open", path)(e)),
    };
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(offset))
        .map_err(RuntimeError::io("seek", path))?;
    let mut r = std::io::BufReader::new(f);
    let mut out = Vec::new();
    let mut pos = offset;
    let mut line = String::new();
    loop {
        line.clear();
        let n = r.read_line(&mut line).map_err(RuntimeError::io("read", path))?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        pos += n as u64;
        if let Ok(rec) = serde_json::from_str::<LogRecord>(&line) {
            out.push(rec);
        }
    }
    if let Some(t) = tail
        && out.len() > t
    {
        out.drain(..out.len() - t);
    }
    Ok((out, pos))
}

/// One process of a container, for `top`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessInfo {
    /// Host pid.
    pub pid: i32,
    /// Parent pid.
    pub ppid: i32,
    /// Real uid.
    pub uid: u32,
    /// CPU time in clock ticks.
    pub cpu_ticks: u64,
    /// Command line, or `[comm]`.
    pub cmd: String,
}

impl ProcessInfo {
    fn read(pid: i32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (comm, f) = super::process::stat_fields(&stat)?;
        let ppid = f.get(1)?.parse().ok()?;
        let cpu = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse().ok())
            .unwrap_or(0);
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmd = if raw.is_empty() {
            format!("[{comm}]")
        } else {
            raw.split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        Some(ProcessInfo {
            pid,
            ppid,
            uid,
            cpu_ticks: cpu,
            cmd,
        })
    }
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(RuntimeError::io("chmod", p))
}

fn validate(spec: &ContainerSpec) -> Result<()> {
    let valid_name = |n: &str| {
        let mut chars = n.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    if !spec.name.is_empty() && !valid_name(&spec.name) {
        return Err(RuntimeError::Spec(format!(
            "invalid container name {:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
            spec.name
        )));
    }
    if let Some(h) = &spec.healthcheck {
        h.validate()?;
    }
    if spec.process.args.is_empty() {
        return Err(RuntimeError::Spec("no command specified".into()));
    }
    if let Some(sig) = &spec.stop_signal {
        super::process::parse_signal(sig).map_err(RuntimeError::Spec)?;
    }
    if spec.rootfs.layers.is_empty() {
        return Err(RuntimeError::Spec("no root file system".into()));
    }
    for l in &spec.rootfs.layers {
        if !l.is_dir() {
            return Err(RuntimeError::Spec(format!(
                "root file system layer {} is not a directory",
                l.display()
            )));
        }
    }
    for m in &spec.mounts {
        if !m.target.starts_with('/') {
            return Err(RuntimeError::Spec(format!(
                "mount target {:?} is not absolute",
                m.target
            )));
        }
        if let super::spec::MountKind::Bind { source, .. } | super::spec::MountKind::Volume { source } = &m.kind
            && !source.exists()
        {
            return Err(RuntimeError::Spec(format!(
                "bind source path does not exist: {}",
                source.display()
            )));
        }
    }
    for key in spec.sysctls.keys() {
        let namespaced = key.starts_with("kernel.shm")
            || key.starts_with("kernel.msg")
            || key == "kernel.sem"
            || key.starts_with("fs.mqueue.")
            || (key.starts_with("net.") && spec.network != NetworkSpec::Host);
        if !namespaced {
            return Err(RuntimeError::Spec(format!(
                "sysctl {key:?} is not namespaced (or needs a network namespace of its own)"
            )));
        }
    }
    Ok(())
}

fn hosts_file(spec: &ContainerSpec) -> String {
    if spec.network == NetworkSpec::Host {
        return std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    }
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for (host, addr) in &spec.extra_hosts {
        s.push_str(&format!("{addr}\t{host}\n"));
    }
    s
}

/// The host's resolv.conf without loopback name servers (unreachable from a container), or Docker's
/// fallback servers when none are left.
fn resolv_conf(spec: &ContainerSpec) -> String {
    if let Some(r) = &spec.resolv_conf {
        return r.clone();
    }
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if spec.network == NetworkSpec::Host {
        return host;
    }
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut f = line.split_whitespace();
        if f.next() == Some("nameserver") {
            let addr = f.next().unwrap_or("");
            if addr.starts_with("127.") || addr == "::1" {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lively", "merry", "nimble", "proud",
    "quiet", "swift", "tidy", "witty",
];
const NOUNS: &[&str] = &[
    "anchor", "buoy", "cabin", "dock", "ferry", "galley", "harbor", "island", "jetty", "keel", "lagoon", "mast",
    "quay", "reef", "sail", "tide",
];

/// A Docker-style `adjective_noun` name not yet taken.
fn generate_name(existing: &[Container]) -> String {
    let id = new_id();
    let b = u32::from_str_radix(&id[..8], 16).unwrap_or(0) as usize;
    let base = format!("{}_{}", ADJECTIVES[b % ADJECTIVES.len()], NOUNS[(b / 16) % NOUNS.len()]);
    if !existing.iter().any(|c| c.name() == base) {
        return base;
    }
    format!("{base}_{}", &id[8..14])
}

/// A read-only clone of our own binary (a detached bind mount), so no process in a container can
/// overwrite it through /proc/PID/exe (CVE-2019-5736). `None` on kernels without open_tree.
fn readonly_self_exe() -> Option<OwnedFd> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    // SAFETY: open_tree with a valid NUL-terminated path; the result is a new fd we own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/proc/self/exe".as_ptr(),
            libc::OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr on our detached mount fd with a valid, sized attribute struct.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    (r == 0).then_some(fd)
}

/// A supervisor started ahead of its container ([`Runtime::standby`]), waiting for the container's id.
#[derive(Debug)]
pub struct Standby {
    /// Where the id goes; closed unused, it tells the supervisor to exit.
    go: OwnedFd,
    /// Where the supervisor reports, in one line, once the container has started or failed to.
    ready: OwnedFd,
    /// The process started, which leaves the supervisor to init and exits at once.
    _launcher: Launcher,
}

/// A child that exits by itself right after it starts, reaped on drop.
#[derive(Debug)]
struct Launcher(nix::unistd::Pid);

impl Drop for Launcher {
    fn drop(&mut self) {
        let _ = nix::sys::wait::waitpid(self.0, None);
    }
}

impl Standby {
    /// Hands container `id` over and waits for the supervisor's report.
    fn go(self, root: &Path, id: &str, mode: StartMode) -> Result<()> {
        let Standby { go, ready, _launcher } = self;
        let order = match mode {
            StartMode::AttachFirst => format!("{id} {ATTACH_FLAG}\n"),
            StartMode::Detached => format!("{id}\n"),
        };
        // A supervisor that died early is reported below, from its log, like one that dies later.
        let _ = std::fs::File::from(go).write_all(order.as_bytes());
        let mut msg = String::new();
        // One line, not to EOF: a container process held before its command shares the pipe until it runs.
        let _ = std::io::BufReader::new(std::fs::File::from(ready)).read_line(&mut msg);
        if msg.starts_with("ok") {
            return Ok(());
        }
        if let Some(rest) = msg.strip_prefix("err ") {
            let (code, message) = rest.trim_end().split_once(' ').unwrap_or((rest, ""));
            return Err(RuntimeError::Start {
                code: code.parse().unwrap_or(125),
                message: message.to_string(),
            });
        }
        let log = std::fs::read_to_string(ContainerDir::new(root, id).supervisor_log()).unwrap_or_default();
        Err(RuntimeError::Supervisor {
            id: id[..12].to_string(),
            message: format!("exited before reporting: {}", log.trim()),
        })
    }
}

/// Starts `berth __supervise ROOT --standby` with `posix_spawn`, which does not copy this process's memory as
/// `fork` would. The started process forks the supervisor off to init and exits (see `supervisor::main`). The
/// supervisor reads the container's id from fd 4, reports on fd 3 and gets the binary's clone on fd 5.
fn spawn_standby(root: &Path) -> Result<Standby> {
    use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (ready_r, ready_w) = super::spawn::pipe()?;
    let (go_r, go_w) = super::spawn::pipe()?;
    // Above 4, so that the dup2s onto 3 and 4 overwrite neither each other's source nor the program.
    let above = |fd: OwnedFd| -> Result<OwnedFd> {
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
            .map_err(RuntimeError::sys("fcntl"))
            // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nobody else owns.
            .map(|raw| unsafe { OwnedFd::from_raw_fd(raw) })
    };
    let (ready_w, go_r) = (above(ready_w)?, above(go_r)?);
    let exe = readonly_self_exe().map(above).transpose()?;
    let program = match &exe {
        Some(_) => "/proc/self/fd/5",
        None => "/proc/self/exe",
    };
    let cstring =
        |b: &[u8]| CString::new(b).map_err(|_| RuntimeError::sys("spawn supervisor")(nix::errno::Errno::EINVAL));
    let args = [
        cstring(b"berth-supervisor")?,
        cstring(SUBCOMMAND.as_bytes())?,
        cstring(root.as_os_str().as_bytes())?,
        cstring(STANDBY_FLAG.as_bytes())?,
    ];
    let ours = [
        (READY_FD_ENV, "3"),
        (GO_FD_ENV, "4"),
        (EXE_FD_ENV, if exe.is_some() { "5" } else { "" }),
    ];
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| !ours.iter().any(|(name, _)| k.as_bytes() == name.as_bytes()))
        .filter_map(|(k, v)| CString::new([k.as_bytes(), b"=", v.as_bytes()].concat()).ok())
        .collect();
    for (k, v) in ours.into_iter().filter(|(_, v)| !v.is_empty()) {
        env.push(cstring(format!("{k}={v}").as_bytes())?);
    }
    let (ready_raw, go_raw) = (ready_w.as_raw_fd(), go_r.as_raw_fd());
    let exe_raw = exe.as_ref().map(|fd| fd.as_raw_fd());
    let spawn = || -> nix::Result<nix::unistd::Pid> {
        use nix::fcntl::OFlag;
        use nix::sys::signal::{SigSet, Signal};
        use nix::sys::stat::Mode;
        let mut actions = PosixSpawnFileActions::init()?;
        actions.add_open(0, c"/dev/null", OFlag::O_RDONLY, Mode::empty())?;
        // stderr too: the supervisor writes its few messages to the container's supervisor.log itself.
        for fd in [1, 2] {
            actions.add_open(fd, c"/dev/null", OFlag::O_WRONLY, Mode::empty())?;
        }
        actions.add_dup2(ready_raw, 3)?;
        actions.add_dup2(go_raw, 4)?;
        // The supervisor keeps the clone of the binary open: closing its last descriptor dissolves the
        // detached mount, which waits for an RCU grace period (0.2-1.5 ms here). The supervisor does that
        // once it is idle, instead of this process on the way to starting the container.
        if let Some(fd) = exe_raw {
            actions.add_dup2(fd, 5)?;
        }
        let mut attr = PosixSpawnAttr::init()?;
        attr.set_sigmask(&SigSet::empty())?;
        let mut defaults = SigSet::empty();
        defaults.add(Signal::SIGPIPE);
        attr.set_sigdefault(&defaults)?;
        attr.set_flags(PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF)?;
        nix::spawn::posix_spawn(program, &actions, &attr, &args, &env)
    };
    let launcher = spawn().map_err(RuntimeError::sys("spawn supervisor"))?;
    Ok(Standby {
        go: go_w,
        ready: ready_r,
        _launcher: Launcher(launcher),
    })
}
