//! Starting processes inside a container: `clone3` into new namespaces for the first process, or `setns`
//! into a running container's namespaces for `exec`, then the common confinement sequence (identity,
//! capabilities, no_new_privs, seccomp) and `execve`. Setup errors reach the supervisor through a
//! close-on-exec pipe, so a clean exec is seen as EOF and a failure as a message with Docker's exit code.
//!
//! Everything after the clone runs in a single-threaded child of the single-threaded supervisor.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Gid, Pid, Uid};

use super::cgroup::Cgroup;
use super::error::{Result, RuntimeError};
use super::process::{self, ExecFailure};
use super::rootfs::{self, RootfsPlan};
use super::seccomp::Filter;

/// Exit code of a child whose setup failed before exec (Docker's "berth error").
pub const SETUP_FAILED: i32 = 125;

/// The process to execute and how to confine it; shared by `start` and `exec`.
#[derive(Debug, Clone)]
pub struct ProcessPlan {
    /// argv.
    pub args: Vec<String>,
    /// Environment, `KEY=value`, before the defaults are added.
    pub env: Vec<String>,
    /// `user[:group]`.
    pub user: String,
    /// Extra groups.
    pub group_add: Vec<String>,
    /// Working directory inside the container.
    pub working_dir: String,
    /// umask.
    pub umask: u32,
    /// Host name (for `HOSTNAME`).
    pub hostname: String,
    /// Allocate `TERM` for a tty.
    pub tty: bool,
    /// The container's capabilities.
    pub caps: Vec<Capability>,
    /// Privileged: keep the bounding set whole.
    pub privileged: bool,
    /// Set no_new_privs.
    pub no_new_privileges: bool,
    /// The seccomp filter, unless unconfined.
    pub seccomp: Option<Filter>,
}

/// The first process of a container.
#[derive(Debug)]
pub struct InitPlan {
    /// File-system view.
    pub rootfs: RootfsPlan,
    /// Process and confinement.
    pub process: ProcessPlan,
    /// Domain name.
    pub domainname: Option<String>,
    /// Namespaced sysctls.
    pub sysctls: BTreeMap<String, String>,
    /// Resource limits: name → (soft, hard).
    pub rlimits: BTreeMap<String, (u64, u64)>,
    /// Network: `None` for a new namespace with loopback, `Some(fd)` to join one, host when `host_network`.
    pub netns: Option<OwnedFd>,
    /// Share the host's network namespace.
    pub host_network: bool,
    /// The cgroup to join first.
    pub cgroup: Option<Cgroup>,
    /// The root overlay, made already as a detached mount (`rootfs::make_overlay`); `None` mounts it in the child.
    pub overlay: Option<OwnedFd>,
    /// Run berth's small init as PID 1.
    pub init: bool,
}

/// stdio of the new process.
#[derive(Debug)]
pub enum ChildStdio {
    /// Three fds: 0, 1 and 2.
    Fds {
        /// fd 0.
        stdin: OwnedFd,
        /// fd 1.
        stdout: OwnedFd,
        /// fd 2.
        stderr: OwnedFd,
    },
    /// A terminal allocated inside the container's own devpts, as Docker does (so `tty` and
    /// `ttyname` work there); its master is sent back over this socket.
    Pty {
        /// One end of a socket pair; the supervisor receives the master on the other.
        socket: OwnedFd,
    },
}

/// A started child: its pid and the read end of its setup-error pipe.
#[derive(Debug)]
pub struct Spawned {
    /// Host pid.
    pub pid: Pid,
    /// Read end of the error pipe; EOF with no data means exec succeeded.
    pub errors: OwnedFd,
    /// For a held child: writing a byte here lets it execute its command.
    pub go: Option<OwnedFd>,
}

