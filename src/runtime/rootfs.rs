//! The container's file-system view: the overlayfs root, the mounts Docker makes (/proc, /sys, /dev and
//! friends), the caller's volumes, pivot_root, and the masked and read-only paths. Runs in the container's
//! new mount namespace, in the child, before the process is executed.
//!
//! Every mount target inside the root is resolved with `openat2(RESOLVE_IN_ROOT)` and mounted through
//! `/proc/self/fd/N`, so a symlink in the image can never redirect a mount outside the root.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, mknodat};

use super::error::{Result, RuntimeError};
use super::spec::{MountKind, MountSpec};

/// Paths Docker hides from unprivileged containers (masked with /dev/null or an empty read-only tmpfs).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker makes read-only in unprivileged containers.
pub const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Device nodes every container gets: name, major, minor.
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Everything `setup` needs, prepared by the supervisor before the clone.
#[derive(Debug, Clone)]
pub struct RootfsPlan {
    /// Overlay lower dirs, top-most first.
    pub layers: Vec<PathBuf>,
    /// The container's upper, work and merged directories.
    pub upper: PathBuf,
    /// Overlay work directory.
    pub work: PathBuf,
    /// Where the overlay is mounted before pivot_root.
    pub merged: PathBuf,
    /// Mount the root read-only.
    pub read_only: bool,
    /// The upper dir is deleted with the container: mount the overlay `volatile` (Linux 5.10), so that its
    /// unmount, when the container's last process exits, does not sync the whole host file system first.
    pub volatile: bool,
    /// Generated /etc/hosts, /etc/hostname and /etc/resolv.conf on the host.
    pub etc_files: Vec<(PathBuf, &'static str)>,
    /// The caller's mounts.
    pub mounts: Vec<MountSpec>,
    /// /dev/shm size in bytes.
    pub shm_size: u64,
    /// cgroup file systems to mount at /sys/fs/cgroup: (fstype, options, relative target).
    pub cgroup_mounts: Vec<(String, String, PathBuf)>,
    /// Privileged: no masked or read-only paths, sysfs writable.
    pub privileged: bool,
    /// The container shares the host's network namespace (sysfs is bind-mounted, not mounted anew).
    pub host_network: bool,
}

fn sys(op: impl Into<String>) -> impl FnOnce(Errno) -> RuntimeError {
    RuntimeError::sys(op)
}

/// Mounts the whole file-system view and pivots into it. Runs in the child, in a new mount namespace.
/// `overlay`: the root already made by [`make_overlay`], to attach; `None` mounts it here.
pub fn setup(plan: &RootfsPlan, overlay: Option<&OwnedFd>) -> Result<()> {
    // Nothing we mount may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(sys("make / rslave"))?;
    match overlay {
        Some(fd) => attach_overlay(fd, &plan.merged)?,
        None => mount_overlay(plan)?,
    }
    let root = open_root(&plan.merged)?;
    mount_in(&root, "/proc", Some("proc"), "proc", nosuid_noexec_nodev(), None)?;
    mount_dev(&root, plan.shm_size)?;
    mount_sys(&root, plan)?;
    for (host, target) in &plan.etc_files {
        bind_in(&root, host, target, false, false, None)?;
    }
    for m in &plan.mounts {
        mount_user(&root, m)?;
    }
    drop(root);
    pivot(&plan.merged)?;
    if !plan.privileged {
        mask_paths()?;
    }
    Ok(())
}

/// Applies what must come after sysctls were written: read-only /proc paths and a read-only root.
pub fn finish(plan: &RootfsPlan) -> Result<()> {
    if !plan.privileged {
        for p in READONLY_PATHS {
            remount_readonly(p)?;
        }
    }
    if plan.read_only {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(sys("remount / read-only"))?;
    }
    Ok(())
}

fn nosuid_noexec_nodev() -> MsFlags {
    MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV
}

// The new mount API (Linux 5.2), which `nix` does not wrap: <linux/mount.h>.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// The overlay root as a detached mount, made before the container process needs it: setting up an overlay
/// creates and tests its work directory on the host file system (0.3–1.7 ms here), and the supervisor does
/// that while it prepares the rest; the process then only attaches it (see `setup`). `None` where the
/// kernel lacks the new mount API or refuses: the process mounts the overlay itself and reports any error.
pub fn make_overlay(layers: &[PathBuf], upper: &Path, work: &Path, volatile: bool) -> Option<OwnedFd> {
    if layers.is_empty() {
        return None;
    }
    let lower = lowerdir(layers);
    // SAFETY: fsopen with a NUL-terminated name; the result is a new fd we own.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
    if fs < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this fd and nobody else owns it.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as RawFd) };
    let set = |cmd: libc::c_uint, key: &CStr, value: Option<&CStr>| -> bool {
        let value = value.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: fsconfig on our fs context with NUL-terminated key and value (or null for a flag).
        unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, key.as_ptr(), value, 0) == 0 }
    };
    let string = |key: &CStr, value: String| CString::new(value).is_ok_and(|v| set(FSCONFIG_SET_STRING, key, Some(&v)));
    // `source` as mount(8) and Docker show it in /proc/mounts.
    let configured = string(c"source", "overlay".into())
        && string(c"lowerdir", lower)
        && string(c"upperdir", escape_overlay_path(upper))
        && string(c"workdir", escape_overlay_path(work));
    // A kernel before 5.10 does not know `volatile`: the mount is merely slower to undo without it.
    if !configured || (volatile && !set(FSCONFIG_SET_FLAG, c"volatile", None) && Errno::last() != Errno::EINVAL) {
        return None;
    }
    // SAFETY: as above; a null key for a command.
    if unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    } != 0
    {
        return None;
    }
    // SAFETY: fsmount of our configured context; the result is a new fd we own.
    let mnt = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    // SAFETY: as above.
    (mnt >= 0).then(|| unsafe { OwnedFd::from_raw_fd(mnt as RawFd) })
}

