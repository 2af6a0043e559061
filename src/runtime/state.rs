//! State on disk: one directory per container under `<root>/containers/<id>/`, holding the immutable
//! `config.json`, the mutable `state.json` (written atomically by rename), the overlay upper and work dirs,
//! the generated /etc files, the log, and the supervisor's control socket and lock. A supervisor holds an
//! exclusive `flock` on its lock file for its whole life, so liveness survives pid reuse.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::{Lock, LockMode};

use super::error::{Result, RuntimeError};
use super::health::Health;
use super::spec::ContainerSpec;

/// The immutable record written at create time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// 64 hex digits.
    pub id: String,
    /// When it was created, RFC 3339.
    pub created: String,
    /// What to run.
    pub spec: ContainerSpec,
}

/// The life-cycle status, with Docker's names.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started.
    #[default]
    Created,
    /// Its process runs.
    Running,
    /// Frozen.
    Paused,
    /// Waiting to be restarted by its policy.
    Restarting,
    /// Its process exited.
    Exited,
    /// Its supervisor died without recording an exit.
    Dead,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
            Status::Dead => "dead",
        })
    }
}

/// The mutable record, owned by the supervisor while it lives.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    /// Current status.
    pub status: Status,
    /// Host pid of the container's first process while running.
    pub pid: Option<i32>,
    /// Host pid of the supervisor while it lives.
    pub supervisor_pid: Option<i32>,
    /// When the process last started, RFC 3339.
    pub started_at: Option<String>,
    /// When it last exited, RFC 3339.
    pub finished_at: Option<String>,
    /// Its last exit code (128+signal when killed by a signal).
    pub exit_code: Option<i32>,
    /// The kernel's OOM killer ended it.
    pub oom_killed: bool,
    /// How many times the restart policy restarted it.
    pub restart_count: u32,
    /// Why it could not start, when it could not.
    pub error: Option<String>,
    /// Stopped or killed by a command (no restart).
    pub stopped_by_user: bool,
    /// The healthcheck's status and last results while the process runs; `None` without a check
    /// or when not running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

/// Where retired container directories are deleted, beside `containers/` (see `ContainerDir::retire`).
const REMOVING: &str = "removing";

/// The files every container gets a bind mount on, made once per state root as the top-most lower layer of
/// every container's root (see `mount_points_layer`).
const MOUNT_POINTS: &[&str] = &["etc/hosts", "etc/hostname", "etc/resolv.conf"];

/// `<root>/mountpoints/`: a read-only layer shared by all containers, with the empty files that the generated
/// /etc files are bind-mounted on. An image without them would otherwise have them made in each container's
/// upper dir, copying /etc up first: four files made and deleted per container, which is what slows starts
/// down on a busy ext4 (docs/BENCHMARKS.md). Made on first use by an atomic rename, so racing makers agree.
pub fn mount_points_layer(root: &Path) -> std::io::Result<PathBuf> {
    let layer = root.join("mountpoints");
    if layer.join(MOUNT_POINTS[MOUNT_POINTS.len() - 1]).exists() {
        return Ok(layer);
    }
    let tmp = root.join(format!("mountpoints.tmp-{}", &new_id()[..16]));
    let made = (|| {
        for rel in MOUNT_POINTS {
            let path = tmp.join(rel);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::File::create(&path)?;
        }
        std::fs::rename(&tmp, &layer)
    })();
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    // Another process may have won the race; then its layer is as good.
    match layer.join(MOUNT_POINTS[MOUNT_POINTS.len() - 1]).exists() {
        true => Ok(layer),
        false => made.map(|()| layer),
    }
}

/// Where emptied container directories wait to be reused by `create`, beside `containers/` (see [`recycle`]).
const SPARE: &str = "spare";
/// Spare directories kept at most; more are deleted.
const MAX_SPARES: usize = 16;
/// What of a container directory a spare keeps: the root's mount point and the files `create` fills in again.
/// Not `upper/` and `work/`: a process that still holds the old container's mount namespace (a `cp` helper, an
/// `nsenter`) keeps its overlay mounted on them, so a new container gets new ones.
const SKELETON: &[&str] = &["rootfs", "hostname", "hosts", "resolv.conf", "config.json"];