impl Spawned {
    /// Lets a held child run its command (see `spawn_init`).
    pub fn release(&mut self) {
        if let Some(go) = self.go.take() {
            // A child that already failed has closed its end; its error is on the error pipe.
            let _ = nix::unistd::write(&go, b"g");
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// fork-like `clone3`: returns 0 in the child and its pid in the parent.
fn clone3(flags: CloneFlags) -> Result<i32> {
    clone3_into(flags, None).map_err(RuntimeError::sys(format!("clone3({flags:?})")))
}

/// `CLONE_INTO_CGROUP` (Linux 5.7), which `nix` does not name.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `clone3`, the child born in the v2 cgroup `cgroup` (a directory fd) when one is given.
fn clone3_into(flags: CloneFlags, cgroup: Option<BorrowedFd>) -> nix::Result<i32> {
    // With CLONE_PARENT the kernel wants no exit signal here: the child inherits the caller's (SIGCHLD).
    let exit_signal = if flags.contains(CloneFlags::CLONE_PARENT) {
        0
    } else {
        libc::SIGCHLD as u64
    };
    let mut args = CloneArgs {
        flags: flags.bits() as u64,
        exit_signal,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork: the child gets a copy of the
    // address space. The caller is single-threaded, so no lock is held by a thread that won't exist.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        return Err(nix::Error::last());
    }
    Ok(r as i32)
}

/// Clones a child that starts in `cgroup` where the kernel can make it so (v2, `CLONE_INTO_CGROUP`). Returns its
/// pid (0 in the child) and whether it was born there; if not, the child must call [`Cgroup::join_self`].
fn clone3_in(flags: CloneFlags, cgroup: Option<&Cgroup>) -> Result<(i32, bool)> {
    let dir = match cgroup {
        Some(cg) => cg.v2_dir()?,
        None => None,
    };
    match clone3_into(flags, dir.as_ref().map(AsFd::as_fd)) {
        Ok(pid) => Ok((pid, dir.is_some())),
        // A kernel older than 5.7 refuses the larger argument or the flag: join after the clone instead.
        Err(Errno::E2BIG | Errno::EINVAL) if dir.is_some() => Ok((clone3(flags)?, false)),
        Err(e) => Err(RuntimeError::sys(format!("clone3({flags:?})"))(e)),
    }
}

/// A close-on-exec pipe: (read end, write end).
pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(RuntimeError::sys("pipe2"))
}

/// Clones the container's first process into new namespaces and runs its setup. Returns once the child
/// exists; the caller reads `errors` to learn whether it reached `execve`. With `hold`, the child stops
/// just before executing its command until `Spawned::release`, so the whole setup can happen while
/// a client is still attaching.
///
/// `make_cgroup` creates `plan.cgroup` with its limits, unless `made` says it exists already. On v2 that
/// happens before the clone, so the child is born there. On v1 it happens after, while the child mounts its
/// file system, and the child waits for it only when it needs the cgroup, then moves itself in (see
/// `Cgroup::join_self`).
pub fn spawn_init(
    plan: &InitPlan,
    stdio: ChildStdio,
    hold: bool,
    made: bool,
    make_cgroup: &mut dyn FnMut() -> Result<()>,
) -> Result<Spawned> {
    let (err_r, err_w) = pipe()?;
    let go = if hold { Some(pipe()?) } else { None };
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    if plan.netns.is_none() && !plan.host_network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    // The cgroup namespace must be created after joining the cgroup: the child does it.
    let mut created = made;
    if let Some(cg) = &plan.cgroup {
        flags.remove(CloneFlags::CLONE_NEWCGROUP);
        if cg.is_v2() && !made {
            make_cgroup()?;
            created = true;
        }
    }
    let ready = match plan.cgroup.is_some() && !created {
        true => Some(pipe()?),
        false => None,
    };
    let (pid, born_inside) = clone3_in(flags, plan.cgroup.as_ref().filter(|_| created))?;
    if pid == 0 {
        drop(err_r);
        let go_r = go.map(|(r, w)| {
            drop(w);
            r
        });
        let ready_r = ready.map(|(r, w)| {
            drop(w);
            r
        });
        let e = init_child(
            plan,
            stdio,
            Joining {
                born_inside,
                ready: ready_r,
            },
            go_r,
            &err_w,
        );
        fail(&err_w, e)
    }
    drop(err_w);
    let go = go.map(|(r, w)| {
        drop(r);
        w
    });
    if let Some((ready_r, ready_w)) = ready {
        drop(ready_r);
        if let Err(e) = make_cgroup() {
            // The child may have failed (and exited) first: its own report names the real cause.
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
            return Err(match read_setup_result(err_r) {
                Err(f) => RuntimeError::Start {
                    code: f.code,
                    message: f.message,
                },
                Ok(()) => e,
            });
        }
        let _ = nix::unistd::write(&ready_w, b"c");
    }
    Ok(Spawned {
        pid: Pid::from_raw(pid),
        errors: err_r,
        go,
    })
}

/// How a new first process gets into its cgroup.
struct Joining {
    /// It was cloned into its (v2) cgroup.
    born_inside: bool,
    /// Otherwise: one byte arrives here once the cgroup exists, and the child moves itself in.
    ready: Option<OwnedFd>,
}

/// Reports a setup failure to the parent and exits; never returns.
fn fail(err_w: &OwnedFd, failure: ExecFailure) -> ! {
    let msg = super::control::encode_exit(failure.code, &failure.message);
    // SAFETY: err_w is a valid pipe write end.
    let mut f = unsafe { std::fs::File::from_raw_fd(err_w.as_raw_fd()) };
    let _ = f.write_all(&msg);
    std::mem::forget(f);
    // SAFETY: _exit skips destructors and atexit handlers of the copied parent state, which is what a
    // forked child must do.
    unsafe { libc::_exit(failure.code) }
}

fn setup_err(e: RuntimeError) -> ExecFailure {
    ExecFailure {
        code: SETUP_FAILED,
        message: e.to_string(),
    }
}

/// Reads the child's setup result: `Ok(())` if it reached exec, or its failure.
pub fn read_setup_result(errors: OwnedFd) -> Result<(), ExecFailure> {
    let mut f = std::fs::File::from(errors);
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    if buf.len() < 4 {
        return Ok(());
    }
    let (code, message) = super::control::exit_payload(&buf);
    Err(ExecFailure { code, message })
}

fn init_child(
    plan: &InitPlan,
    stdio: ChildStdio,
    joining: Joining,
    go: Option<OwnedFd>,
    err_w: &OwnedFd,
) -> ExecFailure {
    match init_setup(plan, stdio, joining) {
        Ok(()) => {}
        Err(e) => return setup_err(e),
    }
    if let Err(e) = rootfs::finish(&plan.rootfs) {
        return setup_err(e);
    }
    confine_and_exec(&plan.process, plan.init, go, err_w)
}

/// A new process starts with the default signal state, not the supervisor's (which blocks SIGCHLD and
/// SIGTERM for its signalfd and ignores SIGPIPE); both are inherited across exec.
fn reset_signals() {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    // SAFETY: restoring the default disposition of SIGPIPE in a single-threaded child.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

fn init_setup(plan: &InitPlan, stdio: ChildStdio, joining: Joining) -> Result<()> {
    reset_signals();
    // The container must not outlive its supervisor, and nothing in it may ptrace this berth image.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(RuntimeError::sys("set pdeathsig"))?;
    nix::sys::prctl::set_dumpable(false).map_err(RuntimeError::sys("set dumpable"))?;
    if let Some(fd) = &plan.netns {
        nix::sched::setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(RuntimeError::sys("join network namespace"))?;
    } else if !plan.host_network {
        loopback_up()?;
    }
    // The host's cgroup hierarchies, reachable after pivot_root through these fds only.
    let hierarchies = match &plan.cgroup {
        Some(cg) if !joining.born_inside => cg.open_hierarchies()?,
        _ => Vec::new(),
    };
    rootfs::setup(&plan.rootfs, plan.overlay.as_ref())?;
    if let Some(cg) = &plan.cgroup {
        if let Some(ready) = joining.ready {
            // The supervisor creates the cgroup while we mount: wait for it.
            let mut byte = [0u8; 1];
            if nix::unistd::read(&ready, &mut byte) != Ok(1) {
                return Err(RuntimeError::Spec(
                    "the supervisor did not create the container's cgroup".into(),
                ));
            }
        }
        if !joining.born_inside {
            // We are the only thread, so moving in needs no global lock (see `Cgroup::join_self`).
            cg.join_self_at(&hierarchies)?;
        }
        drop(hierarchies);
        // A cgroup namespace rooted at the container's cgroup.
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(RuntimeError::sys("unshare cgroup namespace"))?;
    }
    rootfs::mount_cgroups(&plan.rootfs)?;
    set_stdio(stdio)?;
    nix::unistd::sethostname(&plan.process.hostname).map_err(RuntimeError::sys("sethostname"))?;
    if let Some(d) = &plan.domainname {
        // SAFETY: pointer and length describe a valid byte slice.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
            return Err(RuntimeError::sys("setdomainname")(nix::Error::last()));
        }
    }
    for (key, value) in &plan.sysctls {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(RuntimeError::io("write sysctl", &path))?;
    }
    for (name, (soft, hard)) in &plan.rlimits {
        set_rlimit(name, *soft, *hard)?;
    }
    Ok(())
}

/// Installs stdio in a new session. A pty is opened here, so this must run inside the container's root.
fn set_stdio(stdio: ChildStdio) -> Result<()> {
    nix::unistd::setsid().map_err(RuntimeError::sys("setsid"))?;
    let dup_onto = |fd: &OwnedFd, target: i32| -> Result<()> {
        // SAFETY: dup2 onto 0..2 of this child; the source fd is valid and owned.
        if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
            return Err(RuntimeError::sys(format!("dup2 onto fd {target}"))(nix::Error::last()));
        }
        Ok(())
    };
    match stdio {
        ChildStdio::Fds { stdin, stdout, stderr } => {
            dup_onto(&stdin, 0)?;
            dup_onto(&stdout, 1)?;
            dup_onto(&stderr, 2)?;
        }
        ChildStdio::Pty { socket } => {
            let slave = open_pty_and_send_master(&socket)?;
            for target in 0..3 {
                dup_onto(&slave, target)?;
            }
            // SAFETY: TIOCSCTTY on fd 0, a terminal, in a new session.
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
                return Err(RuntimeError::sys("set controlling terminal")(nix::Error::last()));
            }
        }
    }
    Ok(())
}