/// Attaches the detached overlay `fd` (from [`make_overlay`]) at `merged` in this mount namespace.
fn attach_overlay(fd: &OwnedFd, merged: &Path) -> Result<()> {
    let target =
        CString::new(merged.as_os_str().as_bytes()).map_err(|_| RuntimeError::Spec("a NUL in a path".into()))?;
    // SAFETY: move_mount of our detached mount fd onto a NUL-terminated path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(RuntimeError::sys(format!("attach the overlay on {}", merged.display()))(Errno::last()));
    }
    Ok(())
}

fn mount_overlay(plan: &RootfsPlan) -> Result<()> {
    if plan.layers.is_empty() {
        return Err(RuntimeError::Spec("the root file system has no layers".into()));
    }
    let lower = lowerdir(&plan.layers);
    let data = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        escape_overlay_path(&plan.upper),
        escape_overlay_path(&plan.work)
    );
    if data.len() + ",volatile".len() >= 4096 {
        return Err(RuntimeError::Spec(format!(
            "overlay options are {} bytes, more than the kernel's 4096: too many layers",
            data.len()
        )));
    }
    let overlay = |data: &str| {
        mount(
            Some("overlay"),
            &plan.merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(data),
        )
    };
    let mounted = match plan.volatile {
        // A kernel before 5.10 does not know the option: the mount is merely slower to undo without it.
        true => {
            overlay(&format!("{data},volatile")).or_else(|e| if e == Errno::EINVAL { overlay(&data) } else { Err(e) })
        }
        false => overlay(&data),
    };
    mounted.map_err(RuntimeError::sys(format!(
        "mount overlay on {} ({data})",
        plan.merged.display()
    )))
}

/// The `lowerdir` value: the layers, top-most first, escaped and joined with `:`.
fn lowerdir(layers: &[PathBuf]) -> String {
    layers
        .iter()
        .map(|p| escape_overlay_path(p))
        .collect::<Vec<_>>()
        .join(":")
}

