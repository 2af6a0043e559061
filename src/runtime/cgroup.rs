//! cgroups of one container: finding the hierarchies (v1 or hybrid, and pure v2), creating the container's
//! cgroup with Docker's limits and device rules, moving processes in, freezing, killing, stats and removal.
//!
//! Everything is plain file I/O below the cgroup mounts; nothing shells out. A [`Layout`] names the mount
//! directories, so tests point it at a temporary directory.
//!
//! Limits are written as given and the kernel keeps enforcing every ancestor's limits, so a container never gets
//! more than the host allows. Ancestors are touched only where the kernel demands it: v2 `cgroup.subtree_control`
//! (controllers the parent already has) and v1 empty `cpuset.cpus`/`cpuset.mems` (copied from the parent, never
//! widened).
//!
//! Device access: on v1 the `devices` controller gets Docker's default rules. On v2 the kernel filters devices only
//! through an eBPF program attached to the cgroup; berth does not load one, so v2 device filtering is not
//! implemented and a container's device access is bounded by the nodes in its `/dev` and its capabilities.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{ErrorKind, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::error::{Result, RuntimeError};
use super::spec::Resources;

/// v1 controllers a container's cgroup is created in (those that are mounted).
const V1_CONTROLLERS: &[&str] = &[
    "memory", "cpu", "cpuacct", "pids", "freezer", "devices", "cpuset", "blkio",
];

/// Every v1 controller the kernel knows: the mount options that name a hierarchy's controllers.
const V1_KNOWN: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// v2 controllers enabled for the container in its ancestors' `cgroup.subtree_control`.
const V2_CONTROLLERS: &[&str] = &["cpu", "io", "memory", "pids"];

/// CFS period in microseconds, Docker's.
const CFS_PERIOD_US: u64 = 100_000;

/// Docker's default v1 device rules, written after `devices.deny a`: mknod of anything, and access to the usual
/// character devices (null, zero, full, random, urandom, tty, console, ptmx, pts, tun).
const DEFAULT_DEVICE_RULES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
];

/// How long freezing or thawing may take.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long killed processes get to leave the cgroup, and `delete` retries a busy directory.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(1);

/// v1 memory limits at or above this are "unlimited" (the kernel reports `PAGE_COUNTER_MAX` pages).
const V1_UNLIMITED: u64 = 1 << 62;

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v1 (also the hybrid layout): one hierarchy per controller or group of co-mounted controllers.
    V1 {
        /// Controller name (`memory`, `cpu`, `name=systemd`, …) → its mount directory. Co-mounted controllers
        /// share a directory.
        controllers: BTreeMap<String, PathBuf>,
    },
    /// cgroup v2: one unified hierarchy.
    V2 {
        /// Its mount directory, normally `/sys/fs/cgroup`.
        root: PathBuf,
    },
}

impl Layout {
    /// Finds the hierarchies this process sees, from `/proc/self/mountinfo`.
    pub fn detect() -> Result<Layout> {
        let path = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(path).map_err(RuntimeError::io("read", path))?;
        Layout::from_mountinfo(&text)
    }