/// Opens a pty pair on this root's /dev/ptmx, sends the master over `socket`, returns the slave.
fn open_pty_and_send_master(socket: &OwnedFd) -> Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let master = nix::fcntl::open(
        "/dev/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(RuntimeError::sys("open /dev/ptmx"))?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK with a pointer to an int, then TIOCGPTPEER, which returns a new fd for the slave.
    let slave = unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) < 0 {
            return Err(RuntimeError::sys("unlock pty")(nix::Error::last()));
        }
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(RuntimeError::sys("open pty slave")(nix::Error::last()));
    }
    // SAFETY: the kernel just returned this fd.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    let fds = [master.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(b"p")];
    nix::sys::socket::sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &cmsg,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map_err(RuntimeError::sys("send the pty master"))?;
    Ok(slave)
}

/// Receives the pty master a child sent with `open_pty_and_send_master`; `None` if it ended first.
pub fn receive_pty_master(socket: &OwnedFd) -> Option<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    for c in msg.cmsgs().ok()? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c
            && let Some(fd) = fds.first()
        {
            // SAFETY: the kernel installed this fd in our table for us.
            return Some(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    None
}

/// A new network namespace with `lo` up, made on (and entered by) the calling thread only, for a first
/// process to join instead of creating its own: making one takes the kernel about 0.35 ms, which a
/// supervisor spends on a helper thread while it starts up rather than in the clone. The thread should
/// end afterwards.
pub fn new_private_netns() -> Result<OwnedFd> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(RuntimeError::sys("unshare the network namespace"))?;
    let fd = nix::fcntl::open(
        "/proc/thread-self/ns/net",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(RuntimeError::sys("open the new network namespace"))?;
    loopback_up()?;
    Ok(fd)
}

/// Brings `lo` up in a fresh network namespace.
fn loopback_up() -> Result<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq whose name is "lo"; the socket is closed below.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(RuntimeError::sys("socket for loopback")(nix::Error::last()));
        }
        let s = OwnedFd::from_raw_fd(s);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(RuntimeError::sys("get loopback flags")(nix::Error::last()));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) < 0 {
            return Err(RuntimeError::sys("bring loopback up")(nix::Error::last()));
        }
    }
    Ok(())
}