/// Empties a retired container directory (see `ContainerDir::retire`) down to its skeleton (see [`SKELETON`]) and
/// keeps it in `<root>/spare/` for the next `create`, which fills it in and renames it into place; deletes it
/// instead when the pool is full or anything about it is unexpected. On an ext4 without a journal every inode
/// made and deleted slows later ones down (docs/BENCHMARKS.md): a reused skeleton spares 6 of a container's 14.
/// Nothing the container wrote is kept: its upper and work directories are deleted whole.
pub fn recycle(retired: &Path) -> std::io::Result<()> {
    let reused = (|| -> std::io::Result<bool> {
        let Some(spare) = retired.parent().map(|removing| removing.with_file_name(SPARE)) else {
            return Ok(false);
        };
        std::fs::create_dir_all(&spare)?;
        if std::fs::read_dir(&spare)?.count() >= MAX_SPARES {
            return Ok(false);
        }
        for entry in std::fs::read_dir(retired)? {
            let entry = entry?;
            if !entry.file_name().to_str().is_some_and(|n| SKELETON.contains(&n)) {
                match entry.file_type()?.is_dir() {
                    true => std::fs::remove_dir_all(entry.path())?,
                    false => std::fs::remove_file(entry.path())?,
                }
            }
        }
        // The mount point: a plain empty directory, as `create` made it.
        let rootfs = retired.join(SKELETON[0]);
        let plain = std::fs::symlink_metadata(&rootfs)
            .is_ok_and(|m| m.is_dir() && m.mode() & 0o7777 == 0o755 && m.uid() == 0 && m.gid() == 0);
        if !plain || std::fs::read_dir(&rootfs)?.next().is_some() {
            return Ok(false);
        }
        std::fs::rename(retired, spare.join(crate::fsutil::random_hex(8)))?;
        Ok(true)
    })();
    match reused {
        Ok(true) => Ok(()),
        _ => std::fs::remove_dir_all(retired),
    }
}

/// A spare container directory from [`recycle`] for `create` to fill in, if there is one. The caller must hold
/// the containers lock, so that no other `create` takes the same one.
pub fn take_spare(root: &Path) -> Option<PathBuf> {
    let spare = std::fs::read_dir(root.join(SPARE)).ok()?.flatten().next()?.path();
    let empty = |name: &str| std::fs::read_dir(spare.join(name)).is_ok_and(|mut d| d.next().is_none());
    match empty(SKELETON[0]) && !spare.join("upper").exists() {
        true => Some(spare),
        false => {
            let _ = std::fs::remove_dir_all(&spare).or_else(|_| std::fs::remove_file(&spare));
            None
        }
    }
}

/// Deletes what retired directories a killed process left in `<root>/removing/`: those older than a minute, so
/// none that a live supervisor is still deleting.
pub fn sweep_removing(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root.join(REMOVING)) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > std::time::Duration::from_secs(60)));
        if old {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The paths of one container's state directory.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    /// The directory itself.
    pub dir: PathBuf,
}