/// Overlay options separate paths with `:` and `,`; escape both, and backslashes.
fn escape_overlay_path(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ':' | ',' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn open_root(merged: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        merged,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(RuntimeError::sys(format!("open {}", merged.display())))
}

/// What must exist at a mount target.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

/// Opens `target` (absolute, inside the container) under `root` with O_PATH, creating missing components.
/// Symlinks resolve inside the root, never outside it.
fn resolve_in_root(root: &OwnedFd, target: &str, kind: Kind) -> Result<OwnedFd> {
    let rel = clean_target(target)?;
    match openat2(root.as_fd(), rel.as_path(), in_root()) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => {
            return Err(RuntimeError::sys(format!("resolve mount target {target}"))(e));
        }
    }
    // Usually only the last component is missing (a mount point the image lacks): make it in its parent.
    let file = kind == Kind::File;
    if let (Some(dir), Some(name)) = (rel.parent().filter(|p| !p.as_os_str().is_empty()), rel.file_name()) {
        match openat2(root.as_fd(), dir, in_root()) {
            Ok(parent) => return make_component(root, &parent, name, &rel, file, target),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(RuntimeError::sys(format!("resolve mount target {target}"))(e)),
        }
    }
    // Else create the missing components one by one, each resolved inside the root.
    let comps: Vec<_> = rel.components().collect();
    let mut prefix = PathBuf::new();
    let mut parent = nix::fcntl::openat(root.as_fd(), ".", OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(sys("open root"))?;
    for (i, c) in comps.iter().enumerate() {
        let name = c.as_os_str();
        prefix.push(name);
        let last = i + 1 == comps.len();
        parent = match openat2(root.as_fd(), prefix.as_path(), in_root()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => make_component(root, &parent, name, &prefix, last && file, target)?,
            Err(e) => return Err(RuntimeError::sys(format!("resolve mount target {target}"))(e)),
        };
    }
    Ok(parent)
}

/// An O_PATH open that resolves every component inside the root and follows no magic links.
fn in_root() -> OpenHow {
    OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Creates `name` (a directory, or an empty file when `file`) in `parent`, an O_PATH fd, and resolves it again
/// as `path` inside the root, so that whatever was made, only something inside the root is returned.
fn make_component(
    root: &OwnedFd,
    parent: &OwnedFd,
    name: &std::ffi::OsStr,
    path: &Path,
    file: bool,
    target: &str,
) -> Result<OwnedFd> {
    // The parent is open as O_PATH; creation needs a real directory fd.
    let dir = nix::fcntl::openat(
        parent.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(RuntimeError::sys(format!("open parent of mount target {target}")))?;
    let created = if file {
        nix::fcntl::openat(
            dir.as_fd(),
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o644),
        )
        .map(drop)
    } else {
        nix::sys::stat::mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o755))
    };
    match created {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(RuntimeError::sys(format!("create mount target {target}"))(e)),
    }
    openat2(root.as_fd(), path, in_root()).map_err(RuntimeError::sys(format!("resolve mount target {target}")))
}

/// Turns an absolute container path into a relative one with no `..`; rejects anything else.
fn clean_target(target: &str) -> Result<PathBuf> {
    let p = Path::new(target);
    if !p.is_absolute() {
        return Err(RuntimeError::Spec(format!(
            "mount target {target:?} is not an absolute path"
        )));
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::Prefix(_) => unreachable!("no path prefixes on unix"),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(RuntimeError::Spec(format!(
            "cannot mount over the container's root ({target:?})"
        )));
    }
    Ok(out)
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Mounts a file system of `fstype` at `target` inside the root.
fn mount_in(
    root: &OwnedFd,
    target: &str,
    source: Option<&str>,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    let fd = resolve_in_root(root, target, Kind::Dir)?;
    mount(source, fd_path(&fd).as_str(), Some(fstype), flags, data)
        .map_err(RuntimeError::sys(format!("mount {fstype} on {target}")))
}

/// Bind-mounts a host path at `target` inside the root, optionally read-only.
fn bind_in(
    root: &OwnedFd,
    host: &Path,
    target: &str,
    read_only: bool,
    recursive: bool,
    propagation: Option<MsFlags>,
) -> Result<()> {
    let meta = std::fs::metadata(host).map_err(RuntimeError::io("stat bind source", host))?;
    let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
    let fd = resolve_in_root(root, target, kind)?;
    let path = fd_path(&fd);
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(host), path.as_str(), None::<&str>, flags, None::<&str>)
        .map_err(RuntimeError::sys(format!("bind {} on {target}", host.display())))?;
    if read_only {
        // A fresh fd: the old one names the covered directory, not the new mount.
        let fd = resolve_in_root(root, target, kind)?;
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC;
        mount(None::<&str>, fd_path(&fd).as_str(), None::<&str>, flags, None::<&str>)
            .map_err(RuntimeError::sys(format!("remount {target} read-only")))?;
    }
    if let Some(p) = propagation {
        let fd = resolve_in_root(root, target, kind)?;
        mount(None::<&str>, fd_path(&fd).as_str(), None::<&str>, p, None::<&str>)
            .map_err(RuntimeError::sys(format!("set propagation of {target}")))?;
    }
    Ok(())
}