fn set_rlimit(name: &str, soft: u64, hard: u64) -> Result<()> {
    use nix::sys::resource::{Resource, setrlimit};
    let r = match name {
        "as" => Resource::RLIMIT_AS,
        "core" => Resource::RLIMIT_CORE,
        "cpu" => Resource::RLIMIT_CPU,
        "data" => Resource::RLIMIT_DATA,
        "fsize" => Resource::RLIMIT_FSIZE,
        "locks" => Resource::RLIMIT_LOCKS,
        "memlock" => Resource::RLIMIT_MEMLOCK,
        "msgqueue" => Resource::RLIMIT_MSGQUEUE,
        "nice" => Resource::RLIMIT_NICE,
        "nofile" => Resource::RLIMIT_NOFILE,
        "nproc" => Resource::RLIMIT_NPROC,
        "rss" => Resource::RLIMIT_RSS,
        "rtprio" => Resource::RLIMIT_RTPRIO,
        "rttime" => Resource::RLIMIT_RTTIME,
        "sigpending" => Resource::RLIMIT_SIGPENDING,
        "stack" => Resource::RLIMIT_STACK,
        other => return Err(RuntimeError::Spec(format!("unknown ulimit {other:?}"))),
    };
    setrlimit(r, soft, hard).map_err(RuntimeError::sys(format!(
        "setrlimit {name}={soft}:{hard} (the hard limit cannot be raised without CAP_SYS_RESOURCE)"
    )))
}