impl ContainerDir {
    /// The directory of container `id` under `root`.
    pub fn new(root: &Path, id: &str) -> Self {
        ContainerDir {
            dir: root.join("containers").join(id),
        }
    }
    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    /// `state.json`.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// The overlay upper dir: everything the container writes.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    /// The overlay work dir.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// The mount point of the merged root (inside the container's mount namespace only).
    pub fn merged(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    /// The log, one JSON object per line.
    pub fn log(&self) -> PathBuf {
        self.dir.join("container.log")
    }
    /// The supervisor's control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("ctl")
    }
    /// The supervisor's own messages, made only when it has any.
    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }
    /// Takes the lock a supervisor holds while it lives: a `flock` on the directory itself, which costs no
    /// file. Waits up to `patience` for a supervisor that holds it to exit (one that recorded its container's
    /// exit still deletes the cgroup before it goes); `None` when it is still held then.
    pub fn lock_supervisor(&self, patience: std::time::Duration) -> Result<Option<File>> {
        let dir = File::open(&self.dir).map_err(RuntimeError::io("open", &self.dir))?;
        let deadline = std::time::Instant::now() + patience;
        loop {
            // SAFETY: flock on a valid, owned fd; the lock lasts as long as the file is open.
            if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Some(dir));
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EWOULDBLOCK) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Some(libc::EWOULDBLOCK) => return Ok(None),
                _ => return Err(RuntimeError::io("lock", &self.dir)(e)),
            }
        }
    }
    /// Takes the directory out of `containers/` with one rename, into `<root>/removing/`, so the container
    /// disappears from every listing at once however long deleting its files then takes (on ext4 each unlink
    /// of a file still being written back waits for the disk). Returns the new place, for `remove_dir_all`.
    pub fn retire(&self) -> std::io::Result<PathBuf> {
        let (Some(containers), Some(name)) = (self.dir.parent(), self.dir.file_name()) else {
            return Err(std::io::Error::other("not a container directory"));
        };
        let removing = containers.with_file_name(REMOVING);
        std::fs::create_dir_all(&removing)?;
        let to = removing.join(name);
        std::fs::rename(&self.dir, &to)?;
        Ok(to)
    }

    /// Deletes the directory: retired first (see `retire`) and kept as a spare if it can be (see [`recycle`]),
    /// deleted in place if retiring fails.
    pub fn remove(&self) -> std::io::Result<()> {
        match self.retire() {
            Ok(to) => recycle(&to),
            Err(_) => std::fs::remove_dir_all(&self.dir),
        }
    }

    /// A generated file for /etc (`hosts`, `hostname`, `resolv.conf`).
    pub fn etc(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Reads `config.json`.
    pub fn read_config(&self) -> Result<ContainerConfig> {
        read_json(&self.config())
    }

    /// Reads `state.json` (default when missing: a half-created container).
    pub fn read_state(&self) -> Result<RunState> {
        match std::fs::metadata(self.state()) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RunState::default()),
            _ => read_json(&self.state()),
        }
    }

    /// Replaces `state.json` atomically.
    pub fn write_state(&self, s: &RunState) -> Result<()> {
        write_json_atomic(&self.state(), s)
    }

    /// Whether a supervisor holds the lock now.
    pub fn supervisor_alive(&self) -> bool {
        let Ok(f) = File::open(&self.dir) else {
            return false;
        };
        // SAFETY: flock on a valid, owned fd; the lock is released when `f` closes.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        r != 0
    }

    /// The state as seen from outside: a record that says running while no supervisor lives is dead.
    pub fn observed_state(&self) -> Result<RunState> {
        let mut s = self.read_state()?;
        if matches!(s.status, Status::Running | Status::Paused | Status::Restarting) && !self.supervisor_alive() {
            // The supervisor may have exited between the read and the lock check, after recording an exit.
            let again = self.read_state()?;
            if matches!(again.status, Status::Running | Status::Paused | Status::Restarting) {
                s = again;
                s.status = Status::Dead;
                s.error.get_or_insert_with(|| "the supervisor died".into());
            } else {
                s = again;
            }
        }
        Ok(s)
    }
}

/// Reads and parses a JSON record.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).map_err(RuntimeError::io("read", path))?;
    serde_json::from_slice(&text).map_err(|e| RuntimeError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Writes a JSON record to a temporary file beside it, then renames it into place.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    crate::fsutil::write_atomic(path, &json(path, value)?, false).map_err(RuntimeError::io("write", path))
}

/// Writes a JSON record in place, for a file nobody reads yet (one in a spare directory being filled in).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    std::fs::write(path, json(path, value)?).map_err(RuntimeError::io("write", path))
}

/// The JSON text of a record bound for `path`.
fn json<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| RuntimeError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// A new random container id: 64 lower-case hex digits.
pub fn new_id() -> String {
    crate::fsutil::random_hex(32)
}

/// Now, RFC 3339 with nanoseconds, UTC.
pub fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// An exclusive lock on a file, released on drop.
pub struct FileLock {
    _lock: Lock,
}

impl FileLock {
    /// Blocks until the lock on `path` (created if missing) is ours.
    pub fn exclusive(path: &Path) -> Result<Self> {
        let lock = Lock::take(path, LockMode::Exclusive).map_err(RuntimeError::io("lock", path))?;
        Ok(FileLock { _lock: lock })
    }

