//! `ContainerSpec`: the runtime's own description of one container. It is built by callers (the
//! `container` commands, later the reconciler) and knows nothing of Compose.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use super::health::Healthcheck;

/// Everything the runtime needs to create and run one container.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerSpec {
    /// Unique name, e.g. `web-1`.
    pub name: String,
    /// Image reference shown by `ps`, or the rootfs path when run from a directory.
    pub image: String,
    /// Id of the image the root file system comes from (empty for a rootfs directory); the image store
    /// refuses to remove an image a container names here.
    #[serde(default)]
    pub image_id: String,
    /// Root filesystem.
    pub rootfs: RootfsSpec,
    /// The process to run.
    pub process: ProcessSpec,
    /// Host name inside the container (default: the first 12 characters of the id).
    pub hostname: Option<String>,
    /// NIS domain name inside the container.
    pub domainname: Option<String>,
    /// Volumes, bind mounts and tmpfs mounts, in order.
    pub mounts: Vec<MountSpec>,
    /// Which network namespace the container gets.
    pub network: NetworkSpec,
    /// Extra `/etc/hosts` entries (`host`, `address`).
    pub extra_hosts: Vec<(String, String)>,
    /// `/etc/resolv.conf` contents; `None` copies the host's, without loopback name servers.
    pub resolv_conf: Option<String>,
    /// cgroup limits.
    pub resources: Resources,
    /// Capabilities, seccomp and friends.
    pub security: SecuritySpec,
    /// Namespaced sysctls (`net.*`, `kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`).
    pub sysctls: BTreeMap<String, String>,
    /// Size of /dev/shm in bytes (default 64 MiB, as Docker).
    pub shm_size: Option<u64>,
    /// Run a small init as PID 1 that reaps zombies and forwards signals.
    pub init: bool,
    /// When the supervisor restarts the process.
    pub restart: RestartPolicy,
    /// Signal sent by `stop` (default SIGTERM).
    pub stop_signal: Option<String>,
    /// Seconds `stop` waits before SIGKILL (default 10).
    pub stop_timeout: Option<u64>,
    /// Labels, for callers to find their containers.
    pub labels: BTreeMap<String, String>,
    /// Remove the container when its process exits and no restart applies.
    pub auto_remove: bool,
    /// Docker's healthcheck, run by the supervisor; `None` (or a `NONE` test) for none.
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
}

impl ContainerSpec {
    /// The signal `stop` sends: `stop_signal` (checked when the container is created), or SIGTERM.
    pub fn stop_signal_or_default(&self) -> nix::sys::signal::Signal {
        self.stop_signal
            .as_deref()
            .and_then(|s| super::process::parse_signal(s).ok())
            .unwrap_or(nix::sys::signal::Signal::SIGTERM)
    }

    /// Seconds `stop` waits before SIGKILL: `stop_timeout`, or Docker's 10.
    pub fn stop_timeout_or_default(&self) -> u64 {
        self.stop_timeout.unwrap_or(10)
    }
}

/// The layers of the root filesystem.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RootfsSpec {
    /// Read-only lower directories, top-most first (overlayfs `lowerdir` order).
    pub layers: Vec<PathBuf>,
    /// Mount the root filesystem read-only.
    pub read_only: bool,
}