    /// Parses `/proc/<pid>/mountinfo` text. A cgroup2 mount at `/sys/fs/cgroup` means v2; otherwise any mounted v1
    /// controller we use means v1 (hybrid hosts included); otherwise a cgroup2 mount elsewhere (systemd's "unified"
    /// mode, where `/sys/fs/cgroup` is a tmpfs holding only `name=systemd` and `unified`) means v2 there.
    pub fn from_mountinfo(text: &str) -> Result<Layout> {
        // Controller → (mount dir, whether the mount shows the hierarchy's root).
        let mut v1: BTreeMap<String, (PathBuf, bool)> = BTreeMap::new();
        let mut v2: Vec<PathBuf> = Vec::new();
        for line in text.lines() {
            let Some((mount, fs_part)) = line.split_once(" - ") else {
                continue;
            };
            // id parent major:minor root mount-point options [optional fields…]
            let mount: Vec<&str> = mount.split(' ').collect();
            // fstype source super-options
            let fs_part: Vec<&str> = fs_part.split(' ').collect();
            let (Some(root), Some(point), Some(fstype)) = (mount.get(3), mount.get(4), fs_part.first()) else {
                continue;
            };
            let point = PathBuf::from(unescape_mountinfo(point));
            match *fstype {
                "cgroup2" => v2.push(point),
                "cgroup" => {
                    let whole = *root == "/";
                    let options = fs_part.get(2).copied().unwrap_or_default();
                    for option in options.split(',') {
                        if !(V1_KNOWN.contains(&option) || option.starts_with("name=")) {
                            continue;
                        }
                        // The same hierarchy may be mounted twice (bind mounts); prefer a mount of its root.
                        let keep = v1.get(option).is_some_and(|(_, kept_whole)| *kept_whole || !whole);
                        if !keep {
                            v1.insert(option.to_string(), (point.clone(), whole));
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(root) = v2.iter().find(|p| p.as_path() == Path::new("/sys/fs/cgroup")) {
            return Ok(Layout::V2 { root: root.clone() });
        }
        if V1_CONTROLLERS.iter().any(|c| v1.contains_key(*c)) {
            let controllers = v1.into_iter().map(|(c, (dir, _))| (c, dir)).collect();
            return Ok(Layout::V1 { controllers });
        }
        match v2.into_iter().next() {
            Some(root) => Ok(Layout::V2 { root }),
            None => Err(RuntimeError::Cgroup {
                path: PathBuf::from("/sys/fs/cgroup"),
                message: "no cgroup hierarchy is mounted (none in /proc/self/mountinfo); mount cgroup2 there".into(),
            }),
        }
    }

    /// A v2 layout rooted at `root` (tests use a temporary directory).
    pub fn v2_at(root: PathBuf) -> Layout {
        Layout::V2 { root }
    }

    /// A v1 layout with these controller → mount directory entries (tests use temporary directories).
    pub fn v1_at(controllers: BTreeMap<String, PathBuf>) -> Layout {
        Layout::V1 { controllers }
    }

    /// Whether this is the unified (v2) hierarchy.
    pub fn is_v2(&self) -> bool {
        matches!(self, Layout::V2 { .. })
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match digits {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Usage numbers of a cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Memory charged to the cgroup in bytes, page cache included (v1 `memory.usage_in_bytes`, v2
    /// `memory.current`).
    pub memory_usage: u64,
    /// The hard memory limit in bytes; `None` when unlimited.
    pub memory_limit: Option<u64>,
    /// CPU time used, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Number of tasks (threads included where the pids controller counts them).
    pub pids: u64,
}

/// One container's cgroup: the same relative path (e.g. `berth/<id>`) below every hierarchy it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    layout: Layout,
    rel: PathBuf,
}

impl Cgroup {
    /// No I/O: names the cgroup `rel` (e.g. "berth/<container id>") under every controller we use. Only the normal
    /// components of `rel` are kept, so it can neither be absolute nor climb out with `..`.
    pub fn new(layout: Layout, rel: impl Into<PathBuf>) -> Cgroup {
        let rel = rel
            .into()
            .components()
            .filter_map(|c| match c {
                Component::Normal(part) => Some(part),
                _ => None,
            })
            .collect();
        Cgroup { layout, rel }
    }

    /// Whether it lives in the unified (v2) hierarchy.
    pub fn is_v2(&self) -> bool {
        self.layout.is_v2()
    }

    /// The cgroup of container `id`, `berth/<id>` under this host's hierarchies (reads the mount table).
    pub fn for_container(id: &str) -> Result<Cgroup> {
        Ok(Cgroup::new(Layout::detect()?, Path::new("berth").join(id)))
    }

    /// mkdir -p in each used controller (skipping v1 controllers that are not mounted), with what the kernel needs
    /// before a task can join (v1 cpuset inherited from the parent, v2 controllers enabled in the ancestors), Docker's
    /// v1 device rules, and the limits.
    pub fn create(&self, res: &Resources) -> Result<()> {
        match &self.layout {
            Layout::V2 { root } => self.create_v2(root)?,
            Layout::V1 { controllers } => self.create_v1(controllers)?,
        }
        self.apply(res)
    }

    fn create_v2(&self, root: &Path) -> Result<()> {
        let mut dir = root.to_path_buf();
        for part in self.rel.components() {
            enable_v2_controllers(&dir);
            dir.push(part);
            mkdir(&dir)?;
        }
        Ok(())
    }

    fn create_v1(&self, controllers: &BTreeMap<String, PathBuf>) -> Result<()> {
        for dir in self.used_dirs() {
            fs::create_dir_all(&dir).map_err(RuntimeError::io("create cgroup", &dir))?;
        }
        if let Some(mount) = controllers.get("cpuset") {
            // A new cpuset cgroup starts with empty cpus and mems, and no task can join it until they are set.
            let mut parent = mount.clone();
            for part in self.rel.components() {
                let dir = parent.join(part);
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let own = read_opt(&dir.join(file)).unwrap_or_default();
                    if own.trim().is_empty() {
                        let inherited = read(&parent.join(file))?;
                        write(&dir.join(file), inherited.trim())?;
                    }
                }
                parent = dir;
            }
        }
        if let Some(dir) = self.dir("devices") {
            write(&dir.join("devices.deny"), "a")?;
            for rule in DEFAULT_DEVICE_RULES {
                write(&dir.join("devices.allow"), rule)?;
            }
        }
        Ok(())
    }

    /// Writes the limits that are set (`None` leaves a limit as it is); `create` calls it, `update` calls it again.
    /// Docker's conversions: `cpus` becomes a CFS quota per 100 ms period (0 removes it), `cpu_shares` 0 means
    /// unset, a pids limit of 0 or less means `max`, and with a memory limit swap may add as much again.
    pub fn apply(&self, res: &Resources) -> Result<()> {
        match &self.layout {
            Layout::V2 { root } => apply_v2(&root.join(&self.rel), res),
            Layout::V1 { .. } => self.apply_v1(res),
        }
    }

    fn apply_v1(&self, res: &Resources) -> Result<()> {
        if let Some(limit) = res.memory {
            let dir = self.required_dir("memory", "a memory limit")?;
            let limit_file = dir.join("memory.limit_in_bytes");
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                let total = limit.saturating_mul(2).to_string();
                // The kernel keeps memory.limit_in_bytes <= memory.memsw.limit_in_bytes: raise memsw first.
                if read_u64(&memsw).is_some_and(|current| limit > current) {
                    write(&memsw, &total)?;
                    write(&limit_file, &limit.to_string())?;
                } else {
                    write(&limit_file, &limit.to_string())?;
                    write(&memsw, &total)?;
                }
            } else {
                write(&limit_file, &limit.to_string())?;
            }
        }
        if let Some(reservation) = res.memory_reservation {
            let dir = self.required_dir("memory", "a memory reservation")?;
            write(&dir.join("memory.soft_limit_in_bytes"), &reservation.to_string())?;
        }
        if let Some(cpus) = res.cpus {
            let dir = self.required_dir("cpu", "a cpu quota")?;
            let quota = cfs_quota(cpus).map_or_else(|| "-1".to_string(), |q| q.to_string());
            write(&dir.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
            write(&dir.join("cpu.cfs_quota_us"), &quota)?;
        }
        if let Some(shares) = res.cpu_shares.filter(|s| *s > 0) {
            let dir = self.required_dir("cpu", "cpu shares")?;
            write(&dir.join("cpu.shares"), &shares.to_string())?;
        }
        if let Some(limit) = res.pids_limit {
            let dir = self.required_dir("pids", "a pids limit")?;
            write(&dir.join("pids.max"), &pids_max(limit))?;
        }
        Ok(())
    }

    /// Lets a privileged container use every device (v1 `devices.allow a`). Nothing to do on v2, which does not
    /// filter devices here.
    pub fn allow_all_devices(&self) -> Result<()> {
        match (&self.layout, self.dir("devices")) {
            (Layout::V1 { .. }, Some(dir)) => write(&dir.join("devices.allow"), "a"),
            _ => Ok(()),
        }
    }

    /// Moves a whole process (pid in the caller's pid namespace; 0 = the calling process) into the cgroup in every
    /// hierarchy. A fresh child should rather use [`Cgroup::join_self`] or [`Cgroup::v2_dir`], which do not wait.
    pub fn add_process(&self, pid: i32) -> Result<()> {
        let pid = pid.to_string();
        for dir in self.used_dirs() {
            write(&dir.join("cgroup.procs"), &pid)?;
        }
        Ok(())
    }

    /// Moves the calling process, which must have a single thread (a freshly forked child), into the cgroup in
    /// every hierarchy.
    ///
    /// On v1 it moves its thread through `tasks`. Moving a whole process (`cgroup.procs`) takes the kernel's global
    /// threadgroup lock, and the first taker after a quiet period waits for an RCU grace period: 5–15 ms on this
    /// 2-core VM, more than everything else in starting a container. A thread moving itself needs no such lock
    /// (measured on Linux 6.18: 0.14 ms for ten hierarchies). On v2, where only whole processes move, prefer
    /// [`Cgroup::v2_dir`] with `CLONE_INTO_CGROUP`; this writes `cgroup.procs` and pays the wait.
    pub fn join_self(&self) -> Result<()> {
        let file = self.self_join_file();
        for dir in self.used_dirs() {
            write(&dir.join(file), "0")?;
        }
        Ok(())
    }

    /// The directories of the hierarchies it uses, opened now (close-on-exec), for a later
    /// [`Cgroup::join_self_at`] from a process whose view of the host's file system is gone by then (after
    /// `pivot_root`). These are the host's cgroup file systems: close them before running anything else.
    pub fn open_hierarchies(&self) -> Result<Vec<OwnedFd>> {
        self.hierarchy_dirs()
            .into_iter()
            .map(|dir| {
                nix::fcntl::open(
                    &dir,
                    nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| RuntimeError::Cgroup {
                    path: dir.clone(),
                    message: format!("open: {e}"),
                })
            })
            .collect()
    }

    /// [`Cgroup::join_self`] through the directories of [`Cgroup::open_hierarchies`].
    pub fn join_self_at(&self, hierarchies: &[OwnedFd]) -> Result<()> {
        let file = self.rel.join(self.self_join_file());
        for dir in hierarchies {
            let fd = nix::fcntl::openat(
                dir,
                &file,
                nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .and_then(|fd| nix::unistd::write(&fd, b"0"));
            fd.map_err(|e| RuntimeError::Cgroup {
                path: file.clone(),
                message: format!("write \"0\": {e}"),
            })?;
        }
        Ok(())
    }

    /// On v2, the cgroup's directory, opened for `clone3(CLONE_INTO_CGROUP)`: a child created there never
    /// migrates. `None` on v1.
    pub fn v2_dir(&self) -> Result<Option<fs::File>> {
        let Layout::V2 { root } = &self.layout else {
            return Ok(None);
        };
        let dir = root.join(&self.rel);
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir)
            .map_err(RuntimeError::io("open cgroup", &dir))?;
        Ok(Some(file))
    }

    /// Freezes every process in it and waits until the kernel reports the cgroup frozen (v1 `freezer.state`
    /// `FROZEN`, v2 `frozen 1` in `cgroup.events`). On timeout it thaws again and fails.
    pub fn freeze(&self) -> Result<()> {
        match &self.layout {
            Layout::V2 { root } => {
                let dir = root.join(&self.rel);
                write(&dir.join("cgroup.freeze"), "1")?;
                if wait_for(FREEZE_TIMEOUT, || self.is_frozen())? {
                    return Ok(());
                }
                let _ = write(&dir.join("cgroup.freeze"), "0");
                Err(RuntimeError::Cgroup {
                    path: dir.join("cgroup.events"),
                    message: format!("not frozen after {FREEZE_TIMEOUT:?}; a process may be stuck in the kernel"),
                })
            }
            Layout::V1 { .. } => {
                let state = self.required_dir("freezer", "freezing")?.join("freezer.state");
                let deadline = Instant::now() + FREEZE_TIMEOUT;
                loop {
                    write(&state, "FROZEN")?;
                    // Freezing can stall behind a task in the middle of fork or exit; like runc, thaw and try again.
                    let attempt = Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now()));
                    if wait_for(attempt, || Ok(read(&state)?.trim() == "FROZEN"))? {
                        return Ok(());
                    }
                    write(&state, "THAWED")?;
                    if Instant::now() >= deadline {
                        return Err(RuntimeError::Cgroup {
                            path: state,
                            message: format!(
                                "not frozen after {FREEZE_TIMEOUT:?}; a process may be stuck in the kernel"
                            ),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Thaws it and waits until the kernel reports it thawed.
    pub fn thaw(&self) -> Result<()> {
        let (file, value) = match &self.layout {
            Layout::V2 { root } => (root.join(&self.rel).join("cgroup.freeze"), "0"),
            Layout::V1 { .. } => (self.required_dir("freezer", "thawing")?.join("freezer.state"), "THAWED"),
        };
        write(&file, value)?;
        if wait_for(FREEZE_TIMEOUT, || Ok(!self.is_frozen()?))? {
            return Ok(());
        }
        Err(RuntimeError::Cgroup {
            path: file,
            message: format!("still frozen {FREEZE_TIMEOUT:?} after writing {value:?}"),
        })
    }

    /// Whether the kernel reports it frozen; `false` on v1 without a freezer.
    pub fn is_frozen(&self) -> Result<bool> {
        match &self.layout {
            Layout::V2 { root } => {
                let events = read(&root.join(&self.rel).join("cgroup.events"))?;
                Ok(keyed(&events, "frozen") == Some(1))
            }
            Layout::V1 { .. } => match self.dir("freezer") {
                Some(dir) => Ok(read(&dir.join("freezer.state"))?.trim() == "FROZEN"),
                None => Ok(false),
            },
        }
    }

    /// Pids (in the caller's pid namespace) of the processes in it, from `cgroup.procs` (v1: of the pids or memory
    /// controller).
    pub fn pids(&self) -> Result<Vec<i32>> {
        let procs = self.procs_dir()?.join("cgroup.procs");
        let text = read(&procs)?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                l.trim().parse().map_err(|_| RuntimeError::Cgroup {
                    path: procs.clone(),
                    message: format!("unexpected line {l:?}"),
                })
            })
            .collect()
    }

    fn procs_dir(&self) -> Result<PathBuf> {
        let dir = match &self.layout {
            Layout::V2 { root } => Some(root.join(&self.rel)),
            Layout::V1 { .. } => ["pids", "memory", "freezer"]
                .iter()
                .find_map(|c| self.dir(c))
                .or_else(|| self.used_dirs().into_iter().next()),
        };
        dir.ok_or_else(|| RuntimeError::Cgroup {
            path: self.rel.clone(),
            message: "no cgroup controller is mounted".into(),
        })
    }

    /// Memory, CPU and task counts. Fails when the cgroup does not exist; a controller that is not available counts
    /// as zero.
    pub fn stats(&self) -> Result<CgroupStats> {
        let procs_dir = self.procs_dir()?;
        if !procs_dir.is_dir() {
            return Err(RuntimeError::Cgroup {
                path: procs_dir,
                message: "does not exist".into(),
            });
        }
        let mut stats = CgroupStats::default();
        match &self.layout {
            Layout::V2 { root } => {
                let dir = root.join(&self.rel);
                stats.memory_usage = read_u64(&dir.join("memory.current")).unwrap_or(0);
                stats.memory_limit = read_u64(&dir.join("memory.max"));
                let cpu = read_opt(&dir.join("cpu.stat")).unwrap_or_default();
                stats.cpu_usage_ns = keyed(&cpu, "usage_usec").unwrap_or(0).saturating_mul(1000);
                stats.pids = read_u64(&dir.join("pids.current")).unwrap_or(0);
            }
            Layout::V1 { .. } => {
                if let Some(dir) = self.dir("memory") {
                    stats.memory_usage = read_u64(&dir.join("memory.usage_in_bytes")).unwrap_or(0);
                    stats.memory_limit = read_u64(&dir.join("memory.limit_in_bytes")).filter(|l| *l < V1_UNLIMITED);
                }
                if let Some(dir) = self.dir("cpuacct") {
                    stats.cpu_usage_ns = read_u64(&dir.join("cpuacct.usage")).unwrap_or(0);
                }
                if let Some(dir) = self.dir("pids") {
                    stats.pids = read_u64(&dir.join("pids.current")).unwrap_or(0);
                }
            }
        }
        if stats.pids == 0 {
            // No pids controller: count the processes.
            stats.pids = self.pids().map(|p| p.len() as u64).unwrap_or(0);
        }
        Ok(stats)
    }

    /// Whether the kernel's OOM killer killed a process in it: the `oom_kill` counter of v1 `memory.oom_control`
    /// (on kernels without it, `under_oom 1`) or v2 `memory.events`. `false` without a memory controller.
    pub fn oom_killed(&self) -> Result<bool> {
        let Some(dir) = self.dir("memory") else {
            return Ok(false);
        };
        if self.layout.is_v2() {
            let events = read_opt(&dir.join("memory.events")).unwrap_or_default();
            return Ok(keyed(&events, "oom_kill").is_some_and(|n| n > 0));
        }
        let Some(control) = read_opt(&dir.join("memory.oom_control")) else {
            return Ok(false);
        };
        Ok(match keyed(&control, "oom_kill") {
            Some(kills) => kills > 0,
            None => keyed(&control, "under_oom") == Some(1),
        })
    }

    /// SIGKILL every process in it (v2 `cgroup.kill` when present; else kill each process in `cgroup.procs`,
    /// freezing first when a freezer is available so none can fork in between), then wait up to a second for them
    /// to leave. A cgroup that does not exist has nothing to kill.
    pub fn kill_all(&self) -> Result<()> {
        let procs_dir = self.procs_dir()?;
        if !procs_dir.is_dir() || self.pids()?.is_empty() {
            return Ok(());
        }
        let kill_file = procs_dir.join("cgroup.kill");
        let mut errors = Vec::new();
        if self.layout.is_v2() && kill_file.exists() {
            write(&kill_file, "1")?;
        } else {
            errors = self.signal_each(Signal::SIGKILL)?;
        }
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut resend = Instant::now() + Duration::from_millis(100);
        loop {
            let left = self.pids()?;
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                errors.insert(
                    0,
                    format!("processes {left:?} still there {SETTLE_TIMEOUT:?} after SIGKILL"),
                );
                return Err(RuntimeError::Cgroup {
                    path: procs_dir.join("cgroup.procs"),
                    message: errors.join("; "),
                });
            }
            if Instant::now() >= resend && !kill_file.exists() {
                // Without a freezer a process may have forked after we read cgroup.procs.
                errors = self.signal_each(Signal::SIGKILL)?;
                resend = Instant::now() + Duration::from_millis(100);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sends `signal` to each process, frozen meanwhile when possible; returns the failures other than "gone".
    fn signal_each(&self, signal: Signal) -> Result<Vec<String>> {
        let freezable = match &self.layout {
            Layout::V2 { root } => root.join(&self.rel).join("cgroup.freeze").exists(),
            Layout::V1 { .. } => self.dir("freezer").is_some_and(|d| d.join("freezer.state").exists()),
        };
        let frozen = freezable && self.freeze().is_ok();
        let mut errors = Vec::new();
        for pid in self.pids()? {
            match kill(Pid::from_raw(pid), signal) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => errors.push(format!("kill {pid} with {signal}: {e}")),
            }
        }
        if frozen {
            self.thaw()?;
        }
        Ok(errors)
    }

    /// rmdir in every controller, deepest first (sub-cgroups made inside the container go before it). A missing
    /// directory is fine; a busy one (processes still exiting) is retried for up to a second. Every directory that
    /// stays is reported, with the processes still in it.
    pub fn delete(&self) -> Result<()> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut failures: Vec<(PathBuf, String)> = Vec::new();
        for dir in self.used_dirs() {
            remove_tree(&dir, deadline, &mut failures);
        }
        let Some((first, _)) = failures.first() else {
            return Ok(());
        };
        let path = first.clone();
        let message = failures
            .iter()
            .map(|(dir, why)| format!("cannot remove {}: {why}", dir.display()))
            .collect::<Vec<_>>()
            .join("; ");
        Err(RuntimeError::Cgroup { path, message })
    }

    /// Mounts a container with a cgroup namespace should see at /sys/fs/cgroup: list of (fstype "cgroup" or
    /// "cgroup2", data/options string e.g. "memory" or "cpu,cpuacct" for co-mounted, target relative path like
    /// "memory" or "" for v2). Only hierarchies the container joined are listed (the others would show the host's
    /// tree); the caller mounts them read-only, like Docker.
    pub fn container_mounts(&self) -> Vec<(String, String, PathBuf)> {
        match &self.layout {
            Layout::V2 { .. } => vec![("cgroup2".to_string(), String::new(), PathBuf::new())],
            Layout::V1 { controllers } => {
                let mounts: BTreeSet<&PathBuf> = V1_CONTROLLERS.iter().filter_map(|c| controllers.get(*c)).collect();
                let mut out: Vec<(String, String, PathBuf)> = mounts
                    .into_iter()
                    .map(|mount| {
                        let data: Vec<&str> = controllers
                            .iter()
                            .filter(|(_, m)| *m == mount)
                            .map(|(c, _)| c.as_str())
                            .collect();
                        let target = mount.file_name().map(PathBuf::from).unwrap_or_default();
                        ("cgroup".to_string(), data.join(","), target)
                    })
                    .collect();
                out.sort_by(|a, b| a.2.cmp(&b.2));
                out
            }
        }
    }

    /// Absolute host directories of this cgroup (for leak checks in tests).
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut dirs = self.used_dirs();
        dirs.sort();
        dirs
    }

    /// The cgroup's directory in a controller's hierarchy; `None` when that v1 controller is not mounted.
    fn dir(&self, controller: &str) -> Option<PathBuf> {
        match &self.layout {
            Layout::V2 { root } => Some(root.join(&self.rel)),
            Layout::V1 { controllers } => controllers.get(controller).map(|mount| mount.join(&self.rel)),
        }
    }

    /// Like `dir`, but a missing controller is an error saying what could not be done.
    fn required_dir(&self, controller: &str, what: &str) -> Result<PathBuf> {
        self.dir(controller).ok_or_else(|| RuntimeError::Cgroup {
            path: self.rel.clone(),
            message: format!("the {controller} cgroup controller is not mounted, so {what} is not possible"),
        })
    }

    /// The mount directory of each hierarchy used, in the order of `used_dirs`.
    fn hierarchy_dirs(&self) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V2 { root } => vec![root.clone()],
            Layout::V1 { controllers } => {
                let mut dirs: Vec<PathBuf> = Vec::new();
                for dir in V1_CONTROLLERS.iter().filter_map(|c| controllers.get(*c)) {
                    if !dirs.contains(dir) {
                        dirs.push(dir.clone());
                    }
                }
                dirs
            }
        }
    }

    /// One directory per hierarchy used, co-mounted controllers counted once, in `V1_CONTROLLERS` order.
    fn used_dirs(&self) -> Vec<PathBuf> {
        self.hierarchy_dirs()
            .into_iter()
            .map(|dir| dir.join(&self.rel))
            .collect()
    }

    /// The file a process writes `0` to to move itself in: v1 moves the calling thread (see `join_self`), v2
    /// only whole processes.
    fn self_join_file(&self) -> &'static str {
        if self.layout.is_v2() { "cgroup.procs" } else { "tasks" }
    }
}

fn apply_v2(dir: &Path, res: &Resources) -> Result<()> {
    if let Some(limit) = res.memory {
        write(&dir.join("memory.max"), &limit.to_string())?;
        // Docker: without --memory-swap, swap may add as much again as the memory limit.
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            write(&swap, &limit.to_string())?;
        }
    }
    if let Some(reservation) = res.memory_reservation {
        write(&dir.join("memory.low"), &reservation.to_string())?;
    }
    if let Some(cpus) = res.cpus {
        let quota = cfs_quota(cpus).map_or_else(|| "max".to_string(), |q| q.to_string());
        write(&dir.join("cpu.max"), &format!("{quota} {CFS_PERIOD_US}"))?;
    }
    if let Some(shares) = res.cpu_shares.filter(|s| *s > 0) {
        write(&dir.join("cpu.weight"), &shares_to_weight(shares).to_string())?;
    }
    if let Some(limit) = res.pids_limit {
        write(&dir.join("pids.max"), &pids_max(limit))?;
    }
    Ok(())
}

/// The CFS quota in microseconds per `CFS_PERIOD_US` for a number of CPUs; `None` (no quota) for 0 or less.
fn cfs_quota(cpus: f64) -> Option<u64> {
    // The cast saturates; the kernel rejects quotas it cannot honour, and that error names the value.
    (cpus > 0.0).then(|| (cpus * CFS_PERIOD_US as f64).round() as u64)
}

/// v1 cpu shares (2..=262144) to a v2 cpu weight (1..=10000), with the formula of runc and crun.
fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// The `pids.max` value: a positive limit, or `max` for 0 and -1 (Docker's "unlimited").
fn pids_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_string()
    }
}

/// Enables our v2 controllers in `dir`'s `cgroup.subtree_control`, those it has and has not enabled yet. A failure
/// is left for the limit writes to report: their files are then missing.
fn enable_v2_controllers(dir: &Path) {
    let Some(available) = read_opt(&dir.join("cgroup.controllers")) else {
        return;
    };
    let enabled = read_opt(&dir.join("cgroup.subtree_control")).unwrap_or_default();
    for controller in V2_CONTROLLERS {
        let has = |list: &str| list.split_whitespace().any(|c| c == *controller);
        if has(&available)
            && !has(&enabled)
            && let Err(e) = write(&dir.join("cgroup.subtree_control"), &format!("+{controller}"))
        {
            tracing::debug!(error = %e, "cannot enable a cgroup controller");
        }
    }
}

fn mkdir(dir: &Path) -> Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(RuntimeError::io("create cgroup", dir)(e)),
        _ => Ok(()),
    }
}