    /// Takes the lock without waiting; `None` when someone else holds it.
    pub fn try_exclusive(path: &Path) -> Result<Option<Self>> {
        let lock = Lock::try_take(path, LockMode::Exclusive).map_err(RuntimeError::io("lock", path))?;
        Ok(lock.map(|l| FileLock { _lock: l }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ids_are_64_hex_and_distinct() {
        let a = new_id();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, new_id());
    }

    /// A retired directory with the skeleton and more (what the container wrote, its socket and logs).
    fn used_container(root: &Path, id: &str) -> PathBuf {
        let dir = ContainerDir::new(root, id);
        for d in [
            dir.upper().join("etc/x"),
            dir.work().join("work/incompat/volatile"),
            dir.merged(),
        ] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        for f in [
            "hostname",
            "hosts",
            "resolv.conf",
            "config.json",
            "state.json",
            "container.log",
        ] {
            std::fs::write(dir.dir.join(f), "x").expect("write");
        }
        std::fs::write(dir.upper().join("etc/x/file"), "written").expect("write");
        dir.retire().expect("retire")
    }

    #[test]
    fn recycled_directories_keep_only_an_empty_skeleton_and_the_pool_is_bounded() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("berth-spare-{}", new_id()));
        recycle(&used_container(&root, "c1")).expect("recycle");
        assert!(!root.join("removing/c1").exists());
        let spare = take_spare(&root).expect("a spare");
        let mut names: Vec<String> = std::fs::read_dir(&spare)
            .expect("read")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["config.json", "hostname", "hosts", "resolv.conf", "rootfs"]);
        assert_eq!(std::fs::read_dir(spare.join("rootfs")).expect("read").count(), 0);
        // A mount point that is not as `create` made it is not reused.
        let changed = used_container(&root, "c2");
        std::fs::set_permissions(changed.join("rootfs"), std::fs::Permissions::from_mode(0o700)).expect("chmod");
        recycle(&changed).expect("recycle");
        assert!(!changed.exists());
        assert_eq!(std::fs::read_dir(root.join(SPARE)).expect("read").count(), 1);
        // A full pool deletes.
        for i in 0..MAX_SPARES + 2 {
            recycle(&used_container(&root, &format!("d{i}"))).expect("recycle");
        }
        assert_eq!(std::fs::read_dir(root.join(SPARE)).expect("read").count(), MAX_SPARES);
        assert_eq!(std::fs::read_dir(root.join(REMOVING)).expect("read").count(), 0);
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    #[test]
    fn retired_directories_leave_containers_at_once_and_only_old_ones_are_swept() {
        let root = std::env::temp_dir().join(format!("berth-retire-{}", new_id()));
        let dir = ContainerDir::new(&root, "c1");
        std::fs::create_dir_all(dir.upper().join("a/b")).expect("mkdir");
        std::fs::write(dir.state(), "{}").expect("write");
        let to = dir.retire().expect("retire");
        assert_eq!(to, root.join("removing/c1"));
        assert!(!dir.dir.exists() && to.join("state.json").exists());
        // A supervisor may still be deleting a young one: the sweep leaves it.
        sweep_removing(&root);
        assert!(to.exists());
        std::fs::remove_dir_all(&to).expect("delete");
        let other = ContainerDir::new(&root, "c2");
        std::fs::create_dir_all(other.work()).expect("mkdir");
        other.remove().expect("remove");
        // Not a skeleton (no mount point): deleted, not kept.
        assert!(!other.dir.exists() && !root.join("removing/c2").exists() && take_spare(&root).is_none());
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    #[test]
    fn state_round_trips_and_dead_supervisors_show() {
        let root = std::env::temp_dir().join(format!("berth-state-{}-{}", std::process::id(), new_id()));
        let d = ContainerDir::new(&root, "abc");
        std::fs::create_dir_all(&d.dir).unwrap();
        assert_eq!(d.read_state().unwrap().status, Status::Created);
        let s = RunState {
            status: Status::Running,
            pid: Some(1),
            ..Default::default()
        };
        d.write_state(&s).unwrap();
        assert_eq!(d.read_state().unwrap(), s);
        // Nobody holds the lock: the record's "running" is a lie.
        assert_eq!(d.observed_state().unwrap().status, Status::Dead);
        let held = d
            .lock_supervisor(Duration::ZERO)
            .unwrap()
            .expect("nobody else holds it");
        let t = std::time::Instant::now();
        assert!(
            d.lock_supervisor(Duration::from_millis(30)).unwrap().is_none(),
            "a second supervisor is refused"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(30),
            "after waiting its patience out"
        );
        assert!(d.supervisor_alive());
        assert_eq!(d.observed_state().unwrap().status, Status::Running);
        drop(held);
        std::fs::write(d.state(), "{").unwrap();
        assert!(matches!(d.read_state(), Err(RuntimeError::Corrupt { .. })));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
