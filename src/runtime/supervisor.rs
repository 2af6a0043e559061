//! The per-container supervisor: a small detached process (`berth` re-executed) that outlives the CLI. It
//! starts the container's first process, holds its stdio, writes the log, records exits in `state.json`,
//! applies the restart policy with back-off, and serves the control socket (stop, kill, wait, pause,
//! attach, exec) and runs the healthcheck's probes. One thread, one `poll` loop; it exits when the
//! container stops for good.
//!
//! Being one thread makes it the only writer of `state.json`: exits, restarts, pauses and health
//! results all change the one `RunState` it holds and write it whole, so no update can be lost.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::cgroup::Cgroup;
use super::control::{self, ExecRequest, Request, Response, frame};
use super::error::{Result, RuntimeError};
use super::health::{self, Health, HealthResult, Healthcheck};
use super::process;
use super::rootfs::RootfsPlan;
use super::seccomp::Filter;
use super::spawn::{self, ChildStdio, ContainerNamespaces, InitPlan, ProcessPlan};
use super::spec::{NetworkSpec, RestartPolicy};
use super::state::{ContainerConfig, ContainerDir, RunState, Status, now};

/// The hidden subcommand that runs a supervisor.
pub const SUBCOMMAND: &str = "__supervise";

/// Environment variable naming the fd on which the supervisor reports readiness.
pub const READY_FD_ENV: &str = "BERTH_READY_FD";

/// Environment variable naming the fd from which a standby supervisor reads its order: the container's id,
/// then ` --attach` when it should wait for a client.
pub const GO_FD_ENV: &str = "BERTH_GO_FD";

/// Environment variable naming the fd of the read-only clone of the binary the supervisor runs from (empty
/// when there is none); see `Supervisor::exe`.
pub const EXE_FD_ENV: &str = "BERTH_EXE_FD";

/// The argument, in place of a container id, that starts a supervisor on standby (see `Runtime::standby`).
pub const STANDBY_FLAG: &str = "--standby";

/// The second word of a standby order that makes the supervisor wait for a client before starting.
pub const ATTACH_FLAG: &str = "--attach";

/// A client that must not stall the supervisor: writes give up after this long.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a new supervisor waits for the container's previous one to exit.
const PREDECESSOR_PATIENCE: Duration = Duration::from_secs(5);

/// How long after a start, exec or probe the supervisor sheds its start-up pages (see `shed_later`).
const SHED_DELAY: Duration = Duration::from_millis(50);

/// Entry point of `berth __supervise <state-root> --standby` (see `Runtime::standby`). Returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let (Some(root), Some(STANDBY_FLAG)) = (args.first(), args.get(1).map(String::as_str)) else {
        eprintln!("usage: berth {SUBCOMMAND} <state-root> {STANDBY_FLAG}");
        return 2;
    };
    // Whatever else the caller left open without close-on-exec (a shell's extra pipe, say) is not ours to keep
    // for as long as the container runs: 0-2 are /dev/null, 3-5 the report pipe, the order pipe and the binary
    // (see `Runtime::standby`).
    // SAFETY: nothing in this process has opened a descriptor from 6 up.
    unsafe { crate::fsutil::close_from(6) };
    // Leave the caller: the started process forks and returns to it at once, so the caller reaps a process
    // that is already gone and init adopts the supervisor. Then a session of its own, away from the caller's
    // terminal and its signals.
    // SAFETY: fork while single-threaded (no thread is started before this); the parent only calls _exit.
    match unsafe { libc::fork() } {
        -1 => return 1,
        0 => {}
        // SAFETY: ends the parent without running anything more.
        _ => unsafe { libc::_exit(0) },
    }
    let _ = nix::unistd::setsid();
    // Executed from a descriptor, the process would be named after its number ("5") in ps and top.
    let _ = nix::sys::prctl::set_name(c"berth-supervise");
    let root = PathBuf::from(root);
    let Some((id, attach_wait)) = take_order() else {
        // The caller gave up on the start (its create failed, or it died): nothing to do.
        return 0;
    };
    let dir = ContainerDir::new(&root, &id);
    let log = dir.clone();
    std::panic::set_hook(Box::new(move |info| complain(&log, &info.to_string())));
    // SAFETY: the fd numbers come from our own parent, which dup'ed a pipe and the binary there for us.
    let ready = inherited_fd(READY_FD_ENV).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    // SAFETY: as above.
    let exe = inherited_fd(EXE_FD_ENV).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    // The caller reads supervisor.log when the pipe ends without a report: it must not end before the
    // message below is written.
    let _until_logged = ready.as_ref().and_then(|fd| fd.try_clone().ok());
    match Supervisor::run(root, &id, attach_wait, ready, exe) {
        Ok(()) => 0,
        Err(e) => {
            complain(&dir, &e.to_string());
            1
        }
    }
}

/// Creates `cg` with its limits (and, for a privileged container, access to every device).
fn make_cgroup(cg: &Cgroup, resources: &super::spec::Resources, privileged: bool) -> Result<()> {
    cg.create(resources)?;
    if privileged {
        cg.allow_all_devices()?;
    }
    Ok(())
}

/// The container's `container.log`, made on its first line: many containers print nothing, and on a busy
/// ext4 every file made and deleted slows the next one down. (`logs` reads a missing log as empty.)
struct LazyLog {
    dir: ContainerDir,
    file: Option<std::fs::File>,
    /// Set once the log could not be opened, which is reported once, to supervisor.log.
    failed: bool,
}

impl LazyLog {
    fn new(dir: &ContainerDir) -> Self {
        LazyLog {
            dir: dir.clone(),
            file: None,
            failed: false,
        }
    }

    fn write_all(&mut self, bytes: &[u8]) {
        if self.file.is_none() && !self.failed {
            let path = self.dir.log();
            match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    self.failed = true;
                    complain(
                        &self.dir,
                        &format!("cannot open {}: {e}; output is not logged", path.display()),
                    );
                }
            }
        }
        if let Some(f) = &mut self.file {
            let _ = f.write_all(bytes);
        }
    }

    fn flush(&mut self) {
        if let Some(f) = &mut self.file {
            let _ = f.flush();
        }
    }
}

/// Appends a line to the container's `supervisor.log`, which is made on first use: most supervisors never
/// write one, and on a busy ext4 every file made and deleted slows the next one down.
fn complain(dir: &ContainerDir, message: &str) {
    let path = dir.supervisor_log();
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "supervisor: {message}");
    }
}

/// The fd number in environment variable `name`, marked close-on-exec (no container process may keep it);
/// the variable is removed.
fn inherited_fd(name: &str) -> Option<RawFd> {
    let fd = std::env::var(name).ok().and_then(|s| s.parse::<RawFd>().ok());
    // SAFETY: removing a variable while single-threaded.
    unsafe { std::env::remove_var(name) };
    let fd = fd?;
    // SAFETY: fcntl on a plain fd number; a bad one only fails.
    (unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == 0).then_some(fd)
}

