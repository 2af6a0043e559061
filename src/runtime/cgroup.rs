//! cgroups of one container, on a cgroup v1 (or hybrid) host and on a pure cgroup v2 host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::{Result, RuntimeError};
use super::spec::Resources;

/// Where the controllers are mounted.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// One hierarchy per controller (name → mount dir).
    V1 {
        /// Controller name → its mount directory.
        controllers: BTreeMap<String, PathBuf>,
    },
    /// The unified hierarchy.
    V2 {
        /// Its mount directory.
        root: PathBuf,
    },
}

const V1_USED: &[&str] = &[
    "memory", "cpu", "cpuacct", "pids", "freezer", "devices", "cpuset", "blkio",
];

impl Layout {
    /// Reads the mounts of this process.
    pub fn detect() -> Result<Layout> {
        let p = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(p).map_err(RuntimeError::io("read", p))?;
        Ok(Self::parse(&text))
    }

    /// Parses mountinfo text.
    pub fn parse(text: &str) -> Layout {
        let mut controllers = BTreeMap::new();
        let mut v2_at_root = None;
        for line in text.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            let (Some(mnt), Some(fstype)) = (pre.get(4), post.first()) else {
                continue;
            };
            match *fstype {
                "cgroup2" if *mnt == "/sys/fs/cgroup" => v2_at_root = Some(PathBuf::from(mnt)),
                "cgroup" => {
                    let opts = post.get(2).copied().unwrap_or("");
                    for o in opts.split(',') {
                        if V1_USED.contains(&o) {
                            controllers.insert(o.to_string(), PathBuf::from(mnt));
                        }
                    }
                }
                _ => {}
            }
        }
        match v2_at_root {
            Some(root) if controllers.is_empty() => Layout::V2 { root },
            _ => Layout::V1 { controllers },
        }
    }

    /// Whether this is the unified hierarchy.
    pub fn is_v2(&self) -> bool {
        matches!(self, Layout::V2 { .. })
    }
}

/// Delegates the controllers berth uses (those `dir` has) to its children. Best effort: a controller
/// that cannot be enabled shows up later as a limit that cannot be written.
fn enable_controllers(dir: &Path) {
    let avail = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let want: Vec<String> = ["cpu", "memory", "pids", "io"]
        .iter()
        .filter(|c| avail.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if !want.is_empty() {
        let _ = std::fs::write(dir.join("cgroup.subtree_control"), want.join(" "));
    }
}

/// Usage numbers read from a cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    /// Memory in use, bytes.
    pub memory_usage: u64,
    /// Memory limit, bytes, when set.
    pub memory_limit: Option<u64>,
    /// CPU time used, nanoseconds.
    pub cpu_usage_ns: u64,
    /// Number of tasks.
    pub pids: u64,
}