/// The container's main process.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessSpec {
    /// argv; the first element is looked up in the container's `PATH` when it has no `/`.
    pub args: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`; empty means root.
    pub user: String,
    /// Extra supplementary groups (names or gids).
    pub group_add: Vec<String>,
    /// Working directory, absolute; created when missing (default `/`).
    pub working_dir: Option<String>,
    /// Allocate a pseudo-terminal.
    pub tty: bool,
    /// Keep stdin open (attachable).
    pub stdin: bool,
    /// File mode creation mask (default 0022).
    pub umask: Option<u32>,
    /// Resource limits by name (`nofile`, `nproc`, …): soft and hard.
    pub rlimits: BTreeMap<String, (u64, u64)>,
}

/// One mount inside the container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MountSpec {
    /// What is mounted.
    pub kind: MountKind,
    /// Absolute path inside the container.
    pub target: String,
    /// Mount read-only.
    pub read_only: bool,
}

/// The source of a mount.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum MountKind {
    /// A host file or directory.
    Bind {
        /// Absolute host path.
        source: PathBuf,
        /// `rprivate` (default), `private`, `rshared`, `shared`, `rslave`, `slave`.
        propagation: Option<String>,
    },
    /// A named volume's directory on the host.
    Volume {
        /// Absolute host path of the volume's data.
        source: PathBuf,
    },
    /// A tmpfs.
    Tmpfs {
        /// Size in bytes (default: the kernel's, half of RAM).
        size: Option<u64>,
        /// Mode of the root directory (default 01777).
        mode: Option<u32>,
    },
}

/// The network namespace of a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "mode", content = "path")]
pub enum NetworkSpec {
    /// A new namespace with only loopback, up.
    #[default]
    None,
    /// The host's namespace.
    Host,
    /// An existing namespace, given by a path such as `/run/netns/x` or `/proc/PID/ns/net`.
    Path(PathBuf),
}

/// cgroup limits. `None` leaves the kernel's default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Resources {
    /// Hard memory limit in bytes.
    pub memory: Option<u64>,
    /// Soft memory limit (reservation) in bytes.
    pub memory_reservation: Option<u64>,
    /// CPU quota in CPUs (1.5 = 150 ms per 100 ms period).
    pub cpus: Option<f64>,
    /// Relative CPU weight (Docker's shares, default 1024).
    pub cpu_shares: Option<u64>,
    /// Maximum number of tasks; `-1` or `None` is unlimited.
    pub pids_limit: Option<i64>,
}

/// Confinement of the process.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SecuritySpec {
    /// Lift all confinement: all capabilities, no seccomp, no masked paths, all devices.
    pub privileged: bool,
    /// Capabilities added to Docker's default set (`NET_ADMIN` or `CAP_NET_ADMIN`, or `ALL`).
    pub cap_add: Vec<String>,
    /// Capabilities removed from it (or `ALL`).
    pub cap_drop: Vec<String>,
    /// Set `no_new_privs`, so setuid binaries gain nothing.
    pub no_new_privileges: bool,
    /// Run without a seccomp filter (`seccomp=unconfined`).
    pub seccomp_unconfined: bool,
}

impl SecuritySpec {
    /// Applies one of Docker's `--security-opt`/`security_opt` values: `no-new-privileges[:true|:false]`
    /// or `seccomp=unconfined`.
    pub fn apply_option(&mut self, option: &str) -> Result<(), String> {
        match option {
            "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true" => self.no_new_privileges = true,
            "no-new-privileges:false" | "no-new-privileges=false" => self.no_new_privileges = false,
            "seccomp=unconfined" | "seccomp:unconfined" => self.seccomp_unconfined = true,
            other => return Err(format!("unsupported security option {other:?}")),
        }
        Ok(())
    }
}

/// When the supervisor restarts the container's process.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", tag = "name", content = "max_retries")]
pub enum RestartPolicy {
    /// Never.
    #[default]
    No,
    /// Always, unless stopped by a command.
    Always,
    /// When it exits non-zero, at most N times if given.
    OnFailure(Option<u32>),
    /// Like `always`, but a stopped container stays stopped across restarts of the host.
    UnlessStopped,
}

impl RestartPolicy {
    /// Parses Docker's syntax: `no`, `always`, `on-failure`, `on-failure:N`, `unless-stopped`.
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => RestartPolicy::OnFailure(None),
            _ => match s.strip_prefix("on-failure:") {
                Some(n) => RestartPolicy::OnFailure(Some(
                    n.parse()
                        .map_err(|_| format!("invalid restart policy {s:?}: bad retry count"))?,
                )),
                None => return Err(format!("invalid restart policy {s:?}")),
            },
        })
    }
}