/// A standby supervisor's order: the container id and whether to wait for a client, read to EOF from the go
/// pipe. `None` when the caller closed the pipe without an order, or sent a malformed one.
fn take_order() -> Option<(String, bool)> {
    // SAFETY: the fd number comes from our own parent, which dup'ed a pipe there for us.
    let go = unsafe { OwnedFd::from_raw_fd(inherited_fd(GO_FD_ENV)?) };
    let mut order = String::new();
    std::fs::File::from(go).read_to_string(&mut order).ok()?;
    let mut words = order.split_whitespace();
    let id = words.next()?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let attach_wait = words.next() == Some(ATTACH_FLAG);
    Some((id.to_string(), attach_wait))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The frame kind that carries this stream to clients.
    fn frame(self) -> u8 {
        match self {
            Stream::Stdout => frame::STDOUT,
            Stream::Stderr => frame::STDERR,
        }
    }
}

struct Output {
    fd: OwnedFd,
    stream: Stream,
    partial: Vec<u8>,
    /// Reached EOF; dropped after the current poll round, so indices stay valid during it.
    closed: bool,
}

/// A first process that is set up and waits for `release_main`.
struct Held {
    spawned: spawn::Spawned,
    outputs: Vec<Output>,
    stdin: Option<OwnedFd>,
    pty_socket: Option<OwnedFd>,
}

/// The supervisor's side of one process's stdio, for the container's first process and for exec.
struct ProcIo {
    /// Output pipes, or the pty master alone.
    outputs: Vec<Output>,
    /// The write end of its stdin pipe, when stdin is kept open (no terminal).
    stdin: Option<OwnedFd>,
    /// The process has a terminal: `outputs[0]` is its master and takes the input too.
    pty: bool,
}

impl ProcIo {
    /// Completes the stdio of a spawned process: a child with a terminal has sent its master on `pty_socket`.
    fn new(mut outputs: Vec<Output>, stdin: Option<OwnedFd>, pty_socket: Option<OwnedFd>) -> ProcIo {
        if let Some(sock) = &pty_socket
            && let Some(master) = spawn::receive_pty_master(sock)
        {
            set_nonblocking(master.as_fd());
            outputs.push(Output {
                fd: master,
                stream: Stream::Stdout,
                partial: Vec::new(),
                closed: false,
            });
        }
        ProcIo {
            outputs,
            stdin,
            pty: pty_socket.is_some(),
        }
    }

    fn master(&self) -> Option<BorrowedFd<'_>> {
        self.outputs.first().filter(|_| self.pty).map(|o| o.fd.as_fd())
    }

    fn write_stdin(&self, data: &[u8]) {
        if let Some(fd) = self.master().or(self.stdin.as_ref().map(|f| f.as_fd())) {
            write_all_fd(fd, data);
        }
    }

    fn close_stdin(&mut self) {
        match self.master() {
            // A terminal has no EOF of its own; send ^D as a terminal would.
            Some(fd) => write_all_fd(fd, &[4]),
            None => self.stdin = None,
        }
    }

    fn resize(&self, data: &[u8]) {
        if let Some(fd) = self.master() {
            resize(fd, data);
        }
    }
}

struct MainProc {
    pid: Pid,
    io: ProcIo,
    started: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Attached { stdin: bool },
    Exec(Pid),
    Waiting,
}

struct Conn {
    stream: UnixStream,
    inbuf: Vec<u8>,
    mode: Mode,
}

struct ExecSession {
    pid: Pid,
    io: ProcIo,
    exit: Option<i32>,
    /// Reported to its client; dropped after the current poll round.
    finished: bool,
}

/// The healthcheck of the running process: when the next probe is due, and the probe in flight.
/// Its timers are deadlines of the supervisor's `poll` loop; no thread of its own.
struct HealthMonitor {
    check: Healthcheck,
    /// What a probe runs.
    argv: Vec<String>,
    /// When the next probe starts; `None` while one runs or the process is not running.
    due: Option<Instant>,
    probe: Option<Probe>,
}

/// A probe in flight: an exec'd process whose stdout and stderr share one pipe.
struct Probe {
    pid: Pid,
    /// The read end of its output pipe, until EOF.
    out: Option<OwnedFd>,
    /// The first `health::MAX_OUTPUT` bytes of its output.
    kept: Vec<u8>,
    /// It wrote more than was kept.
    truncated: bool,
    /// When it started, RFC 3339, and as an instant.
    start: String,
    started: Instant,
    /// When it is killed and counted as failed.
    deadline: Instant,
}

impl Probe {
    /// Reads what its output pipe holds, keeping the first bytes; drops the pipe at EOF. Reads at most
    /// 64 KiB per call, so a probe that writes without end cannot hold the loop.
    fn read_output(&mut self) {
        let Some(fd) = &self.out else { return };
        let mut buf = [0u8; 4096];
        for _ in 0..16 {
            match nix::unistd::read(fd.as_fd(), &mut buf) {
                Ok(n) if n > 0 => {
                    let room = health::MAX_OUTPUT - self.kept.len();
                    self.kept.extend_from_slice(&buf[..n.min(room)]);
                    self.truncated |= n > room;
                }
                Err(nix::Error::EINTR) => {}
                Err(nix::Error::EAGAIN) => return,
                // EOF, or a pipe that cannot be read.
                _ => {
                    self.out = None;
                    return;
                }
            }
        }
    }

    /// Kills it and whatever it started: a probe leads its own session and process group. The
    /// zombie is reaped by `reap`, which no longer knows it.
    fn kill(&self) {
        let _ = nix::sys::signal::killpg(self.pid, Signal::SIGKILL);
        let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
    }
}

struct Supervisor {
    dir: ContainerDir,
    cfg: ContainerConfig,
    state: RunState,
    cgroup: Option<Cgroup>,
    /// The container's mount namespace, held open while its process runs. The last process to leave a
    /// mount namespace unmounts everything in it before its parent hears of its exit, waiting twice for
    /// an RCU grace period; holding it moves that work after the clients have been told.
    mnt_ns: Option<std::fs::File>,
    /// The first start's root overlay (see `rootfs::make_overlay`) and, for a container with a network of
    /// its own, its new network namespace (`spawn::new_private_netns`), being made on another thread while
    /// the supervisor starts up; joined before the clone, which must happen single-threaded.
    overlay: Option<std::thread::JoinHandle<(Option<OwnedFd>, Option<OwnedFd>)>>,
    filter: Option<Filter>,
    caps: Vec<caps::Capability>,
    listener: UnixListener,
    sigfd: SignalFd,
    log: LazyLog,
    main: Option<MainProc>,
    held: Option<Held>,
    conns: Vec<Option<Conn>>,
    execs: Vec<ExecSession>,
    pending_stdin: VecDeque<Vec<u8>>,
    stop_deadline: Option<Instant>,
    restart_at: Option<Instant>,
    backoff: Duration,
    ready: Option<OwnedFd>,
    attach_deadline: Option<Instant>,
    /// When to drop the pages start-up code touched (see memory.rs), once things have settled.
    shed_at: Option<Instant>,
    /// The root's lower layers, top-most first: the shared mount points, then the image's.
    lowers: Vec<PathBuf>,
    /// The descriptor of the read-only clone of the binary this process runs from, passed on by the CLI so
    /// that its close, which waits for an RCU grace period, happens here when idle (at the first shedding) or at
    /// exit. The mount itself lives on as long as this process runs from it.
    exe: Option<OwnedFd>,
    health: Option<HealthMonitor>,
    done: bool,
}