/// Identity, capabilities, no_new_privs and seccomp, then exec. Runs inside the container's root.
fn confine_and_exec(p: &ProcessPlan, init: bool, go: Option<OwnedFd>, err_w: &OwnedFd) -> ExecFailure {
    let passwd = std::fs::read_to_string("/etc/passwd").ok();
    let group = std::fs::read_to_string("/etc/group").ok();
    let user = match process::resolve_user(&p.user, &p.group_add, passwd.as_deref(), group.as_deref()) {
        Ok(u) => u,
        Err(e) => return setup_err(e),
    };
    let env = process::default_env(&p.env, &p.hostname, &user.home, p.tty);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(p.umask));
    // Docker creates a missing working directory; chdir to it by absolute path, inside the new root only.
    let wd = if p.working_dir.is_empty() {
        "/"
    } else {
        p.working_dir.as_str()
    };
    if let Err(e) = std::fs::create_dir_all(wd) {
        return setup_err(RuntimeError::io("create working directory", wd)(e));
    }
    if let Err(e) = nix::unistd::chdir(wd) {
        return setup_err(RuntimeError::sys(format!("chdir {wd}"))(e));
    }
    let path_env = env.iter().find_map(|e| e.strip_prefix("PATH="));
    let Some(arg0) = p.args.first() else {
        return ExecFailure {
            code: 127,
            message: "no command specified".into(),
        };
    };
    let program = match process::lookup_program(arg0, path_env, Path::new(wd)) {
        Ok(p) => p,
        Err(f) => return f,
    };
    let (program, argv, envp) = match to_cstrings(&program, &p.args, &env) {
        Ok(x) => x,
        Err(e) => return setup_err(e),
    };
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, so it goes in before the drop.
    if !p.no_new_privileges
        && let Some(f) = &p.seccomp
        && let Err(e) = f.install()
    {
        return setup_err(e);
    }
    if let Err(e) = set_identity_and_caps(p, &user) {
        return setup_err(e);
    }
    if p.no_new_privileges {
        if let Err(e) = nix::sys::prctl::set_no_new_privs() {
            return setup_err(RuntimeError::sys("set no_new_privs")(e));
        }
        if let Some(f) = &p.seccomp
            && let Err(e) = f.install()
        {
            return setup_err(e);
        }
    }
    if let Some(go) = go {
        let mut byte = [0u8; 1];
        if nix::unistd::read(&go, &mut byte) != Ok(1) {
            return ExecFailure {
                code: SETUP_FAILED,
                message: "the supervisor ended before the container was started".into(),
            };
        }
    }
    if init {
        run_init(err_w);
    }
    // No fd of ours may leak into the container (CVE-2024-21626): mark all but stdio close-on-exec.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    let e = nix::unistd::execve(&program, &argv, &envp).unwrap_err();
    let code = if e == nix::Error::ENOENT { 127 } else { 126 };
    ExecFailure {
        code,
        message: format!("exec {}: {}", p.args[0], e.desc().to_lowercase()),
    }
}