fn mount_dev(root: &OwnedFd, shm_size: u64) -> Result<()> {
    mount_in(
        root,
        "/dev",
        Some("tmpfs"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    let dev = resolve_in_root(root, "/dev", Kind::Dir)?;
    let dev = nix::fcntl::openat(
        dev.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("open /dev"))?;
    // mknod honours the umask; the nodes must be 0666 whatever this process's umask is.
    let umask = nix::sys::stat::umask(Mode::empty());
    let made = DEVICES.iter().try_for_each(|(name, major, minor)| {
        mknodat(
            dev.as_fd(),
            *name,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(*major, *minor),
        )
        .map_err(RuntimeError::sys(format!("mknod /dev/{name}")))
    });
    nix::sys::stat::umask(umask);
    made?;
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        nix::unistd::symlinkat(to, dev.as_fd(), link).map_err(RuntimeError::sys(format!("symlink /dev/{link}")))?;
    }
    drop(dev);
    mount_in(
        root,
        "/dev/pts",
        Some("devpts"),
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = format!("mode=1777,size={shm_size}");
    mount_in(
        root,
        "/dev/shm",
        Some("shm"),
        "tmpfs",
        nosuid_noexec_nodev(),
        Some(shm.as_str()),
    )?;
    mount_in(
        root,
        "/dev/mqueue",
        Some("mqueue"),
        "mqueue",
        nosuid_noexec_nodev(),
        None,
    )?;
    Ok(())
}

fn mount_sys(root: &OwnedFd, plan: &RootfsPlan) -> Result<()> {
    let ro = if plan.privileged {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };
    if plan.host_network {
        // sysfs can only be mounted anew by the owner of the network namespace; bind the host's instead.
        bind_in(root, Path::new("/sys"), "/sys", !plan.privileged, true, None)?;
        return Ok(());
    }
    mount_in(root, "/sys", Some("sysfs"), "sysfs", nosuid_noexec_nodev() | ro, None)
}

/// Mounts the container's cgroup hierarchies read-only at /sys/fs/cgroup. Runs after pivot_root, once the
/// process has joined its cgroup and unshared the cgroup namespace, so each hierarchy shows the
/// container's own cgroup as its root.
pub fn mount_cgroups(plan: &RootfsPlan) -> Result<()> {
    if plan.cgroup_mounts.is_empty() || plan.host_network {
        return Ok(());
    }
    let root = open_root(Path::new("/"))?;
    let root = &root;
    let ro = if plan.privileged {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };
    let v2 = plan.cgroup_mounts.iter().any(|(t, _, _)| t == "cgroup2");
    if !v2 {
        mount_in(
            root,
            "/sys/fs/cgroup",
            Some("tmpfs"),
            "tmpfs",
            nosuid_noexec_nodev(),
            Some("mode=755"),
        )?;
    }
    for (fstype, options, rel) in &plan.cgroup_mounts {
        let target = Path::new("/sys/fs/cgroup").join(rel);
        let target = target.to_string_lossy();
        let data = (!options.is_empty()).then_some(options.as_str());
        mount_in(root, &target, Some("cgroup"), fstype, nosuid_noexec_nodev() | ro, data)?;
    }
    if !v2 && !plan.privileged {
        let fd = resolve_in_root(root, "/sys/fs/cgroup", Kind::Dir)?;
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nosuid_noexec_nodev();
        mount(
            None::<&str>,
            fd_path(&fd).as_str(),
            Some("tmpfs"),
            flags,
            Some("mode=755"),
        )
        .map_err(sys("remount /sys/fs/cgroup read-only"))?;
    }
    Ok(())
}

fn mount_user(root: &OwnedFd, m: &MountSpec) -> Result<()> {
    match &m.kind {
        MountKind::Bind { source, propagation } => {
            let prop = parse_propagation(propagation.as_deref())?;
            bind_in(root, source, &m.target, m.read_only, true, Some(prop))
        }
        MountKind::Volume { source } => bind_in(root, source, &m.target, m.read_only, true, None),
        MountKind::Tmpfs { size, mode } => {
            let mut data = format!("mode={:o}", mode.unwrap_or(0o1777));
            if let Some(size) = size {
                data.push_str(&format!(",size={size}"));
            }
            let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            if m.read_only {
                flags |= MsFlags::MS_RDONLY;
            }
            mount_in(root, &m.target, Some("tmpfs"), "tmpfs", flags, Some(data.as_str()))
        }
    }
}

/// Docker's bind propagation names; the default is rprivate.
pub fn parse_propagation(p: Option<&str>) -> Result<MsFlags> {
    Ok(match p.unwrap_or("rprivate") {
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "private" => MsFlags::MS_PRIVATE,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        other => return Err(RuntimeError::Spec(format!("unknown bind propagation {other:?}"))),
    })
}

/// pivot_root into `merged` and detach the old root, without a temporary directory.
fn pivot(merged: &Path) -> Result<()> {
    nix::unistd::chdir(merged).map_err(sys("chdir to the new root"))?;
    nix::unistd::pivot_root(".", ".").map_err(sys("pivot_root"))?;
    // The old root is now stacked on top of the new one at "/": make it private, then detach it.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys("make the old root rslave"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("detach the old root"))?;
    nix::unistd::chdir("/").map_err(sys("chdir /"))?;
    Ok(())
}

fn mask_paths() -> Result<()> {
    for p in MASKED_PATHS {
        let meta = match std::fs::symlink_metadata(p) {
            Ok(m) => m,
            Err(_) => continue,
        };
        let r = if meta.is_dir() {
            mount(
                Some("tmpfs"),
                *p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0"),
            )
        } else {
            mount(Some("/dev/null"), *p, None::<&str>, MsFlags::MS_BIND, None::<&str>).and_then(|()| {
                let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                mount(None::<&str>, *p, None::<&str>, ro, None::<&str>)
            })
        };
        r.map_err(RuntimeError::sys(format!("mask {p}")))?;
    }
    Ok(())
}

fn remount_readonly(p: &str) -> Result<()> {
    if std::fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    let err = || RuntimeError::sys(format!("make {p} read-only"));
    mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err())?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    mount(Some(p), p, None::<&str>, flags, None::<&str>).map_err(err())
}

/// A C string, or an error naming what held a NUL byte.
pub fn cstring(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| RuntimeError::Spec(format!("{what} contains a NUL byte: {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_cleaned_inside_the_root() {
        assert_eq!(clean_target("/a/b/../c").unwrap(), PathBuf::from("a/c"));
        assert_eq!(clean_target("/../../etc").unwrap(), PathBuf::from("etc"));
        assert!(clean_target("relative").is_err());
        assert!(clean_target("/").is_err());
        assert!(clean_target("/a/..").is_err());
    }

    #[test]
    fn overlay_paths_escape_separators() {
        assert_eq!(escape_overlay_path(Path::new("/a:b,c\\d")), "/a\\:b\\,c\\\\d");
    }

    #[test]
    fn propagation_names() {
        assert_eq!(parse_propagation(None).unwrap(), MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(parse_propagation(Some("slave")).unwrap(), MsFlags::MS_SLAVE);
        assert!(parse_propagation(Some("bogus")).is_err());
    }
}