impl Supervisor {
    fn run(root: PathBuf, id: &str, attach_wait: bool, ready: Option<OwnedFd>, exe: Option<OwnedFd>) -> Result<()> {
        let dir = ContainerDir::new(&root, id);
        // A start right after the container exited may find its last supervisor still cleaning up.
        let Some(_lock) = dir.lock_supervisor(PREDECESSOR_PATIENCE)? else {
            return Err(RuntimeError::Supervisor {
                id: id.to_string(),
                message: "another supervisor already runs this container".into(),
            });
        };
        let cfg = dir.read_config()?;
        let mut state = dir.read_state()?;
        let mount_points =
            super::state::mount_points_layer(&root).map_err(RuntimeError::io("make", root.join("mountpoints")))?;
        let lowers: Vec<PathBuf> = std::iter::once(mount_points)
            .chain(cfg.spec.rootfs.layers.iter().cloned())
            .collect();
        let overlay = {
            let (layers, upper, work) = (lowers.clone(), dir.upper(), dir.work());
            let volatile = cfg.spec.auto_remove;
            let private_net = cfg.spec.network == NetworkSpec::None;
            std::thread::Builder::new()
                .spawn(move || {
                    let overlay = crate::runtime::rootfs::make_overlay(&layers, &upper, &work, volatile);
                    // Should this fail, the clone makes the namespace instead.
                    let netns = private_net.then(|| spawn::new_private_netns().ok()).flatten();
                    (overlay, netns)
                })
                .ok()
        };
        // SAFETY: setting dispositions and the child-subreaper flag of this single-threaded process.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.add(Signal::SIGHUP);
        mask.thread_block().map_err(RuntimeError::sys("block signals"))?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(RuntimeError::sys("signalfd"))?;
        let listener = control::bind(&dir.socket()).map_err(RuntimeError::io("bind", dir.socket()))?;
        listener
            .set_nonblocking(true)
            .map_err(RuntimeError::io("set non-blocking", dir.socket()))?;
        let log = LazyLog::new(&dir);
        state.supervisor_pid = Some(std::process::id() as i32);
        state.error = None;
        state.stopped_by_user = false;
        state.health = None;
        // A test Docker would not run (unknown form, `NONE`) means no healthcheck, as in Docker;
        // `create` rejects the unknown forms.
        let health = cfg.spec.healthcheck.as_ref().and_then(|check| {
            let argv = check.probe_args().ok().flatten()?;
            Some(HealthMonitor {
                check: check.clone(),
                argv,
                due: None,
                probe: None,
            })
        });
        let mut sup = Supervisor {
            dir,
            cfg,
            state,
            cgroup: None,
            mnt_ns: None,
            overlay,
            filter: None,
            caps: Default::default(),
            listener,
            sigfd,
            log,
            main: None,
            held: None,
            conns: Vec::new(),
            execs: Vec::new(),
            pending_stdin: VecDeque::new(),
            stop_deadline: None,
            restart_at: None,
            backoff: Duration::from_millis(100),
            ready,
            attach_deadline: None,
            shed_at: None,
            lowers,
            exe,
            health,
            done: false,
        };
        if let Err(e) = sup.prepare() {
            sup.record_exited(spawn::SETUP_FAILED, Some(e.to_string()));
            sup.notify_ready(Err((spawn::SETUP_FAILED, e.to_string())));
            sup.cleanup();
            return Err(e);
        }
        if attach_wait {
            sup.attach_deadline = Some(Instant::now() + Duration::from_secs(30));
            sup.prepare_main();
        } else {
            sup.start_main();
        }
        sup.event_loop();
        Ok(())
    }

    /// Records that the container stopped for good without running its command to the end: `code`, now,
    /// and why when known.
    fn record_exited(&mut self, code: i32, error: Option<String>) {
        self.state.status = Status::Exited;
        self.state.exit_code = Some(code);
        self.state.finished_at = Some(now());
        if error.is_some() {
            self.state.error = error;
        }
        self.stop_health();
        let _ = self.dir.write_state(&self.state);
    }

    /// Work done once per supervisor: capabilities, the seccomp filter.
    fn prepare(&mut self) -> Result<()> {
        let sec = &self.cfg.spec.security;
        self.caps = process::capabilities(sec.privileged, &sec.cap_add, &sec.cap_drop)?;
        if !sec.privileged && !sec.seccomp_unconfined {
            self.filter = Some(Filter::docker_default(&self.caps));
        }
        Ok(())
    }

    /// Names the cgroup and, at the first start, creates it with its limits, on this thread while the helper
    /// makes the overlay and the network namespace (a second helper thread would wait for a core on a 2-core
    /// host: the scheduler does not move a just-created thread to a core that goes idle): whether it is made.
    /// The first process then joins it at once. Later starts leave it to `spawn_init`; creating an existing
    /// cgroup only applies the limits again.
    fn first_cgroup(&mut self) -> Result<bool> {
        if self.cgroup.is_some() {
            return Ok(false);
        }
        let cg = Cgroup::for_container(&self.cfg.id)?;
        let made = make_cgroup(&cg, &self.cfg.spec.resources, self.cfg.spec.security.privileged);
        // Named even when creating failed, so that cleanup removes what was made.
        self.cgroup = Some(cg);
        made.map(|()| true)
    }

    fn notify_ready(&mut self, r: std::result::Result<(), (i32, String)>) {
        if let Some(fd) = self.ready.take() {
            let mut f = std::fs::File::from(fd);
            let msg = match r {
                Ok(()) => "ok\n".to_string(),
                Err((code, m)) => format!("err {code} {m}\n"),
            };
            let _ = f.write_all(msg.as_bytes());
        }
    }

    fn hostname(&self) -> String {
        self.cfg
            .spec
            .hostname
            .clone()
            .unwrap_or_else(|| self.cfg.id[..12].to_string())
    }

    fn rootfs_plan(&self) -> RootfsPlan {
        let spec = &self.cfg.spec;
        RootfsPlan {
            layers: self.lowers.clone(),
            upper: self.dir.upper(),
            work: self.dir.work(),
            merged: self.dir.merged(),
            read_only: spec.rootfs.read_only,
            volatile: spec.auto_remove,
            etc_files: vec![
                (self.dir.etc("hosts"), "/etc/hosts"),
                (self.dir.etc("hostname"), "/etc/hostname"),
                (self.dir.etc("resolv.conf"), "/etc/resolv.conf"),
            ],
            mounts: spec.mounts.clone(),
            shm_size: spec.shm_size.unwrap_or(64 << 20),
            cgroup_mounts: self.cgroup.as_ref().map(|c| c.container_mounts()).unwrap_or_default(),
            privileged: spec.security.privileged,
            host_network: spec.network == NetworkSpec::Host,
        }
    }