type CStrings = (CString, Vec<CString>, Vec<CString>);

fn to_cstrings(program: &Path, args: &[String], env: &[String]) -> Result<CStrings> {
    let program = rootfs::cstring("program path", &program.to_string_lossy())?;
    let argv = args
        .iter()
        .map(|a| rootfs::cstring("argument", a))
        .collect::<Result<_>>()?;
    let envp = env
        .iter()
        .map(|e| rootfs::cstring("environment", e))
        .collect::<Result<_>>()?;
    Ok((program, argv, envp))
}

fn set_identity_and_caps(p: &ProcessPlan, user: &process::ExecUser) -> Result<()> {
    let capserr = |what: &str| {
        let what = what.to_string();
        move |e: caps::errors::CapsError| RuntimeError::Spec(format!("{what}: {e}"))
    };
    if !p.privileged {
        for cap in caps::all() {
            if !p.caps.contains(&cap) {
                // Capabilities the kernel lacks fail with EINVAL; they are not there to drop.
                let _ = caps::drop(None, CapSet::Bounding, cap);
            }
        }
    }
    let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(RuntimeError::sys("setgroups"))?;
    nix::unistd::setresgid(
        Gid::from_raw(user.gid),
        Gid::from_raw(user.gid),
        Gid::from_raw(user.gid),
    )
    .map_err(RuntimeError::sys(format!("setgid {}", user.gid)))?;
    // Without PR_SET_KEEPCAPS, becoming a non-root user clears the permitted and effective sets, as in Docker.
    nix::unistd::setresuid(
        Uid::from_raw(user.uid),
        Uid::from_raw(user.uid),
        Uid::from_raw(user.uid),
    )
    .map_err(RuntimeError::sys(format!("setuid {}", user.uid)))?;
    let set: caps::CapsHashSet = p.caps.iter().copied().collect();
    caps::clear(None, CapSet::Ambient).map_err(capserr("clear ambient capabilities"))?;
    caps::clear(None, CapSet::Inheritable).map_err(capserr("clear inheritable capabilities"))?;
    if user.uid == 0 {
        caps::set(None, CapSet::Effective, &set).map_err(capserr("set effective capabilities"))?;
        caps::set(None, CapSet::Permitted, &set).map_err(capserr("set permitted capabilities"))?;
    }
    Ok(())
}

/// Becomes berth's init: forks the real process, then as PID 1 reaps every child and forwards signals to
/// it until it exits, and exits with its status. Returns in the forked child only.
fn run_init(err_w: &OwnedFd) {
    let all = SigSet::all();
    let mut old = SigSet::empty();
    // Blocked signals are delivered to sigwait below; the child restores the mask before exec.
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&all), Some(&mut old));
    // SAFETY: the process is single-threaded.
    let child = match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            return;
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
        Err(e) => fail(
            err_w,
            ExecFailure {
                code: SETUP_FAILED,
                message: format!("init: fork: {e}"),
            },
        ),
    };
    // Keep nothing of the supervisor's: the error pipe (so the parent sees EOF once the child has exec'd),
    // its socket, its readiness pipe.
    let _ = err_w;
    // SAFETY: what owns descriptors above stdio (`err_w`, the supervisor's objects) is never used or dropped
    // again: the loop below ends the process with `_exit`.
    unsafe { crate::fsutil::close_from(3) };
    loop {
        let sig = match all.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = nix::sys::signal::kill(child, sig);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                    // SAFETY: exiting PID 1 ends the container, which is what the child's exit means.
                    unsafe { libc::_exit(code) }
                }
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == child => {
                    // SAFETY: as above.
                    unsafe { libc::_exit(128 + s as i32) }
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}