/// One container's cgroup, `rel` below each hierarchy's root.
#[derive(Debug, Clone)]
pub struct Cgroup {
    layout: Layout,
    rel: PathBuf,
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| RuntimeError::Cgroup {
        path: path.to_path_buf(),
        message: format!("write {value:?}: {e}"),
    })
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| RuntimeError::Cgroup {
        path: path.to_path_buf(),
        message: format!("read: {e}"),
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Cgroup {
    /// Names the cgroup; no I/O.
    pub fn new(layout: Layout, rel: impl Into<PathBuf>) -> Cgroup {
        Cgroup {
            layout,
            rel: rel.into(),
        }
    }

    fn dir(&self, controller: &str) -> Option<PathBuf> {
        match &self.layout {
            Layout::V2 { root } => Some(root.join(&self.rel)),
            Layout::V1 { controllers } => controllers.get(controller).map(|m| m.join(&self.rel)),
        }
    }

    /// Every directory of this cgroup, one per hierarchy.
    pub fn paths(&self) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V2 { root } => vec![root.join(&self.rel)],
            Layout::V1 { controllers } => {
                let mut v: Vec<PathBuf> = controllers.values().map(|m| m.join(&self.rel)).collect();
                v.sort();
                v.dedup();
                v
            }
        }
    }

    /// Creates the directories and applies the limits.
    pub fn create(&self, res: &Resources) -> Result<()> {
        match &self.layout {
            Layout::V2 { root } => {
                // Enable the controllers in every ancestor's subtree_control, down to our parent.
                let mut dir = root.clone();
                for c in self.rel.parent().into_iter().flat_map(|p| p.components()) {
                    enable_controllers(&dir);
                    dir = dir.join(c);
                    std::fs::create_dir_all(&dir).map_err(RuntimeError::io("create cgroup", &dir))?;
                }
                enable_controllers(&dir);
                let me = root.join(&self.rel);
                std::fs::create_dir_all(&me).map_err(RuntimeError::io("create cgroup", &me))?;
            }
            Layout::V1 { controllers } => {
                for (name, mount) in controllers {
                    let d = mount.join(&self.rel);
                    std::fs::create_dir_all(&d).map_err(RuntimeError::io("create cgroup", &d))?;
                    if name == "cpuset" {
                        // Empty cpus/mems make adding a task fail; inherit them down the path.
                        let mut cur = mount.clone();
                        for c in self.rel.components() {
                            let parent = cur.clone();
                            cur = cur.join(c);
                            for f in ["cpuset.cpus", "cpuset.mems"] {
                                if read(&cur.join(f)).map(|s| s.trim().is_empty()).unwrap_or(false) {
                                    let v = read(&parent.join(f))?;
                                    write(&cur.join(f), v.trim())?;
                                }
                            }
                        }
                    }
                }
                if let Some(d) = self.dir("devices") {
                    write(&d.join("devices.deny"), "a")?;
                    for rule in [
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
                    ] {
                        write(&d.join("devices.allow"), rule)?;
                    }
                }
            }
        }
        self.apply(res)
    }

    /// Writes the limits.
    pub fn apply(&self, res: &Resources) -> Result<()> {
        match &self.layout {
            Layout::V2 { root } => {
                let d = root.join(&self.rel);
                if let Some(m) = res.memory {
                    write(&d.join("memory.max"), &m.to_string())?;
                    if d.join("memory.swap.max").exists() {
                        write(&d.join("memory.swap.max"), &m.to_string())?;
                    }
                }
                if let Some(r) = res.memory_reservation {
                    write(&d.join("memory.low"), &r.to_string())?;
                }
                if let Some(c) = res.cpus {
                    write(&d.join("cpu.max"), &format!("{} 100000", (c * 100000.0) as u64))?;
                }
                if let Some(s) = res.cpu_shares {
                    let w = 1 + (s.clamp(2, 262144) - 2) * 9999 / 262142;
                    write(&d.join("cpu.weight"), &w.to_string())?;
                }
                if let Some(p) = res.pids_limit {
                    write(
                        &d.join("pids.max"),
                        &if p <= 0 { "max".to_string() } else { p.to_string() },
                    )?;
                }
            }
            Layout::V1 { .. } => {
                if let Some(d) = self.dir("memory") {
                    if let Some(m) = res.memory {
                        write(&d.join("memory.limit_in_bytes"), &m.to_string())?;
                        if d.join("memory.memsw.limit_in_bytes").exists() {
                            write(&d.join("memory.memsw.limit_in_bytes"), &(m * 2).to_string())?;
                        }
                    }
                    if let Some(r) = res.memory_reservation {
                        write(&d.join("memory.soft_limit_in_bytes"), &r.to_string())?;
                    }
                }
                if let Some(d) = self.dir("cpu") {
                    if let Some(c) = res.cpus {
                        write(&d.join("cpu.cfs_period_us"), "100000")?;
                        write(&d.join("cpu.cfs_quota_us"), &((c * 100000.0) as u64).to_string())?;
                    }
                    if let Some(s) = res.cpu_shares {
                        write(&d.join("cpu.shares"), &s.to_string())?;
                    }
                }
                if let (Some(d), Some(p)) = (self.dir("pids"), res.pids_limit) {
                    write(
                        &d.join("pids.max"),
                        &if p <= 0 { "max".to_string() } else { p.to_string() },
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Lets the container use every device (privileged).
    pub fn allow_all_devices(&self) -> Result<()> {
        if let (Layout::V1 { .. }, Some(d)) = (&self.layout, self.dir("devices")) {
            write(&d.join("devices.allow"), "a")?;
        }
        Ok(())
    }

    /// Moves a process (0: the caller) into the cgroup.
    pub fn add_process(&self, pid: i32) -> Result<()> {
        for d in self.paths() {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn freezer_dir(&self) -> Option<PathBuf> {
        self.dir("freezer")
    }

    /// Freezes every process and waits until the kernel says they are frozen.
    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    /// Thaws them.
    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, on: bool) -> Result<()> {
        let d = self.freezer_dir().ok_or_else(|| RuntimeError::Cgroup {
            path: self.rel.clone(),
            message: "no freezer controller".into(),
        })?;
        if self.layout.is_v2() {
            write(&d.join("cgroup.freeze"), if on { "1" } else { "0" })?;
        } else {
            write(&d.join("freezer.state"), if on { "FROZEN" } else { "THAWED" })?;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.is_frozen()? != on {
            if Instant::now() > deadline {
                return Err(RuntimeError::Cgroup {
                    path: d,
                    message: format!("did not become {}", if on { "frozen" } else { "thawed" }),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Whether it is frozen.
    pub fn is_frozen(&self) -> Result<bool> {
        let Some(d) = self.freezer_dir() else { return Ok(false) };
        if self.layout.is_v2() {
            let ev = read(&d.join("cgroup.events"))?;
            Ok(ev.lines().any(|l| l.trim() == "frozen 1"))
        } else {
            Ok(read(&d.join("freezer.state"))?.trim() == "FROZEN")
        }
    }

    /// Host pids of its processes.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let d = self
            .dir("pids")
            .or_else(|| self.dir("memory"))
            .ok_or_else(|| RuntimeError::Cgroup {
                path: self.rel.clone(),
                message: "no pids or memory controller".into(),
            })?;
        Ok(read(&d.join("cgroup.procs"))?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }

    /// Memory, CPU and task counts.
    pub fn stats(&self) -> Result<CgroupStats> {
        let mut s = CgroupStats::default();
        match &self.layout {
            Layout::V2 { root } => {
                let d = root.join(&self.rel);
                s.memory_usage = read_u64(&d.join("memory.current")).unwrap_or(0);
                s.memory_limit = read_u64(&d.join("memory.max"));
                let cpu = std::fs::read_to_string(d.join("cpu.stat")).unwrap_or_default();
                s.cpu_usage_ns = cpu
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
                    * 1000;
                s.pids = read_u64(&d.join("pids.current")).unwrap_or(0);
            }
            Layout::V1 { .. } => {
                if let Some(d) = self.dir("memory") {
                    s.memory_usage = read_u64(&d.join("memory.usage_in_bytes")).unwrap_or(0);
                    s.memory_limit = read_u64(&d.join("memory.limit_in_bytes")).filter(|l| *l < (1 << 62));
                }
                if let Some(d) = self.dir("cpuacct") {
                    s.cpu_usage_ns = read_u64(&d.join("cpuacct.usage")).unwrap_or(0);
                }
                if let Some(d) = self.dir("pids") {
                    s.pids = read_u64(&d.join("pids.current")).unwrap_or(0);
                }
            }
        }
        Ok(s)
    }

    /// Whether the OOM killer killed a process in it.
    pub fn oom_killed(&self) -> Result<bool> {
        let Some(d) = self.dir("memory") else { return Ok(false) };
        let (file, key) = if self.layout.is_v2() {
            ("memory.events", "oom_kill ")
        } else {
            ("memory.oom_control", "oom_kill ")
        };
        let text = std::fs::read_to_string(d.join(file)).unwrap_or_default();
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0))
    }

    /// SIGKILLs every process in it.
    pub fn kill_all(&self) -> Result<()> {
        if let Some(d) = self.dir("pids").filter(|_| self.layout.is_v2())
            && d.join("cgroup.kill").exists()
        {
            return write(&d.join("cgroup.kill"), "1");
        }
        if self.pids().map(|p| p.is_empty()).unwrap_or(true) {
            return Ok(());
        }
        let frozen = self.freezer_dir().is_some_and(|d| d.exists()) && self.freeze().is_ok();
        for pid in self.pids().unwrap_or_default() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        if frozen {
            let _ = self.thaw();
        }
        Ok(())
    }

    /// Removes the directories; waits briefly for exiting processes.
    pub fn delete(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(2);
        for d in self.paths() {
            loop {
                match std::fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => {
                        return Err(RuntimeError::Cgroup {
                            path: d,
                            message: format!("remove: {e}"),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// cgroup file systems to mount inside the container at /sys/fs/cgroup.
    pub fn container_mounts(&self) -> Vec<(String, String, PathBuf)> {
        match &self.layout {
            Layout::V2 { .. } => vec![("cgroup2".into(), String::new(), PathBuf::new())],
            Layout::V1 { controllers } => {
                let mut by_mount: BTreeMap<&PathBuf, Vec<&str>> = BTreeMap::new();
                for (c, m) in controllers {
                    by_mount.entry(m).or_default().push(c);
                }
                by_mount
                    .into_iter()
                    .map(|(m, cs)| {
                        let name = m.file_name().map(PathBuf::from).unwrap_or_default();
                        ("cgroup".to_string(), cs.join(","), name)
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
35 30 0:31 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
36 30 0:32 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
37 30 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const UNIFIED: &str = "\
25 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn layouts_are_read_from_mountinfo() {
        let Layout::V1 { controllers } = Layout::parse(HYBRID) else {
            panic!("hybrid read as v2")
        };
        assert_eq!(
            controllers.keys().collect::<Vec<_>>(),
            ["cpu", "cpuacct", "freezer", "memory", "pids"]
        );
        assert_eq!(controllers["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(
            Layout::parse(UNIFIED),
            Layout::V2 {
                root: PathBuf::from("/sys/fs/cgroup")
            }
        );
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-cg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
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

    #[test]
    fn v2_limits_are_written_as_runc_writes_them() {
        let root = temp("v2");
        std::fs::write(root.join("cgroup.controllers"), "cpu memory pids io").unwrap();
        let cg = Cgroup::new(Layout::V2 { root: root.clone() }, "berth/abc");
        cg.create(&limits()).unwrap();
        let d = root.join("berth/abc");
        let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("memory.low"), (32u64 << 20).to_string());
        assert_eq!(read("cpu.max"), "150000 100000");
        assert_eq!(read("cpu.weight"), "20");
        assert_eq!(read("pids.max"), "20");
        assert_eq!(
            std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
            "+cpu +memory +pids +io"
        );
        assert_eq!(
            cg.container_mounts(),
            vec![("cgroup2".to_string(), String::new(), PathBuf::new())]
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_limits_and_device_rules_are_written_per_controller() {
        let root = temp("v1");
        let controllers: BTreeMap<String, PathBuf> = ["memory", "cpu", "pids", "devices"]
            .iter()
            .map(|c| (c.to_string(), root.join(c)))
            .collect();
        let cg = Cgroup::new(Layout::V1 { controllers }, "berth/abc");
        cg.create(&limits()).unwrap();
        let read = |c: &str, f: &str| std::fs::read_to_string(root.join(c).join("berth/abc").join(f)).unwrap();
        assert_eq!(read("memory", "memory.limit_in_bytes"), (64u64 << 20).to_string());
        assert_eq!(read("memory", "memory.soft_limit_in_bytes"), (32u64 << 20).to_string());
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "150000");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(read("cpu", "cpu.shares"), "512");
        assert_eq!(read("pids", "pids.max"), "20");
        // Plain files keep only the last write; the real devices.allow appends rules.
        assert_eq!(read("devices", "devices.deny"), "a");
        assert_eq!(read("devices", "devices.allow"), "c 10:200 rwm");
        assert_eq!(cg.paths().len(), 4);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