    fn process_plan(&self) -> ProcessPlan {
        let spec = &self.cfg.spec;
        ProcessPlan {
            args: spec.process.args.clone(),
            env: spec.process.env.clone(),
            user: spec.process.user.clone(),
            group_add: spec.process.group_add.clone(),
            working_dir: spec.process.working_dir.clone().unwrap_or_else(|| "/".into()),
            umask: spec.process.umask.unwrap_or(0o022),
            hostname: self.hostname(),
            tty: spec.process.tty,
            caps: self.caps.clone(),
            privileged: spec.security.privileged,
            no_new_privileges: spec.security.no_new_privileges,
            seccomp: self.filter.clone(),
        }
    }

    /// Sets the container's first process up and holds it before its command, until a client attaches.
    fn prepare_main(&mut self) {
        let r = self.spawn_main(true);
        self.settle_start(r);
    }

    /// Starts the container's first process (releasing a held one); on failure records it and ends
    /// supervision.
    fn start_main(&mut self) {
        self.attach_deadline = None;
        let r = match self.held.take() {
            Some(held) => self.release_main(held),
            None => self.spawn_main(false),
        };
        self.settle_start(r);
    }

    fn settle_start(&mut self, r: std::result::Result<(), (i32, String)>) {
        match r {
            Ok(()) => {
                self.notify_ready(Ok(()));
            }
            Err((code, message)) => {
                self.attach_deadline = None;
                self.record_exited(code, Some(message.clone()));
                self.notify_ready(Err((code, message.clone())));
                self.finish(code, &message);
            }
        }
    }

    /// Clones and sets up the first process; with `hold` it waits before its command and is kept in
    /// `self.held`, otherwise it is released at once.
    fn spawn_main(&mut self, hold: bool) -> std::result::Result<(), (i32, String)> {
        let setup = |e: RuntimeError| match e {
            RuntimeError::Start { code, message } => (code, message),
            e => (spawn::SETUP_FAILED, e.to_string()),
        };
        let made = self.first_cgroup().map_err(setup)?;
        let (overlay, private_net) = self.overlay.take().and_then(|h| h.join().ok()).unwrap_or_default();
        let spec = &self.cfg.spec;
        let netns = match &spec.network {
            NetworkSpec::Path(p) => Some(
                nix::fcntl::open(
                    p,
                    nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| {
                    (
                        spawn::SETUP_FAILED,
                        format!("open network namespace {}: {e}", p.display()),
                    )
                })?,
            ),
            NetworkSpec::None => private_net,
            NetworkSpec::Host => None,
        };
        let (stdio, outputs, stdin, pty_socket) = make_stdio(spec.process.tty, spec.process.stdin).map_err(setup)?;
        let plan = InitPlan {
            rootfs: self.rootfs_plan(),
            process: self.process_plan(),
            domainname: spec.domainname.clone(),
            sysctls: spec.sysctls.clone(),
            rlimits: spec.process.rlimits.clone(),
            netns,
            host_network: spec.network == NetworkSpec::Host,
            cgroup: self.cgroup.clone(),
            overlay,
            init: spec.init,
        };
        let (cgroup, resources, privileged) = (&self.cgroup, &spec.resources, spec.security.privileged);
        let mut make = || {
            cgroup
                .as_ref()
                .map_or(Ok(()), |cg| make_cgroup(cg, resources, privileged))
        };
        let spawned = spawn::spawn_init(&plan, stdio, hold, made, &mut make).map_err(setup)?;
        self.mnt_ns = std::fs::File::open(format!("/proc/{}/ns/mnt", spawned.pid)).ok();
        drop(plan);
        let held = Held {
            spawned,
            outputs,
            stdin,
            pty_socket,
        };
        if hold {
            self.held = Some(held);
            return Ok(());
        }
        self.release_main(held)
    }

    /// Lets a set-up process run its command and records it as running.
    fn release_main(&mut self, held: Held) -> std::result::Result<(), (i32, String)> {
        let Held {
            mut spawned,
            outputs,
            stdin,
            pty_socket,
        } = held;
        spawned.release();
        let io = ProcIo::new(outputs, stdin, pty_socket);
        if let Err(f) = spawn::read_setup_result(spawned.errors) {
            let _ = waitpid(spawned.pid, None);
            return Err((f.code, f.message));
        }
        self.main = Some(MainProc {
            pid: spawned.pid,
            io,
            started: Instant::now(),
        });
        self.state.status = Status::Running;
        self.state.pid = Some(spawned.pid.as_raw());
        self.state.started_at = Some(now());
        self.state.exit_code = None;
        self.state.finished_at = None;
        self.state.oom_killed = false;
        self.start_health();
        let _ = self.dir.write_state(&self.state);
        let pid = spawned.pid.as_raw().to_le_bytes();
        self.broadcast_attached(frame::STARTED, &pid);
        while let Some(chunk) = self.pending_stdin.pop_front() {
            self.write_main_stdin(&chunk);
        }
        Ok(())
    }