/// The namespaces of a running container, opened from its first process, for `exec`.
#[derive(Debug)]
pub struct ContainerNamespaces {
    fds: Vec<(OwnedFd, CloneFlags)>,
    root: OwnedFd,
}

impl ContainerNamespaces {
    /// Opens `/proc/<pid>/ns/*` and the process's root.
    pub fn open(pid: Pid) -> Result<Self> {
        let mut fds = Vec::new();
        // The mount namespace goes last: after it, /proc paths of the host are gone.
        for (name, flag) in [
            ("cgroup", CloneFlags::CLONE_NEWCGROUP),
            ("ipc", CloneFlags::CLONE_NEWIPC),
            ("uts", CloneFlags::CLONE_NEWUTS),
            ("net", CloneFlags::CLONE_NEWNET),
            ("pid", CloneFlags::CLONE_NEWPID),
            ("mnt", CloneFlags::CLONE_NEWNS),
        ] {
            let path = format!("/proc/{pid}/ns/{name}");
            let fd = nix::fcntl::open(
                path.as_str(),
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(RuntimeError::sys(format!("open {path}")))?;
            fds.push((fd, flag));
        }
        let path = format!("/proc/{pid}/root");
        let root = nix::fcntl::open(
            path.as_str(),
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(RuntimeError::sys(format!("open {path}")))?;
        Ok(ContainerNamespaces { fds, root })
    }
}

/// Starts `plan` inside a running container. The intermediate child joins the namespaces, then clones the
/// real process with CLONE_PARENT, so it becomes the caller's child directly in the container's pid
/// namespace. Returns that process.
pub fn spawn_exec(
    ns: &ContainerNamespaces,
    cgroup: Option<&Cgroup>,
    plan: &ProcessPlan,
    stdio: ChildStdio,
) -> Result<Spawned> {
    let (err_r, err_w) = pipe()?;
    let (pid_r, pid_w) = pipe()?;
    let (mid, born_inside) = clone3_in(CloneFlags::empty(), cgroup)?;
    if mid == 0 {
        drop(err_r);
        drop(pid_r);
        let cgroup = cgroup.filter(|_| !born_inside);
        let code = exec_intermediate(ns, cgroup, plan, stdio, &err_w, &pid_w);
        // SAFETY: leaving a forked child without running the parent's destructors.
        unsafe { libc::_exit(code) }
    }
    drop(err_w);
    drop(pid_w);
    let mid = Pid::from_raw(mid);
    let mut buf = [0u8; 4];
    let mut f = std::fs::File::from(pid_r);
    let got = f.read_exact(&mut buf);
    let status = waitpid(mid, None).map_err(RuntimeError::sys("wait for exec helper"))?;
    if got.is_err() {
        // The helper failed before cloning: its error is on the error pipe.
        let failure = read_setup_result(err_r).err().unwrap_or(ExecFailure {
            code: SETUP_FAILED,
            message: format!("exec helper ended early: {status:?}"),
        });
        return Err(RuntimeError::Spec(failure.message));
    }
    Ok(Spawned {
        pid: Pid::from_raw(i32::from_le_bytes(buf)),
        errors: err_r,
        go: None,
    })
}

fn exec_intermediate(
    ns: &ContainerNamespaces,
    cgroup: Option<&Cgroup>,
    plan: &ProcessPlan,
    stdio: ChildStdio,
    err_w: &OwnedFd,
    pid_w: &OwnedFd,
) -> i32 {
    reset_signals();
    let joined = (|| -> Result<()> {
        nix::sys::prctl::set_dumpable(false).map_err(RuntimeError::sys("set dumpable"))?;
        if let Some(cg) = cgroup {
            cg.join_self()?;
        }
        for (fd, flag) in &ns.fds {
            nix::sched::setns(fd.as_fd(), *flag).map_err(RuntimeError::sys(format!("setns {flag:?}")))?;
        }
        // The root of the container, not whatever the mount namespace's root was (and no host cwd).
        nix::unistd::fchdir(ns.root.as_fd()).map_err(RuntimeError::sys("fchdir to the container root"))?;
        nix::unistd::chroot(".").map_err(RuntimeError::sys("chroot"))?;
        nix::unistd::chdir("/").map_err(RuntimeError::sys("chdir /"))?;
        Ok(())
    })();
    if let Err(e) = joined {
        fail(err_w, setup_err(e));
    }
    let pid = match clone3(CloneFlags::CLONE_PARENT) {
        Ok(p) => p,
        Err(e) => fail(err_w, setup_err(e)),
    };
    if pid == 0 {
        let e = (|| -> Result<(), ExecFailure> {
            set_stdio(stdio).map_err(setup_err)?;
            Err(confine_and_exec(plan, false, None, err_w))
        })();
        match e {
            Err(f) => fail(err_w, f),
            Ok(()) => unreachable!("confine_and_exec only returns failures"),
        }
    }
    let mut f = std::fs::File::from(pid_w.try_clone().expect("dup of a valid fd"));
    let _ = f.write_all(&pid.to_le_bytes());
    0
}

#[cfg(test)]
mod tests {
    use super::super::cgroup::Layout;
    use super::super::spec::Resources;
    use super::*;

    /// Clones a child into `cg` the way containers and execs are started and returns what its
    /// `/proc/self/cgroup` said, with whether it was born there.
    fn child_cgroups(cg: &Cgroup) -> (String, bool) {
        let (out_r, out_w) = pipe().expect("pipe");
        let (pid, born_inside) = clone3_in(CloneFlags::empty(), Some(cg)).expect("clone3");
        if pid == 0 {
            let joined = born_inside || cg.join_self().is_ok();
            let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            let _ = nix::unistd::write(&out_w, if joined { text.as_bytes() } else { b"join failed" });
            // SAFETY: leaving the forked test child without running the harness's destructors.
            unsafe { libc::_exit(0) }
        }
        drop(out_w);
        let mut text = String::new();
        std::fs::File::from(out_r).read_to_string(&mut text).expect("read");
        waitpid(Pid::from_raw(pid), None).expect("waitpid");
        (text, born_inside)
    }

    fn unique(kind: &str) -> String {
        format!(
            "berth-test/spawn-{kind}-{}-{}",
            std::process::id(),
            crate::fsutil::random_hex(4)
        )
    }

    /// A root test against the real kernel: on this host's hierarchies (v1 on a hybrid host) the child moves
    /// itself; on a cgroup2 hierarchy (the hybrid host's `unified`, or the whole tree on a pure v2 host) it is
    /// born inside with `CLONE_INTO_CGROUP`.
    #[test]
    fn children_start_in_their_cgroup() {
        assert!(Uid::effective().is_root(), "this test needs root (CI runs as root)");
        let mut layouts = vec![Layout::detect().expect("cgroup layout")];
        let unified = Path::new("/sys/fs/cgroup/unified");
        if !layouts[0].is_v2() && unified.join("cgroup.procs").exists() {
            layouts.push(Layout::v2_at(unified.to_path_buf()));
        }
        for layout in layouts {
            let v2 = layout.is_v2();
            let rel = unique(if v2 { "v2" } else { "v1" });
            let cg = Cgroup::new(layout, &rel);
            cg.create(&Resources::default()).expect("create cgroup");
            let (text, born_inside) = child_cgroups(&cg);
            let _ = cg.delete();
            assert_eq!(born_inside, v2, "only a v2 child is born in its cgroup: {text}");
            let lines: Vec<&str> = text.lines().filter(|l| l.ends_with(&format!("/{rel}"))).collect();
            if v2 {
                assert_eq!(lines, [format!("0::/{rel}")], "{text}");
            } else {
                for controller in ["memory", "pids", "freezer", "cpu"] {
                    assert!(
                        lines.iter().any(|l| l
                            .split(':')
                            .nth(1)
                            .is_some_and(|c| c.split(',').any(|c| c == controller))),
                        "the child is not in the {controller} cgroup: {text}"
                    );
                }
            }
        }
    }
}
