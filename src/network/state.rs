//! The network layer's state on disk: one `state.json` of every network and endpoint, replaced
//! atomically under `state.lock`, and the per-domain directories (infra namespace, daemon socket
//! and lock). Readers that cannot take the lock (the daemon) still see a whole file.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::netlink::Prefix;
use super::{NetworkError, Result};
use crate::fsutil::{Lock, LockMode, write_atomic};

/// A network: one bridge in its domain's infra namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// The full name (`myproject_default`).
    pub name: String,
    /// 64 hex digits.
    pub id: String,
    /// The domain (project, or the network's own name for standalone networks) whose infra
    /// namespace and daemon serve it.
    pub domain: String,
    /// The bridge's name in the infra namespace.
    pub bridge: String,
    /// The subnet.
    pub subnet: Prefix,
    /// The gateway: the bridge's address, where the resolver listens.
    pub gateway: Ipv4Addr,
    /// No egress.
    pub internal: bool,
    /// Labels, as given.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// RFC 3339 creation time.
    pub created: String,
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One published port of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRecord {
    /// Protocol.
    pub proto: Proto,
    /// The host address listened on (`0.0.0.0`, `::`, `127.0.0.1`, …).
    pub host_ip: IpAddr,
    /// The requested host port; 0 picks one.
    pub host_port: u16,
    /// The container's port.
    pub container_port: u16,
    /// The host port actually bound by the daemon (0 until it is).
    #[serde(default)]
    pub bound: u16,
}

/// One network an endpoint is attached to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    /// The network's full name.
    pub network: String,
    /// The interface inside the container (`eth0`, `eth1`, …).
    pub ifname: String,
    /// The bridge-side interface in the infra namespace.
    pub host_ifname: String,
    /// The endpoint's address.
    pub address: Ipv4Addr,
    /// Extra names on this network only.
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// A container's network namespace and its attachments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// The endpoint's key, chosen by the caller (a container id or name).
    pub key: String,
    /// The kept namespace the container joins.
    pub netns: PathBuf,
    /// Names it answers to on every network it is on (container name, service name, hostname).
    #[serde(default)]
    pub names: Vec<String>,
    /// Its networks, in order: the first non-internal one carries the default route.
    pub attachments: Vec<AttachmentRecord>,
    /// Published ports, proxied to the address on the first network.
    #[serde(default)]
    pub ports: Vec<PortRecord>,
}

/// Everything the network layer knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// By full name.
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkRecord>,
    /// By key.
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointRecord>,
}

impl State {
    /// Networks served by `domain`.
    pub fn domain_networks<'a>(&'a self, domain: &'a str) -> impl Iterator<Item = &'a NetworkRecord> + 'a {
        self.networks.values().filter(move |n| n.domain == domain)
    }

    /// Endpoints attached to `network`.
    pub fn users<'a>(&'a self, network: &'a str) -> impl Iterator<Item = &'a EndpointRecord> + 'a {
        self.endpoints
            .values()
            .filter(move |e| e.attachments.iter().any(|a| a.network == network))
    }

    /// The domain whose daemon proxies an endpoint's ports: that of its first network.
    pub fn primary_domain(&self, e: &EndpointRecord) -> Option<&str> {
        let first = e.attachments.first()?;
        self.networks.get(&first.network).map(|n| n.domain.as_str())
    }
}

/// The paths of the network layer under `<state root>/networks`.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `<state root>/networks`.
    pub root: PathBuf,
}

impl Layout {
    /// The layout under a state root.
    pub fn new(state_root: &Path) -> Self {
        Layout {
            root: state_root.join("networks"),
        }
    }

    /// `state.json`.
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// A domain's directory.
    pub fn domain(&self, domain: &str) -> PathBuf {
        self.root.join("domains").join(domain)
    }

    /// A domain's kept infra namespace.
    pub fn infra(&self, domain: &str) -> PathBuf {
        self.domain(domain).join("infra")
    }

    /// A domain daemon's control socket.
    pub fn socket(&self, domain: &str) -> PathBuf {
        self.domain(domain).join("netd.sock")
    }

    /// The lock a domain daemon holds for its whole life.
    pub fn daemon_lock(&self, domain: &str) -> PathBuf {
        self.domain(domain).join("netd.lock")
    }

    /// A domain daemon's log.
    pub fn daemon_log(&self, domain: &str) -> PathBuf {
        self.domain(domain).join("netd.log")
    }

    /// An endpoint's kept namespace.
    pub fn endpoint(&self, key: &str) -> PathBuf {
        self.root.join("endpoints").join(key)
    }

    /// Reads the state without the lock (the file is only ever replaced whole).
    pub fn read(&self) -> Result<State> {
        let path = self.state();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| NetworkError::io("parse", &path, std::io::Error::new(std::io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(NetworkError::io("read", &path, e)),
        }
    }

    /// Takes the state lock, for a read-modify-write.
    pub fn lock(&self) -> Result<Lock> {
        for d in [self.root.join("domains"), self.root.join("endpoints")] {
            std::fs::create_dir_all(&d).map_err(|e| NetworkError::io("create", &d, e))?;
        }
        let path = self.root.join("state.lock");
        Lock::take(&path, LockMode::Exclusive).map_err(|e| NetworkError::io("lock", &path, e))
    }

    /// Replaces the state (the caller holds the lock).
    pub fn write(&self, state: &State) -> Result<()> {
        let path = self.state();
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| NetworkError::io("encode", &path, e.into()))?;
        write_atomic(&path, &bytes, false).map_err(|e| NetworkError::io("write", &path, e))
    }
}