    fn event_loop(&mut self) {
        // Start-up is over: keep only the code the loop runs (see memory.rs).
        self.shed_later();
        while !self.done {
            let timeout = self.next_timeout();
            let mut tokens = Vec::new();
            let mut fds: Vec<PollFd> = Vec::new();
            // SAFETY (all borrow_raw below): each fd is owned by `self` and outlives this iteration's poll.
            let borrow = |fd: RawFd| unsafe { BorrowedFd::borrow_raw(fd) };
            fds.push(PollFd::new(borrow(self.sigfd.as_raw_fd()), PollFlags::POLLIN));
            tokens.push(Token::Signal);
            fds.push(PollFd::new(borrow(self.listener.as_raw_fd()), PollFlags::POLLIN));
            tokens.push(Token::Listener);
            if let Some(m) = &self.main {
                for (i, o) in m.io.outputs.iter().enumerate().filter(|(_, o)| !o.closed) {
                    fds.push(PollFd::new(borrow(o.fd.as_raw_fd()), PollFlags::POLLIN));
                    tokens.push(Token::MainOut(i));
                }
            }
            for (i, c) in self.conns.iter().enumerate() {
                if let Some(c) = c {
                    fds.push(PollFd::new(borrow(c.stream.as_raw_fd()), PollFlags::POLLIN));
                    tokens.push(Token::Conn(i));
                }
            }
            for (i, e) in self.execs.iter().enumerate().filter(|(_, e)| !e.finished) {
                for (j, o) in e.io.outputs.iter().enumerate().filter(|(_, o)| !o.closed) {
                    fds.push(PollFd::new(borrow(o.fd.as_raw_fd()), PollFlags::POLLIN));
                    tokens.push(Token::ExecOut(i, j));
                }
            }
            if let Some(fd) = self.probe().and_then(|p| p.out.as_ref()) {
                fds.push(PollFd::new(borrow(fd.as_raw_fd()), PollFlags::POLLIN));
                tokens.push(Token::ProbeOut);
            }
            let n = match poll(&mut fds, timeout) {
                Ok(n) => n,
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    complain(&self.dir, &format!("poll: {e}"));
                    return;
                }
            };
            let ready: Vec<Token> = if n == 0 {
                Vec::new()
            } else {
                fds.iter()
                    .zip(&tokens)
                    .filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(_, t)| *t)
                    .collect()
            };
            drop(fds);
            for t in ready {
                match t {
                    Token::Signal => self.on_signal(),
                    Token::Listener => self.on_accept(),
                    Token::MainOut(i) => self.on_main_output(i),
                    Token::Conn(i) => self.on_conn_readable(i),
                    Token::ExecOut(i, j) => self.on_exec_output(i, j),
                    Token::ProbeOut => {
                        if let Some(p) = self.health.as_mut().and_then(|h| h.probe.as_mut()) {
                            p.read_output();
                        }
                    }
                }
            }
            if let Some(m) = &mut self.main {
                m.io.outputs.retain(|o| !o.closed);
            }
            self.execs.retain(|e| !e.finished);
            for e in &mut self.execs {
                e.io.outputs.retain(|o| !o.closed);
            }
            self.on_timers();
        }
    }

    fn next_timeout(&self) -> PollTimeout {
        let now = Instant::now();
        let health_due = self.health.as_ref().and_then(|h| h.due);
        let probe_deadline = self.probe().map(|p| p.deadline);
        let next = [
            self.stop_deadline,
            self.restart_at,
            self.attach_deadline,
            self.shed_at,
            health_due,
            probe_deadline,
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            None => PollTimeout::NONE,
            Some(t) => {
                let ms = t.saturating_duration_since(now).as_millis().min(60_000) as u16;
                PollTimeout::from(ms.max(1))
            }
        }
    }

    /// Sheds the start-up pages in a moment rather than now: a container that has just started (or an exec or
    /// probe that has just ended) is the busy time, when a client is attaching or the container is exiting, and
    /// reading smaps would compete with them for the CPU. A short-lived container ends before it is due.
    fn shed_later(&mut self) {
        self.shed_at = Some(Instant::now() + SHED_DELAY);
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        if self.shed_at.is_some_and(|d| d <= now) {
            self.shed_at = None;
            self.exe = None;
            super::memory::shed_file_pages();
        }
        if self.stop_deadline.is_some_and(|d| d <= now) {
            self.stop_deadline = None;
            if let Some(m) = &self.main {
                // PID 1 of a pid namespace: killing it kills every process in the container.
                let _ = nix::sys::signal::kill(m.pid, Signal::SIGKILL);
            }
        }
        if self.restart_at.is_some_and(|d| d <= now) {
            self.restart_at = None;
            self.state.restart_count += 1;
            self.start_main();
        }
        if self.attach_deadline.is_some_and(|d| d <= now) {
            self.start_main();
        }
        self.on_health_timers(now);
    }

    fn on_signal(&mut self) {
        while let Ok(Some(info)) = self.sigfd.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => self.reap(),
                Err(_) => {}
                // Asked to go away: stop the container as `stop` would, then exit.
                Ok(_) => self.begin_stop(
                    self.cfg.spec.stop_signal_or_default(),
                    self.cfg.spec.stop_timeout_or_default(),
                ),
            }
        }
    }

    fn reap(&mut self) {
        loop {
            let (pid, code) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            if self.main.as_ref().is_some_and(|m| m.pid == pid) {
                self.on_main_exit(code);
            } else if self.probe().is_some_and(|p| p.pid == pid) {
                self.on_probe_exit(code);
            } else if let Some(i) = self.execs.iter().position(|e| e.pid == pid) {
                self.execs[i].exit = Some(code);
                self.drain_exec(i);
            }
        }
    }

    fn on_main_exit(&mut self, code: i32) {
        let Some(mut m) = self.main.take() else { return };
        // Whatever is still buffered in the pipes belongs to this run.
        for i in 0..m.io.outputs.len() {
            drain_output(&mut m.io.outputs[i], &mut |s, d| self.emit_main(s, d));
        }
        for o in &mut m.io.outputs {
            log_lines(&mut self.log, o);
            if !o.partial.is_empty() {
                let line = std::mem::take(&mut o.partial);
                write_log_line(&mut self.log, o.stream, &line);
            }
        }
        let ran = m.started.elapsed();
        self.stop_deadline = None;
        self.state.exit_code = Some(code);
        self.state.finished_at = Some(now());
        self.state.pid = None;
        self.state.oom_killed = self.cgroup.as_ref().and_then(|c| c.oom_killed().ok()).unwrap_or(false);
        self.stop_health();
        if self.should_restart(code) {
            if ran > Duration::from_secs(10) {
                self.backoff = Duration::from_millis(100);
            }
            self.state.status = Status::Restarting;
            let _ = self.dir.write_state(&self.state);
            self.mnt_ns = None;
            self.restart_at = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(Duration::from_secs(60));
            return;
        }
        self.state.status = Status::Exited;
        // A container removed on exit is about to vanish: recording its end would only hold the removal up
        // (replacing a file on ext4 starts its write-back, and then waits on it).
        if !self.cfg.spec.auto_remove {
            let _ = self.dir.write_state(&self.state);
        }
        self.finish(code, "");
    }

    fn probe(&self) -> Option<&Probe> {
        self.health.as_ref().and_then(|h| h.probe.as_ref())
    }

    /// The process (re)started: health is `starting` again, with an empty log, and the first probe
    /// is due after the start interval (within the start period) or the interval.
    fn start_health(&mut self) {
        self.stop_health();
        if let Some(h) = &mut self.health {
            let starting = Health::starting();
            h.due = Some(Instant::now() + h.check.next_delay(starting.status, Duration::ZERO));
            self.state.health = Some(starting);
        }
    }

    /// The process is gone: no probe runs and there is no health until it starts again.
    fn stop_health(&mut self) {
        if let Some(h) = &mut self.health {
            h.due = None;
            if let Some(p) = h.probe.take() {
                p.kill();
            }
        }
        self.state.health = None;
    }

    /// A probe that outlived its timeout is killed and fails; a due probe starts.
    fn on_health_timers(&mut self, now: Instant) {
        let Some(h) = &mut self.health else { return };
        if h.probe.as_ref().is_some_and(|p| p.deadline <= now)
            && let Some(p) = h.probe.take()
        {
            p.kill();
            let output = health::timeout_output(h.check.timeout());
            self.record_health(p.started, p.start, -1, output);
        }
        let Some(h) = &mut self.health else { return };
        if h.due.is_some_and(|d| d <= now) {
            h.due = None;
            self.start_probe();
        }
    }

    /// Starts a probe in the container, as an `exec` without a terminal. A probe that cannot start
    /// fails at once with the reason as its output (exit code -1, as Docker).
    fn start_probe(&mut self) {
        let (Some(m), Some(h)) = (&self.main, &self.health) else {
            return;
        };
        // A frozen container would freeze the probe's helper while this loop waits for it, and a
        // stopping one is about to go: try again an interval later.
        if self.state.status != Status::Running || self.stop_deadline.is_some() {
            let delay = h.check.interval();
            if let Some(h) = &mut self.health {
                h.due = Some(Instant::now() + delay);
            }
            return;
        }
        let (start, started) = (now(), Instant::now());
        let deadline = started + h.check.timeout();
        match self.spawn_probe(m.pid, &h.argv) {
            Ok((pid, out)) => {
                if let Some(h) = &mut self.health {
                    h.probe = Some(Probe {
                        pid,
                        out: Some(out),
                        kept: Vec::new(),
                        truncated: false,
                        start,
                        started,
                        deadline,
                    });
                }
            }
            Err(e) => self.record_health(started, start, -1, e.to_string()),
        }
    }

    /// Clones `argv` into the container's namespaces and cgroup with its environment, user and working
    /// directory, stdin from /dev/null and stdout and stderr into one pipe; returns it and the pipe.
    fn spawn_probe(&self, main: Pid, argv: &[String]) -> Result<(Pid, OwnedFd)> {
        let ns = ContainerNamespaces::open(main)?;
        let mut plan = self.process_plan();
        plan.args = argv.to_vec();
        plan.tty = false;
        let (out_r, out_w) = spawn::pipe()?;
        let err_w = out_w
            .try_clone()
            .map_err(RuntimeError::io("duplicate", "the probe's output pipe"))?;
        let stdio = ChildStdio::Fds {
            stdin: open_null()?,
            stdout: out_w,
            stderr: err_w,
        };
        let spawned = spawn::spawn_exec(&ns, self.cgroup.as_ref(), &plan, stdio)?;
        set_nonblocking(out_r.as_fd());
        if let Err(f) = spawn::read_setup_result(spawned.errors) {
            // The failed child is reaped by `reap`, which does not know it.
            return Err(RuntimeError::Start {
                code: f.code,
                message: f.message,
            });
        }
        Ok((spawned.pid, out_r))
    }

    /// The probe exited with `code`: what it wrote and its code are its result.
    fn on_probe_exit(&mut self, code: i32) {
        let Some(mut p) = self.health.as_mut().and_then(|h| h.probe.take()) else {
            return;
        };
        // Output still in the pipe was written before the exit; a child it left behind may hold the
        // pipe open, so do not wait for EOF.
        p.read_output();
        let output = health::output_text(&p.kept, p.truncated);
        self.record_health(p.started, p.start, code, output);
    }

    /// Applies a probe's result to the health record, writes the state and schedules the next probe.
    fn record_health(&mut self, started: Instant, start: String, code: i32, output: String) {
        let (Some(m), Some(h)) = (&self.main, &mut self.health) else {
            return;
        };
        let in_start_period = h.check.in_start_period(started.saturating_duration_since(m.started));
        let record = self.state.health.get_or_insert_with(Health::starting);
        record.record(
            HealthResult {
                start,
                end: now(),
                exit_code: code,
                output,
            },
            in_start_period,
            h.check.retries(),
        );
        h.due = Some(Instant::now() + h.check.next_delay(record.status, m.started.elapsed()));
        let _ = self.dir.write_state(&self.state);
        // Starting the probe brought the spawn code back; the loop does not need it resident.
        self.shed_later();
    }

    fn should_restart(&self, code: i32) -> bool {
        if self.state.stopped_by_user {
            return false;
        }
        match self.cfg.spec.restart {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure(max) => code != 0 && max.is_none_or(|n| self.state.restart_count < n),
        }
    }

    /// The container stopped for good: clean up, tell everyone, and end the loop.
    fn finish(&mut self, code: i32, message: &str) {
        self.log.flush();
        let removed = self.cfg.spec.auto_remove;
        if removed {
            self.kill_all();
        } else {
            self.cleanup();
        }
        // Removed means gone from listings: retire the directory now, tell the clients, then delete the cgroup
        // and the files, which nobody waits for any more.
        let retired = removed.then(|| self.dir.retire());
        if let Some(Err(_)) = retired {
            let _ = std::fs::remove_dir_all(&self.dir.dir);
        }
        let exit = control::exit_frame(code, message);
        for slot in &mut self.conns {
            let Some(c) = slot else { continue };
            let _ = match c.mode {
                Mode::Attached { .. } | Mode::Exec(_) => write_client(&mut c.stream, &exit),
                Mode::Waiting => respond(&mut c.stream, &Response::Exited { code }),
            };
            *slot = None;
        }
        // Now the container's file system may be taken down (see `mnt_ns`).
        self.mnt_ns = None;
        if removed {
            self.delete_cgroup();
        }
        if let Some(Ok(dir)) = retired {
            let _ = super::state::recycle(&dir);
        }
        self.done = true;
    }

    fn cleanup(&mut self) {
        self.kill_all();
        self.delete_cgroup();
        let _ = std::fs::remove_file(self.dir.socket());
    }

    fn kill_all(&self) {
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill_all();
        }
    }

    fn delete_cgroup(&self) {
        if let Some(cg) = &self.cgroup
            && let Err(e) = cg.delete()
        {
            complain(&self.dir, &e.to_string());
        }
    }

    fn begin_stop(&mut self, sig: Signal, timeout: u64) {
        self.state.stopped_by_user = true;
        self.restart_at = None;
        if let Some(held) = self.held.take() {
            // Set up but never started: it has nothing to stop gracefully.
            let _ = nix::sys::signal::kill(held.spawned.pid, Signal::SIGKILL);
            let _ = waitpid(held.spawned.pid, None);
            self.attach_deadline = None;
            let code = 128 + Signal::SIGKILL as i32;
            self.record_exited(code, None);
            self.finish(code, "stopped before it started");
            return;
        }
        let Some(m) = &self.main else {
            if self.state.status == Status::Restarting {
                self.state.status = Status::Exited;
                let _ = self.dir.write_state(&self.state);
                let code = self.state.exit_code.unwrap_or(0);
                self.finish(code, "");
            }
            return;
        };
        let pid = m.pid;
        if self.state.status == Status::Paused {
            self.unpause();
        }
        let _ = self.dir.write_state(&self.state);
        let _ = nix::sys::signal::kill(pid, sig);
        let deadline = Instant::now() + Duration::from_secs(timeout);
        if sig == Signal::SIGKILL {
            return;
        }
        self.stop_deadline = Some(self.stop_deadline.map_or(deadline, |d| d.min(deadline)));
    }

    fn unpause(&mut self) {
        if let Some(cg) = &self.cgroup
            && cg.thaw().is_ok()
        {
            self.state.status = Status::Running;
            let _ = self.dir.write_state(&self.state);
        }
    }

    fn on_accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(_) => return,
            };
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = stream.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT));
            self.handle_new_conn(stream);
        }
    }

    fn handle_new_conn(&mut self, mut stream: UnixStream) {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        // Read the request line byte by byte so nothing after it is consumed.
        loop {
            match stream.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break,
                Ok(1) => line.push(byte[0]),
                _ => return,
            }
            if line.len() > 1 << 20 {
                return;
            }
        }
        let req: Request = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(e) => {
                let _ = respond(
                    &mut stream,
                    &Response::Error {
                        message: format!("bad request: {e}"),
                    },
                );
                return;
            }
        };
        match req {
            Request::Ping => {
                let _ = respond(&mut stream, &Response::Ok);
            }
            Request::Kill { signal } => {
                let r = match (&self.main, Signal::try_from(signal)) {
                    (Some(m), Ok(sig)) => {
                        self.state.stopped_by_user = true;
                        let _ = self.dir.write_state(&self.state);
                        match nix::sys::signal::kill(m.pid, sig) {
                            Ok(()) => Response::Ok,
                            Err(e) => Response::Error {
                                message: format!("kill: {e}"),
                            },
                        }
                    }
                    (None, _) => Response::Error {
                        message: "the container is not running".into(),
                    },
                    (_, Err(_)) => Response::Error {
                        message: format!("invalid signal {signal}"),
                    },
                };
                let _ = respond(&mut stream, &r);
            }
            Request::Stop { signal, timeout } => {
                let sig = Signal::try_from(signal).unwrap_or(Signal::SIGTERM);
                self.add_conn(stream, Mode::Waiting);
                self.begin_stop(sig, timeout);
            }
            Request::Wait => self.add_conn(stream, Mode::Waiting),
            Request::Pause | Request::Unpause => {
                let r = self.pause(matches!(req, Request::Pause));
                let _ = respond(&mut stream, &r);
            }
            Request::Attach { stdin } => {
                self.add_conn(stream, Mode::Attached { stdin });
                if self.attach_deadline.is_some() {
                    self.start_main();
                } else if let Some(m) = &self.main {
                    let pid = m.pid.as_raw().to_le_bytes();
                    if let Some(Some(c)) = self.conns.last_mut() {
                        let _ = write_client(&mut c.stream, &control::encode_frame(frame::STARTED, &pid));
                    }
                }
            }
            Request::Exec(x) => self.start_exec(stream, x),
        }
    }

    fn pause(&mut self, freeze: bool) -> Response {
        let (Some(cg), Some(_)) = (&self.cgroup, &self.main) else {
            return Response::Error {
                message: "the container is not running".into(),
            };
        };
        let r = if freeze { cg.freeze() } else { cg.thaw() };
        match r {
            Ok(()) => {
                self.state.status = if freeze { Status::Paused } else { Status::Running };
                let _ = self.dir.write_state(&self.state);
                Response::Ok
            }
            Err(e) => Response::Error { message: e.to_string() },
        }
    }

    fn add_conn(&mut self, stream: UnixStream, mode: Mode) {
        let _ = stream.set_nonblocking(true);
        let conn = Conn {
            stream,
            inbuf: Vec::new(),
            mode,
        };
        match self.conns.iter().position(Option::is_none) {
            Some(i) => self.conns[i] = Some(conn),
            None => self.conns.push(Some(conn)),
        }
    }

    fn on_conn_readable(&mut self, i: usize) {
        let Some(c) = &mut self.conns[i] else { return };
        let mut buf = [0u8; 16384];
        let n = match c.stream.read(&mut buf) {
            Ok(0) => {
                // The client went away. A waiting client just leaves; an attached one loses its stdin.
                let mode = c.mode;
                self.conns[i] = None;
                if let Mode::Attached { stdin: true } = mode {
                    self.close_main_stdin();
                }
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(_) => {
                self.conns[i] = None;
                return;
            }
        };
        c.inbuf.extend_from_slice(&buf[..n]);
        let frames = control::decode_frames(&mut c.inbuf);
        let mode = c.mode;
        for (kind, data) in frames {
            match (mode, kind) {
                (Mode::Attached { stdin: true }, frame::STDIN) => {
                    if self.main.is_some() {
                        self.write_main_stdin(&data);
                    } else {
                        self.pending_stdin.push_back(data);
                    }
                }
                (Mode::Attached { stdin: true }, frame::STDIN_EOF) => self.close_main_stdin(),
                (Mode::Attached { .. }, frame::RESIZE) => {
                    if let Some(m) = &self.main {
                        m.io.resize(&data);
                    }
                }
                (Mode::Exec(pid), k) => self.exec_input(pid, k, &data),
                _ => {}
            }
        }
    }

    fn write_main_stdin(&mut self, data: &[u8]) {
        if let Some(m) = &self.main {
            m.io.write_stdin(data);
        }
    }

    fn close_main_stdin(&mut self) {
        if let Some(m) = &mut self.main {
            m.io.close_stdin();
        }
    }

    fn on_main_output(&mut self, i: usize) {
        let Some(mut m) = self.main.take() else { return };
        let eof = read_output(&mut m.io.outputs[i], &mut |s, d| self.emit_main(s, d));
        log_lines(&mut self.log, &mut m.io.outputs[i]);
        m.io.outputs[i].closed |= eof;
        self.main = Some(m);
    }

    fn emit_main(&mut self, stream: Stream, data: &[u8]) {
        self.broadcast_attached(stream.frame(), data);
    }

    fn broadcast_attached(&mut self, kind: u8, data: &[u8]) {
        let bytes = control::encode_frame(kind, data);
        for slot in &mut self.conns {
            if let Some(c) = slot
                && matches!(c.mode, Mode::Attached { .. })
                && write_client(&mut c.stream, &bytes).is_err()
            {
                *slot = None;
            }
        }
    }

    fn start_exec(&mut self, mut stream: UnixStream, x: ExecRequest) {
        let Some(m) = &self.main else {
            let _ = respond(
                &mut stream,
                &Response::Error {
                    message: "the container is not running".into(),
                },
            );
            return;
        };
        let pid = m.pid;
        let r = (|| -> Result<(ExecSession, bool)> {
            let ns = ContainerNamespaces::open(pid)?;
            let mut plan = self.process_plan();
            plan.args = x.args.clone();
            plan.env.extend(x.env.iter().cloned());
            if let Some(u) = &x.user {
                plan.user = u.clone();
            }
            if let Some(w) = &x.working_dir {
                plan.working_dir = w.clone();
            }
            plan.tty = x.tty;
            if x.privileged {
                plan.caps = process::capabilities(true, &[], &[])?;
                plan.privileged = true;
                plan.seccomp = None;
            }
            let (stdio, outputs, stdin, pty_socket) = if x.detach {
                null_stdio()?
            } else {
                make_stdio(x.tty, x.stdin)?
            };
            let spawned = spawn::spawn_exec(&ns, self.cgroup.as_ref(), &plan, stdio)?;
            let io = ProcIo::new(outputs, stdin, pty_socket);
            if let Err(f) = spawn::read_setup_result(spawned.errors) {
                // The process exists until reaped; the SIGCHLD path will find no session and reap it.
                return Err(RuntimeError::Start {
                    code: f.code,
                    message: f.message,
                });
            }
            Ok((
                ExecSession {
                    pid: spawned.pid,
                    io,
                    exit: None,
                    finished: false,
                },
                x.detach,
            ))
        })();
        match r {
            Ok((session, true)) => {
                let _ = respond(
                    &mut stream,
                    &Response::Started {
                        pid: session.pid.as_raw(),
                    },
                );
            }
            Ok((session, false)) => {
                let _ = write_client(
                    &mut stream,
                    &control::encode_frame(frame::STARTED, &session.pid.as_raw().to_le_bytes()),
                );
                let pid = session.pid;
                self.execs.push(session);
                self.add_conn(stream, Mode::Exec(pid));
            }
            Err(RuntimeError::Start { code, message }) => {
                let _ = write_client(&mut stream, &control::exit_frame(code, &message));
            }
            Err(e) => {
                let _ = write_client(&mut stream, &control::exit_frame(spawn::SETUP_FAILED, &e.to_string()));
            }
        }
    }

    fn exec_input(&mut self, pid: Pid, kind: u8, data: &[u8]) {
        let Some(e) = self.execs.iter_mut().find(|e| e.pid == pid) else {
            return;
        };
        match kind {
            frame::STDIN => e.io.write_stdin(data),
            frame::STDIN_EOF => e.io.close_stdin(),
            frame::RESIZE => e.io.resize(data),
            _ => {}
        }
    }

    fn exec_conn(&mut self, pid: Pid) -> Option<&mut Conn> {
        self.conns.iter_mut().flatten().find(|c| c.mode == Mode::Exec(pid))
    }

    fn on_exec_output(&mut self, i: usize, j: usize) {
        if self.execs[i].finished {
            return;
        }
        let pid = self.execs[i].pid;
        let mut chunks = Vec::new();
        let eof = read_output(&mut self.execs[i].io.outputs[j], &mut |s, d| {
            chunks.push((s, d.to_vec()))
        });
        // exec output goes to its client only, not to the log.
        self.execs[i].io.outputs[j].partial.clear();
        self.send_exec_chunks(pid, chunks);
        if eof {
            self.execs[i].io.outputs[j].closed = true;
            if self.execs[i].exit.is_some() && self.execs[i].io.outputs.iter().all(|o| o.closed) {
                self.finish_exec(i);
            }
        }
    }

    fn send_exec_chunks(&mut self, pid: Pid, chunks: Vec<(Stream, Vec<u8>)>) {
        if let Some(c) = self.exec_conn(pid) {
            for (s, d) in chunks {
                let _ = write_client(&mut c.stream, &control::encode_frame(s.frame(), &d));
            }
        }
    }

    fn drain_exec(&mut self, i: usize) {
        let pid = self.execs[i].pid;
        let mut chunks = Vec::new();
        for o in &mut self.execs[i].io.outputs {
            drain_output(o, &mut |s, d| chunks.push((s, d.to_vec())));
        }
        self.send_exec_chunks(pid, chunks);
        self.finish_exec(i);
    }

    fn finish_exec(&mut self, i: usize) {
        let e = &mut self.execs[i];
        if e.finished {
            return;
        }
        e.finished = true;
        let (pid, code) = (e.pid, e.exit.unwrap_or(-1));
        if let Some(slot) = self
            .conns
            .iter_mut()
            .find(|c| c.as_ref().is_some_and(|c| c.mode == Mode::Exec(pid)))
        {
            if let Some(c) = slot {
                let _ = write_client(&mut c.stream, &control::exit_frame(code, ""));
            }
            *slot = None;
        }
        self.shed_later();
    }
}