/// Removes `dir` after its sub-directories, collecting what cannot be removed.
fn remove_tree(dir: &Path, deadline: Instant, failures: &mut Vec<(PathBuf, String)>) {
    // Most cgroups have no children: one rmdir does it.
    match fs::remove_dir(dir) {
        Ok(()) => return,
        Err(e) if e.kind() == ErrorKind::NotFound => return,
        Err(_) => {}
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return,
        Err(e) => return failures.push((dir.to_path_buf(), format!("read: {e}"))),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path(), deadline, failures);
        }
    }
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == ErrorKind::NotFound => return,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                let procs = read_opt(&dir.join("cgroup.procs")).unwrap_or_default();
                let procs: Vec<&str> = procs.split_whitespace().collect();
                let why = if procs.is_empty() {
                    e.to_string()
                } else {
                    format!("{e} (processes {} are still in it)", procs.join(" "))
                };
                return failures.push((dir.to_path_buf(), why));
            }
        }
    }
}

/// Polls `done` every millisecond until it is true (then `true`) or `timeout` passes (then `false`).
fn wait_for(timeout: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if done()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Writes one value to a control file. The error names the file and the value.
fn write(path: &Path, value: &str) -> Result<()> {
    #[cfg(test)]
    tests::WRITES.with_borrow_mut(|w| w.push((path.to_path_buf(), value.to_string())));
    // `create` only matters for the plain directories tests use: cgroupfs has every control file already.
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    written.map_err(|e| {
        let hint = if path.exists() {
            ""
        } else if path.parent().is_some_and(Path::is_dir) {
            " (no such control file: is its controller enabled for this cgroup?)"
        } else {
            " (the cgroup does not exist)"
        };
        RuntimeError::Cgroup {
            path: path.to_path_buf(),
            message: format!("write {value:?}: {e}{hint}"),
        }
    })
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| RuntimeError::Cgroup {
        path: path.to_path_buf(),
        message: format!("read: {e}"),
    })
}