#[derive(Debug, Clone, Copy)]
enum Token {
    Signal,
    Listener,
    MainOut(usize),
    Conn(usize),
    ExecOut(usize, usize),
    ProbeOut,
}

/// What `make_stdio` prepares: the child's side, our output pipes, our stdin writer, and for a terminal
/// the socket on which the child sends the pty master it opens inside the container.
type Stdio = (ChildStdio, Vec<Output>, Option<OwnedFd>, Option<OwnedFd>);

/// stdio for a new process: a pty (opened by the child inside the container), or pipes (stdin from a
/// pipe when kept open, else /dev/null).
fn make_stdio(tty: bool, keep_stdin: bool) -> Result<Stdio> {
    if tty {
        let (ours, theirs) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(RuntimeError::sys("socketpair"))?;
        return Ok((ChildStdio::Pty { socket: theirs }, Vec::new(), None, Some(ours)));
    }
    let pipe = spawn::pipe;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    set_nonblocking(out_r.as_fd());
    set_nonblocking(err_r.as_fd());
    let (stdin_child, stdin_ours) = if keep_stdin {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        (open_null()?, None)
    };
    let stdio = ChildStdio::Fds {
        stdin: stdin_child,
        stdout: out_w,
        stderr: err_w,
    };
    let outputs = vec![
        Output {
            fd: out_r,
            stream: Stream::Stdout,
            partial: Vec::new(),
            closed: false,
        },
        Output {
            fd: err_r,
            stream: Stream::Stderr,
            partial: Vec::new(),
            closed: false,
        },
    ];
    Ok((stdio, outputs, stdin_ours, None))
}

fn null_stdio() -> Result<Stdio> {
    let stdio = ChildStdio::Fds {
        stdin: open_null()?,
        stdout: open_null()?,
        stderr: open_null()?,
    };
    Ok((stdio, Vec::new(), None, None))
}

fn open_null() -> Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(RuntimeError::io("open", "/dev/null"))
}

fn set_nonblocking(fd: BorrowedFd<'_>) {
    if let Ok(flags) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL) {
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags));
    }
}

fn resize(fd: BorrowedFd<'_>, data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let ws = libc::winsize {
        ws_row: u16::from_le_bytes([data[0], data[1]]),
        ws_col: u16::from_le_bytes([data[2], data[3]]),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ on a pty master with a valid winsize.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

/// Writes everything, waiting briefly when a pipe is full; gives up on errors (the reader is gone).
fn write_all_fd(fd: BorrowedFd<'_>, mut data: &[u8]) {
    let deadline = Instant::now() + CLIENT_WRITE_TIMEOUT;
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EAGAIN) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Err(nix::Error::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Reads what is available; emits it and logs complete lines. Returns true at EOF.
fn read_output(o: &mut Output, emit: &mut dyn FnMut(Stream, &[u8])) -> bool {
    let mut buf = [0u8; 32768];
    loop {
        match nix::unistd::read(o.fd.as_fd(), &mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                emit(o.stream, &buf[..n]);
                o.partial.extend_from_slice(&buf[..n]);
            }
            Err(nix::Error::EAGAIN) => return false,
            Err(nix::Error::EINTR) => continue,
            // A pty master reads EIO once the last slave fd is closed.
            Err(_) => return true,
        }
    }
}

fn drain_output(o: &mut Output, emit: &mut dyn FnMut(Stream, &[u8])) {
    let _ = read_output(o, emit);
}

/// Appends complete lines in Docker's json-file format: `{"log":…,"stream":…,"time":…}`.
fn write_log_line(log: &mut LazyLog, stream: Stream, line: &[u8]) {
    let rec = serde_json::json!({
        "log": String::from_utf8_lossy(line),
        "stream": match stream { Stream::Stdout => "stdout", Stream::Stderr => "stderr" },
        "time": now(),
    });
    let mut s = rec.to_string();
    s.push('\n');
    log.write_all(s.as_bytes());
}

fn write_client(stream: &mut UnixStream, bytes: &[u8]) -> std::io::Result<()> {
    let _ = stream.set_nonblocking(false);
    let r = stream.write_all(bytes);
    let _ = stream.set_nonblocking(true);
    r
}

fn respond(stream: &mut UnixStream, r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write_client(stream, &line)
}

/// Splits complete lines out of `partial` into the log; called after each read.
fn log_lines(log: &mut LazyLog, o: &mut Output) {
    while let Some(pos) = o.partial.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = o.partial.drain(..=pos).collect();
        write_log_line(log, o.stream, &line);
    }
    if o.partial.len() > 16 * 1024 {
        let line = std::mem::take(&mut o.partial);
        write_log_line(log, o.stream, &line);
    }
}