/// The file's contents, `None` when it is missing or unreadable.
fn read_opt(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// A number file; `None` when missing or not a number (`max`).
fn read_u64(path: &Path) -> Option<u64> {
    read_opt(path)?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`key value` lines, as `cgroup.events` or `memory.oom_control`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.trim().split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::io::Write as _;
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    thread_local! {
        /// Every control-file write made by this test's thread, in order.
        pub(super) static WRITES: RefCell<Vec<(PathBuf, String)>> = const { RefCell::new(Vec::new()) };
    }

    /// The writes since the last call, as `path/below/base=value`.
    fn take_writes(base: &Path) -> Vec<String> {
        WRITES
            .with_borrow_mut(std::mem::take)
            .into_iter()
            .map(|(path, value)| {
                let rel = path.strip_prefix(base).unwrap_or(&path);
                format!("{}={value}", rel.display())
            })
            .collect()
    }

    /// A temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("berth-cgroup-test-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        fn file(&self, rel: &str, text: &str) {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().expect("a file has a parent")).expect("create dirs");
            fs::write(path, text).expect("write fixture");
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A fake v2 root whose controllers are all available.
    fn fake_v2() -> (TempDir, Cgroup) {
        let tmp = TempDir::new();
        tmp.file("cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
        tmp.file("cgroup.subtree_control", "memory\n");
        tmp.file("berth/cgroup.controllers", "cpu io memory pids\n");
        let cg = Cgroup::new(Layout::v2_at(tmp.0.clone()), "berth/c1");
        (tmp, cg)
    }

    /// Fake v1 hierarchies like a Docker host's: cpu and cpuacct co-mounted, the rest one each, hugetlb unused.
    fn fake_v1() -> (TempDir, Cgroup) {
        let tmp = TempDir::new();
        let mut controllers = BTreeMap::new();
        for (c, dir) in [
            ("blkio", "blkio"),
            ("cpu", "cpu,cpuacct"),
            ("cpuacct", "cpu,cpuacct"),
            ("cpuset", "cpuset"),
            ("devices", "devices"),
            ("freezer", "freezer"),
            ("hugetlb", "hugetlb"),
            ("memory", "memory"),
            ("pids", "pids"),
            ("name=systemd", "systemd"),
        ] {
            fs::create_dir_all(tmp.0.join(dir)).expect("create controller dir");
            controllers.insert(c.to_string(), tmp.0.join(dir));
        }
        tmp.file("cpuset/cpuset.cpus", "0-3\n");
        tmp.file("cpuset/cpuset.mems", "0\n");
        let cg = Cgroup::new(Layout::v1_at(controllers), "berth/c1");
        (tmp, cg)
    }

    fn limits() -> Resources {
        Resources {
            memory: Some(64 << 20),
            memory_reservation: Some(32 << 20),
            cpus: Some(1.5),
            cpu_shares: Some(512),
            pids_limit: Some(20),
        }
    }

    const HYBRID: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
43 31 0:39 / /sys/fs/cgroup/hugetlb rw,relatime - cgroup cgroup rw,hugetlb
";

    const PURE_V2: &str = "\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw,discard
25 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
26 25 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:3 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
27 25 0:6 / /sys/kernel/debug rw,nosuid,nodev,noexec,relatime shared:4 - debugfs debugfs rw
";

    #[test]
    fn mountinfo_of_a_hybrid_host_is_v1_with_every_hierarchy() {
        let layout = Layout::from_mountinfo(HYBRID).expect("parse");
        let Layout::V1 { controllers } = &layout else {
            panic!("expected v1, got {layout:?}");
        };
        let got: Vec<String> = controllers
            .iter()
            .map(|(c, d)| format!("{c}={}", d.display()))
            .collect();
        assert_eq!(
            got,
            [
                "blkio=/sys/fs/cgroup/blkio",
                "cpu=/sys/fs/cgroup/cpu",
                "cpuacct=/sys/fs/cgroup/cpuacct",
                "cpuset=/sys/fs/cgroup/cpuset",
                "devices=/sys/fs/cgroup/devices",
                "freezer=/sys/fs/cgroup/freezer",
                "hugetlb=/sys/fs/cgroup/hugetlb",
                "memory=/sys/fs/cgroup/memory",
                "name=systemd=/sys/fs/cgroup/systemd",
                "pids=/sys/fs/cgroup/pids",
            ]
        );
        assert!(!layout.is_v2());
    }

    #[test]
    fn mountinfo_of_a_pure_v2_host_is_v2() {
        let layout = Layout::from_mountinfo(PURE_V2).expect("parse");
        assert_eq!(layout, Layout::v2_at("/sys/fs/cgroup".into()));
        assert!(layout.is_v2());
    }

    #[test]
    fn mountinfo_with_only_systemd_on_v1_uses_the_unified_mount() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";
        let layout = Layout::from_mountinfo(text).expect("parse");
        assert_eq!(layout, Layout::v2_at("/sys/fs/cgroup/unified".into()));
    }

    #[test]
    fn mountinfo_co_mounts_escapes_and_bind_mounts() {
        let text = "\
99 1 0:50 /docker/abc /mnt/cpu\\040bind rw - cgroup cgroup rw,cpu,cpuacct
32 31 0:50 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
33 31 0:51 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
34 1 0:51 /docker /mnt/mem\\040ory rw - cgroup cgroup rw,memory
";
        let Layout::V1 { controllers } = Layout::from_mountinfo(text).expect("parse") else {
            panic!("expected v1");
        };
        assert_eq!(controllers["cpu"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(controllers["cpuacct"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(controllers["memory"], Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(unescape_mountinfo("/mnt/a\\040b\\134c\\0"), "/mnt/a b\\c\\0");
    }

    #[test]
    fn mountinfo_without_cgroups_is_an_error() {
        let err = Layout::from_mountinfo("22 1 259:1 / / rw - ext4 /dev/root rw\n").expect_err("no cgroups");
        assert!(err.to_string().contains("no cgroup hierarchy is mounted"), "{err}");
    }

    #[test]
    fn new_keeps_only_normal_components() {
        let cg = Cgroup::new(Layout::v2_at("/cg".into()), "/berth/../x/./y");
        assert_eq!(cg.paths(), [PathBuf::from("/cg/berth/x/y")]);
    }

    #[test]
    fn v2_create_enables_controllers_in_ancestors_and_writes_docker_limits() {
        let (tmp, cg) = fake_v2();
        // The kernel provides memory.swap.max only with swap accounting.
        tmp.file("berth/c1/memory.swap.max", "max\n");
        take_writes(&tmp.0);
        cg.create(&limits()).expect("create");
        assert_eq!(
            take_writes(&tmp.0),
            [
                "cgroup.subtree_control=+cpu",
                "cgroup.subtree_control=+io",
                "cgroup.subtree_control=+pids",
                "berth/cgroup.subtree_control=+cpu",
                "berth/cgroup.subtree_control=+io",
                "berth/cgroup.subtree_control=+memory",
                "berth/cgroup.subtree_control=+pids",
                "berth/c1/memory.max=67108864",
                "berth/c1/memory.swap.max=67108864",
                "berth/c1/memory.low=33554432",
                "berth/c1/cpu.max=150000 100000",
                "berth/c1/cpu.weight=20",
                "berth/c1/pids.max=20",
            ]
        );
        assert!(tmp.0.join("berth/c1").is_dir());
        assert!(
            !tmp.0.join("berth/c1/cgroup.subtree_control").exists(),
            "the leaf keeps no controllers"
        );
    }

    #[test]
    fn v2_apply_without_swap_accounting_and_with_unlimited_values() {
        let (tmp, cg) = fake_v2();
        fs::create_dir_all(tmp.0.join("berth/c1")).expect("mkdir");
        take_writes(&tmp.0);
        let res = Resources {
            memory: Some(1 << 30),
            cpus: Some(0.0),
            cpu_shares: Some(0),
            pids_limit: Some(-1),
            ..Resources::default()
        };
        cg.apply(&res).expect("apply");
        assert_eq!(
            take_writes(&tmp.0),
            [
                "berth/c1/memory.max=1073741824",
                "berth/c1/cpu.max=max 100000",
                "berth/c1/pids.max=max"
            ]
        );
        cg.apply(&Resources::default()).expect("apply nothing");
        assert!(take_writes(&tmp.0).is_empty());
    }

    #[test]
    fn v1_create_makes_each_hierarchy_once_inherits_cpuset_and_writes_docker_limits() {
        let (tmp, cg) = fake_v1();
        // Present only with swap accounting; unlimited at first.
        tmp.file("memory/berth/c1/memory.memsw.limit_in_bytes", "9223372036854771712\n");
        take_writes(&tmp.0);
        cg.create(&limits()).expect("create");
        let mut expected = vec![
            "cpuset/berth/cpuset.cpus=0-3".to_string(),
            "cpuset/berth/cpuset.mems=0".into(),
            "cpuset/berth/c1/cpuset.cpus=0-3".into(),
            "cpuset/berth/c1/cpuset.mems=0".into(),
            "devices/berth/c1/devices.deny=a".into(),
        ];
        expected.extend(
            DEFAULT_DEVICE_RULES
                .iter()
                .map(|r| format!("devices/berth/c1/devices.allow={r}")),
        );
        expected.extend(
            [
                "memory/berth/c1/memory.limit_in_bytes=67108864",
                "memory/berth/c1/memory.memsw.limit_in_bytes=134217728",
                "memory/berth/c1/memory.soft_limit_in_bytes=33554432",
                "cpu,cpuacct/berth/c1/cpu.cfs_period_us=100000",
                "cpu,cpuacct/berth/c1/cpu.cfs_quota_us=150000",
                "cpu,cpuacct/berth/c1/cpu.shares=512",
                "pids/berth/c1/pids.max=20",
            ]
            .map(String::from),
        );
        assert_eq!(take_writes(&tmp.0), expected);
        let made: Vec<PathBuf> = cg
            .paths()
            .iter()
            .map(|p| p.strip_prefix(&tmp.0).expect("below").into())
            .collect();
        let expected_dirs = [
            "blkio/berth/c1",
            "cpu,cpuacct/berth/c1",
            "cpuset/berth/c1",
            "devices/berth/c1",
            "freezer/berth/c1",
            "memory/berth/c1",
            "pids/berth/c1",
        ];
        assert_eq!(made, expected_dirs.map(PathBuf::from));
        assert!(cg.paths().iter().all(|p| p.is_dir()));
        assert!(!tmp.0.join("hugetlb/berth").exists() && !tmp.0.join("systemd/berth").exists());
    }

    #[test]
    fn v1_cpuset_already_set_is_left_alone() {
        let (tmp, cg) = fake_v1();
        tmp.file("cpuset/berth/cpuset.cpus", "1\n");
        tmp.file("cpuset/berth/cpuset.mems", "0\n");
        tmp.file("cpuset/berth/c1/cpuset.cpus", "\n");
        take_writes(&tmp.0);
        cg.create(&Resources::default()).expect("create");
        let writes: Vec<String> = take_writes(&tmp.0)
            .into_iter()
            .filter(|w| w.starts_with("cpuset"))
            .collect();
        assert_eq!(
            writes,
            ["cpuset/berth/c1/cpuset.cpus=1", "cpuset/berth/c1/cpuset.mems=0"]
        );
    }

    #[test]
    fn v1_raising_memory_above_memsw_writes_memsw_first() {
        let (tmp, cg) = fake_v1();
        tmp.file("memory/berth/c1/memory.memsw.limit_in_bytes", "134217728\n");
        take_writes(&tmp.0);
        cg.apply(&Resources {
            memory: Some(256 << 20),
            ..Resources::default()
        })
        .expect("apply");
        assert_eq!(
            take_writes(&tmp.0),
            [
                "memory/berth/c1/memory.memsw.limit_in_bytes=536870912",
                "memory/berth/c1/memory.limit_in_bytes=268435456",
            ]
        );
    }

    #[test]
    fn v1_unlimited_values_and_missing_controllers() {
        let (tmp, cg) = fake_v1();
        cg.create(&Resources::default()).expect("create");
        take_writes(&tmp.0);
        cg.apply(&Resources {
            cpus: Some(0.0),
            pids_limit: Some(0),
            ..Resources::default()
        })
        .expect("apply");
        assert_eq!(
            take_writes(&tmp.0),
            [
                "cpu,cpuacct/berth/c1/cpu.cfs_period_us=100000",
                "cpu,cpuacct/berth/c1/cpu.cfs_quota_us=-1",
                "pids/berth/c1/pids.max=max",
            ]
        );
        let only_cpu = Layout::v1_at(BTreeMap::from([("cpu".to_string(), tmp.0.join("cpu"))]));
        let err = Cgroup::new(only_cpu, "x")
            .apply(&Resources {
                pids_limit: Some(5),
                ..Resources::default()
            })
            .expect_err("no pids controller");
        assert!(
            err.to_string().contains("the pids cgroup controller is not mounted"),
            "{err}"
        );
    }

    #[test]
    fn failed_write_names_the_file_and_the_value() {
        let tmp = TempDir::new();
        // No such cgroup directory.
        let cg = Cgroup::new(Layout::v2_at(tmp.0.clone()), "gone");
        let err = cg
            .apply(&Resources {
                pids_limit: Some(7),
                ..Resources::default()
            })
            .expect_err("missing directory");
        let text = err.to_string();
        assert!(
            text.contains(&format!("{}", tmp.0.join("gone/pids.max").display())),
            "{text}"
        );
        assert!(text.contains("write \"7\""), "{text}");
        assert!(text.contains("(the cgroup does not exist)"), "{text}");
    }

    #[test]
    fn shares_convert_to_weight_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(shares_to_weight(1 << 40), 10_000);
        assert_eq!(cfs_quota(0.5), Some(50_000));
        assert_eq!(cfs_quota(0.015), Some(1_500));
        assert_eq!(cfs_quota(-1.0), None);
        assert_eq!(cfs_quota(f64::NAN), None);
    }

    #[test]
    fn allow_all_devices_only_on_v1() {
        let (tmp, cg) = fake_v1();
        take_writes(&tmp.0);
        fs::create_dir_all(tmp.0.join("devices/berth/c1")).expect("mkdir");
        cg.allow_all_devices().expect("allow");
        assert_eq!(take_writes(&tmp.0), ["devices/berth/c1/devices.allow=a"]);
        let (tmp, cg) = fake_v2();
        cg.allow_all_devices().expect("allow");
        assert!(take_writes(&tmp.0).is_empty());
    }

    #[test]
    fn add_process_writes_once_per_hierarchy() {
        let (tmp, cg) = fake_v1();
        cg.create(&Resources::default()).expect("create");
        take_writes(&tmp.0);
        cg.add_process(4242).expect("add");
        let expected = [
            "memory/berth/c1/cgroup.procs=4242",
            "cpu,cpuacct/berth/c1/cgroup.procs=4242",
            "pids/berth/c1/cgroup.procs=4242",
            "freezer/berth/c1/cgroup.procs=4242",
            "devices/berth/c1/cgroup.procs=4242",
            "cpuset/berth/c1/cgroup.procs=4242",
            "blkio/berth/c1/cgroup.procs=4242",
        ];
        assert_eq!(take_writes(&tmp.0), expected);
        let (tmp, cg) = fake_v2();
        cg.create(&Resources::default()).expect("create");
        take_writes(&tmp.0);
        cg.add_process(0).expect("add");
        assert_eq!(take_writes(&tmp.0), ["berth/c1/cgroup.procs=0"]);
    }

    #[test]
    fn join_self_moves_the_thread_on_v1_and_the_process_on_v2() {
        let (tmp, cg) = fake_v1();
        cg.create(&Resources::default()).expect("create");
        take_writes(&tmp.0);
        cg.join_self().expect("join");
        let writes = take_writes(&tmp.0);
        assert_eq!(writes.len(), 7);
        assert!(writes.iter().all(|w| w.ends_with("/berth/c1/tasks=0")), "{writes:?}");
        let (tmp, cg) = fake_v2();
        cg.create(&Resources::default()).expect("create");
        take_writes(&tmp.0);
        cg.join_self().expect("join");
        assert_eq!(take_writes(&tmp.0), ["berth/c1/cgroup.procs=0"]);
    }

    #[test]
    fn pids_come_from_the_pids_controller() {
        let (tmp, cg) = fake_v1();
        tmp.file("pids/berth/c1/cgroup.procs", "12\n34\n");
        tmp.file("memory/berth/c1/cgroup.procs", "99\n");
        assert_eq!(cg.pids().expect("pids"), [12, 34]);
        tmp.file("pids/berth/c1/cgroup.procs", "12\nnot a pid\n");
        assert!(cg.pids().is_err());
    }

    #[test]
    fn v1_freeze_and_thaw() {
        let (tmp, cg) = fake_v1();
        cg.create(&Resources::default()).expect("create");
        tmp.file("freezer/berth/c1/freezer.state", "THAWED\n");
        assert!(!cg.is_frozen().expect("state"));
        take_writes(&tmp.0);
        cg.freeze().expect("freeze");
        assert!(cg.is_frozen().expect("state"));
        cg.thaw().expect("thaw");
        assert!(!cg.is_frozen().expect("state"));
        assert_eq!(
            take_writes(&tmp.0),
            [
                "freezer/berth/c1/freezer.state=FROZEN",
                "freezer/berth/c1/freezer.state=THAWED"
            ]
        );
        let no_freezer = Cgroup::new(Layout::v1_at(BTreeMap::new()), "x");
        assert!(!no_freezer.is_frozen().expect("no freezer"));
        assert!(no_freezer.freeze().is_err());
    }

    #[test]
    fn v2_freeze_waits_for_cgroup_events() {
        let (tmp, cg) = fake_v2();
        cg.create(&Resources::default()).expect("create");
        // The fake kernel reports frozen at once.
        tmp.file("berth/c1/cgroup.events", "populated 1\nfrozen 1\n");
        take_writes(&tmp.0);
        cg.freeze().expect("freeze");
        assert!(cg.is_frozen().expect("state"));
        tmp.file("berth/c1/cgroup.events", "populated 1\nfrozen 0\n");
        cg.thaw().expect("thaw");
        assert_eq!(
            take_writes(&tmp.0),
            ["berth/c1/cgroup.freeze=1", "berth/c1/cgroup.freeze=0"]
        );
    }

    #[test]
    fn stats_read_v1_and_v2_files() {
        let (tmp, cg) = fake_v1();
        cg.create(&Resources::default()).expect("create");
        tmp.file("memory/berth/c1/memory.usage_in_bytes", "1048576\n");
        tmp.file("memory/berth/c1/memory.limit_in_bytes", "9223372036854771712\n");
        tmp.file("cpu,cpuacct/berth/c1/cpuacct.usage", "123456789\n");
        tmp.file("pids/berth/c1/pids.current", "3\n");
        let expected = CgroupStats {
            memory_usage: 1 << 20,
            memory_limit: None,
            cpu_usage_ns: 123_456_789,
            pids: 3,
        };
        assert_eq!(cg.stats().expect("stats"), expected);
        tmp.file("memory/berth/c1/memory.limit_in_bytes", "67108864\n");
        assert_eq!(cg.stats().expect("stats").memory_limit, Some(64 << 20));

        let (tmp, cg) = fake_v2();
        cg.create(&Resources::default()).expect("create");
        tmp.file("berth/c1/memory.current", "2048\n");
        tmp.file("berth/c1/memory.max", "max\n");
        tmp.file(
            "berth/c1/cpu.stat",
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        );
        tmp.file("berth/c1/cgroup.procs", "7\n8\n");
        let expected = CgroupStats {
            memory_usage: 2048,
            memory_limit: None,
            cpu_usage_ns: 1_500_000,
            pids: 2,
        };
        assert_eq!(cg.stats().expect("stats"), expected);
        assert!(Cgroup::new(Layout::v2_at(tmp.0.clone()), "gone").stats().is_err());
    }

    #[test]
    fn oom_kill_counters() {
        let (tmp, cg) = fake_v1();
        assert!(!cg.oom_killed().expect("no file"));
        tmp.file(
            "memory/berth/c1/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        );
        assert!(!cg.oom_killed().expect("read"));
        tmp.file(
            "memory/berth/c1/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        assert!(cg.oom_killed().expect("read"));
        tmp.file(
            "memory/berth/c1/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 1\n",
        );
        assert!(cg.oom_killed().expect("old kernel"));

        let (tmp, cg) = fake_v2();
        tmp.file("berth/c1/memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 0\n");
        assert!(!cg.oom_killed().expect("read"));
        tmp.file("berth/c1/memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n");
        assert!(cg.oom_killed().expect("read"));
    }

    #[test]
    fn kill_all_of_an_empty_or_missing_cgroup_does_nothing() {
        let (tmp, cg) = fake_v2();
        cg.kill_all().expect("missing cgroup");
        cg.create(&Resources::default()).expect("create");
        tmp.file("berth/c1/cgroup.procs", "");
        tmp.file("berth/c1/cgroup.kill", "");
        take_writes(&tmp.0);
        cg.kill_all().expect("empty cgroup");
        assert!(take_writes(&tmp.0).is_empty());
    }

    #[test]
    fn delete_removes_sub_cgroups_first_and_tolerates_missing_dirs() {
        let (tmp, cg) = fake_v1();
        for dir in cg.paths() {
            fs::create_dir_all(dir.join("inner/deeper")).expect("mkdir");
        }
        cg.delete().expect("delete");
        assert!(cg.paths().iter().all(|p| !p.exists()));
        assert!(tmp.0.join("memory/berth").is_dir(), "the parent is shared and stays");
        cg.delete().expect("delete again");
    }

    #[test]
    fn delete_reports_what_stays() {
        let (tmp, cg) = fake_v2();
        tmp.file("berth/c1/cgroup.procs", "");
        let err = cg
            .delete()
            .expect_err("a plain directory with a file cannot be removed");
        assert!(err.to_string().contains("cannot remove"), "{err}");
        assert!(
            err.to_string().contains(&tmp.0.join("berth/c1").display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn container_mounts_list_the_joined_hierarchies() {
        let (_tmp, cg) = fake_v1();
        let got: Vec<String> = cg
            .container_mounts()
            .into_iter()
            .map(|(fstype, data, target)| format!("{fstype} {data} {}", target.display()))
            .collect();
        assert_eq!(
            got,
            [
                "cgroup blkio blkio",
                "cgroup cpu,cpuacct cpu,cpuacct",
                "cgroup cpuset cpuset",
                "cgroup devices devices",
                "cgroup freezer freezer",
                "cgroup memory memory",
                "cgroup pids pids",
            ]
        );
        let (_tmp, cg) = fake_v2();
        assert_eq!(
            cg.container_mounts(),
            [("cgroup2".to_string(), String::new(), PathBuf::new())]
        );
    }

    /// Cleans the real cgroup up even when an assertion fails.
    struct RealGuard {
        cg: Cgroup,
        child: Option<Child>,
    }

    impl Drop for RealGuard {
        fn drop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if self.cg.is_frozen().unwrap_or(false) {
                let _ = self.cg.thaw();
            }
            let _ = self.cg.kill_all();
            let _ = self.cg.delete();
        }
    }

    #[test]
    fn real_cgroup_lifecycle_as_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "real_cgroup_lifecycle_as_root creates real cgroups and must run as root (sudo -E cargo test)"
        );
        let layout = Layout::detect().expect("detect the cgroup layout");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let rel = format!("berth-test-{}-{nanos}", std::process::id());
        let mut guard = RealGuard {
            cg: Cgroup::new(layout.clone(), rel),
            child: None,
        };
        let res = Resources {
            memory: Some(64 << 20),
            pids_limit: Some(20),
            ..Resources::default()
        };
        guard.cg.create(&res).expect("create");
        assert!(guard.cg.paths().iter().all(|p| p.is_dir()), "{:?}", guard.cg.paths());
        let pids_dir = guard.cg.procs_dir().expect("procs dir");
        assert_eq!(read(&pids_dir.join("pids.max")).expect("pids.max").trim(), "20");
        let memory_dir = guard.cg.dir("memory").expect("memory controller");
        let limit_file = if layout.is_v2() {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        assert_eq!(read_u64(&memory_dir.join(limit_file)), Some(64 << 20));

        // The shell joins the cgroup, then execs sleep: cgroup v1 does not move memory already charged, so only
        // what exec allocates afterwards shows in the cgroup's usage.
        let child = Command::new("/bin/sh")
            .args(["-c", "read line; exec /bin/sleep 30"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn /bin/sh");
        let pid = i32::try_from(child.id()).expect("pid fits i32");
        let child = guard.child.insert(child);
        guard.cg.add_process(pid).expect("add_process");
        assert!(guard.cg.pids().expect("pids").contains(&pid));
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(b"go\n")
            .expect("tell the shell to exec");
        let comm = format!("/proc/{pid}/comm");
        let execed = wait_for(Duration::from_secs(5), || {
            Ok(fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep"))
        });
        assert!(execed.expect("poll"), "the child did not exec sleep");

        guard.cg.freeze().expect("freeze");
        assert!(guard.cg.is_frozen().expect("is_frozen"));
        guard.cg.thaw().expect("thaw");
        assert!(!guard.cg.is_frozen().expect("is_frozen"));

        let stats = guard.cg.stats().expect("stats");
        assert!(stats.memory_usage > 0, "{stats:?}");
        assert_eq!(stats.memory_limit, Some(64 << 20), "{stats:?}");
        assert_eq!(stats.pids, 1, "{stats:?}");

        guard.cg.kill_all().expect("kill_all");
        let status = child.wait().expect("wait for the child");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        guard.child = None;
        assert!(guard.cg.pids().expect("pids").is_empty());

        guard.cg.delete().expect("delete");
        let paths = guard.cg.paths();
        let left: Vec<&PathBuf> = paths.iter().filter(|p| p.exists()).collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}
