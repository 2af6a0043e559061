//! `Networks`: the network layer's verbs. Create and remove networks (a bridge in the domain's
//! infra namespace, a subnet from the pool), connect and disconnect endpoints (a kept namespace,
//! one veth pair per network, addresses and the default route), and tear a whole domain down.
//! Every change happens under the state lock and ends by asking the domain's daemon to reload.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::daemon;
use super::ipam::{self, Pool};
use super::netlink::{Netlink, Prefix};
use super::netns;
use super::state::{AttachmentRecord, EndpointRecord, Layout, NetworkRecord, PortRecord, Proto, State};
use super::{NetworkError, Result};
use crate::fsutil::random_hex;

/// What a network should be.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkConfig {
    /// Full name (unique on the host).
    pub name: String,
    /// The domain that serves it: the project name, or the name itself for a standalone network.
    pub domain: String,
    /// No egress.
    pub internal: bool,
    /// A fixed subnet; `None` takes one from the pool.
    pub subnet: Option<Prefix>,
    /// A fixed gateway; `None` is the subnet's first address.
    pub gateway: Option<Ipv4Addr>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// One network an endpoint joins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttachConfig {
    /// The network's full name.
    pub network: String,
    /// A fixed address; `None` takes the next free one.
    pub ipv4_address: Option<Ipv4Addr>,
    /// Extra names on this network.
    pub aliases: Vec<String>,
}

/// A port to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortConfig {
    /// Protocol.
    pub proto: Proto,
    /// Host address; `0.0.0.0` for all.
    pub host_ip: IpAddr,
    /// Host port; 0 picks a free one.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
}

/// What an endpoint should be.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointConfig {
    /// The caller's key for it (unique).
    pub key: String,
    /// Names on every network (container name, service name, hostname).
    pub names: Vec<String>,
    /// Networks, in order (at least one).
    pub networks: Vec<AttachConfig>,
    /// Published ports.
    pub ports: Vec<PortConfig>,
}

/// The network layer, rooted in a state root.
#[derive(Debug, Clone)]
pub struct Networks {
    layout: Layout,
    pool: Pool,
    exe: PathBuf,
}

impl Networks {
    /// The network layer under `state_root`, with the address pool from `BERTH_ADDRESS_POOL` or
    /// the default, and this program as the daemon.
    pub fn new(state_root: &Path) -> Result<Self> {
        let pool = match std::env::var("BERTH_ADDRESS_POOL") {
            Ok(s) if !s.is_empty() => Pool::parse(&s)?,
            _ => Pool::default(),
        };
        Ok(Networks {
            layout: Layout::new(state_root),
            pool,
            exe: PathBuf::from("/proc/self/exe"),
        })
    }

    /// Runs `exe` as the domain daemon (it must dispatch `__netd` like the `berth` binary); for
    /// programs that embed the library but are not `berth`.
    pub fn with_daemon(mut self, exe: PathBuf) -> Self {
        self.exe = exe;
        self
    }

    /// Uses another address pool.
    pub fn with_pool(mut self, pool: Pool) -> Self {
        self.pool = pool;
        self
    }

    /// The paths on disk.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The current state (no lock; a consistent snapshot).
    pub fn state(&self) -> Result<State> {
        self.layout.read()
    }

    /// A network by name.
    pub fn network(&self, name: &str) -> Result<NetworkRecord> {
        self.state()?
            .networks
            .remove(name)
            .ok_or_else(|| NetworkError::NotFound(format!("network {name} not found")))
    }

    /// An endpoint by key.
    pub fn endpoint(&self, key: &str) -> Result<Option<EndpointRecord>> {
        Ok(self.state()?.endpoints.remove(key))
    }

    /// Creates a network, or returns the existing one when its name is taken by an equal config.
    pub fn create_network(&self, cfg: &NetworkConfig) -> Result<NetworkRecord> {
        if cfg.name.is_empty() || cfg.domain.is_empty() {
            return Err(NetworkError::Invalid("a network needs a name and a domain".into()));
        }
        check_name(&cfg.domain, "domain")?;
        let _lock = self.layout.lock()?;
        let mut state = self.layout.read()?;
        if let Some(n) = state.networks.get(&cfg.name) {
            let same = n.domain == cfg.domain
                && n.internal == cfg.internal
                && cfg.subnet.is_none_or(|s| s == n.subnet)
                && cfg.gateway.is_none_or(|g| g == n.gateway);
            return if same {
                Ok(n.clone())
            } else {
                Err(NetworkError::Invalid(format!(
                    "network {} already exists with another configuration (subnet {}, internal {}); remove it first",
                    cfg.name, n.subnet, n.internal
                )))
            };
        }
        let berth: Vec<Prefix> = state.networks.values().map(|n| n.subnet).collect();
        let subnet = match cfg.subnet {
            Some(s) => {
                if let Some(other) = state.networks.values().find(|n| n.subnet.overlaps(&s)) {
                    return Err(NetworkError::Ipam(format!(
                        "subnet {s} overlaps network {} ({})",
                        other.name, other.subnet
                    )));
                }
                s
            }
            None => {
                let mut taken = berth;
                taken.extend(Netlink::open()?.used_prefixes()?);
                self.pool.pick(&taken)?
            }
        };
        let gateway = cfg.gateway.unwrap_or_else(|| ipam::nth(subnet, 1));
        ipam::check_host(subnet, gateway, "gateway")?;
        let id = random_hex(32);
        let record = NetworkRecord {
            name: cfg.name.clone(),
            id: id.clone(),
            domain: cfg.domain.clone(),
            bridge: format!("br-{}", &id[..12]),
            subnet,
            gateway,
            internal: cfg.internal,
            labels: cfg.labels.clone(),
            created: jiff::Timestamp::now().to_string(),
        };
        let infra = self.ensure_infra(&cfg.domain)?;
        let made = netns::run_in(&infra, || {
            let mut nl = Netlink::open()?;
            let index = nl.create_bridge(&record.bridge)?;
            nl.add_address(index, gateway, subnet.len)?;
            nl.set_up(index, None)
        });
        if let Err(e) = made {
            let _ = netns::run_in(&infra, || delete_link(&record.bridge));
            if state.domain_networks(&cfg.domain).next().is_none() {
                let _ = self.remove_domain_files(&cfg.domain);
            }
            return Err(e);
        }
        state.networks.insert(record.name.clone(), record.clone());
        self.layout.write(&state)?;
        self.reload(&state, &cfg.domain)?;
        Ok(record)
    }

    /// Removes a network that no endpoint uses. The last network of a domain takes the domain's
    /// infra namespace and daemon with it.
    pub fn remove_network(&self, name: &str) -> Result<()> {
        let _lock = self.layout.lock()?;
        let mut state = self.layout.read()?;
        let record = state
            .networks
            .get(name)
            .cloned()
            .ok_or_else(|| NetworkError::NotFound(format!("network {name} not found")))?;
        let users: Vec<&str> = state.users(name).map(|e| e.key.as_str()).collect();
        if !users.is_empty() {
            return Err(NetworkError::Invalid(format!(
                "network {name} has active endpoints ({}); remove or disconnect them first",
                users.join(", ")
            )));
        }
        let mut errors = Vec::new();
        let infra = self.layout.infra(&record.domain);
        match netns::open(&infra) {
            Ok(fd) => {
                if let Err(e) = netns::run_in(&fd, || delete_link(&record.bridge)) {
                    errors.push(e.to_string());
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
        state.networks.remove(name);
        self.layout.write(&state)?;
        if state.domain_networks(&record.domain).next().is_none() {
            if let Err(e) = self.remove_domain_files(&record.domain) {
                errors.push(e.to_string());
            }
        } else if let Err(e) = self.reload(&state, &record.domain) {
            errors.push(e.to_string());
        }
        teardown_result(&format!("network {name}"), errors)
    }

    /// Creates an endpoint: its kept namespace, a veth pair per network with its address, the
    /// default route, and its published ports. On failure nothing of it is left.
    pub fn connect(&self, cfg: &EndpointConfig) -> Result<EndpointRecord> {
        check_name(&cfg.key, "endpoint key")?;
        if cfg.networks.is_empty() {
            return Err(NetworkError::Invalid(format!("endpoint {} joins no network", cfg.key)));
        }
        let _lock = self.layout.lock()?;
        let mut state = self.layout.read()?;
        if state.endpoints.contains_key(&cfg.key) {
            return Err(NetworkError::Invalid(format!("endpoint {} already exists", cfg.key)));
        }
        let record = plan_endpoint(&state, cfg, self.layout.endpoint(&cfg.key))?;
        // A connect killed halfway leaves the namespace (and the veths in it) without a record;
        // under the lock, with no record, nothing else owns it.
        if record.netns.exists() {
            netns::remove(&record.netns)?;
        }
        let mut domains = BTreeSet::new();
        for a in &record.attachments {
            domains.insert(state.networks[&a.network].domain.clone());
        }
        if let Err(e) = self.wire(&state, &record) {
            let _ = self.unwire(&state, &record);
            return Err(e);
        }
        state.endpoints.insert(record.key.clone(), record.clone());
        self.layout.write(&state)?;
        // Ports are bound by the primary domain's daemon, which reports the ports it chose.
        let mut failure = None;
        for d in &domains {
            match self.reload(&state, d) {
                Ok(reply) => {
                    if let Some((_, msg)) = reply.errors.iter().find(|(k, _)| *k == record.key) {
                        failure = Some(NetworkError::Invalid(msg.clone()));
                        break;
                    }
                    if let Some(e) = state.endpoints.get_mut(&record.key) {
                        for p in &mut e.ports {
                            if let Some(b) = reply.ports.iter().find(|b| {
                                b.key == record.key
                                    && b.proto == p.proto
                                    && b.host_ip == p.host_ip
                                    && b.host_port == p.host_port
                                    && b.container_port == p.container_port
                            }) {
                                p.bound = b.bound;
                            }
                        }
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            state.endpoints.remove(&record.key);
            self.layout.write(&state)?;
            for d in &domains {
                let _ = self.reload(&state, d);
            }
            let _ = self.unwire(&state, &record);
            return Err(e);
        }
        self.layout.write(&state)?;
        Ok(state.endpoints.remove(&record.key).unwrap_or(record))
    }

    /// Removes an endpoint, its veth pairs, namespace and ports. Absent is fine. Keeps going past
    /// failures and reports them all.
    pub fn disconnect(&self, key: &str) -> Result<()> {
        let _lock = self.layout.lock()?;
        let mut state = self.layout.read()?;
        let Some(record) = state.endpoints.remove(key) else {
            return Ok(());
        };
        self.layout.write(&state)?;
        let mut errors = self.unwire(&state, &record);
        let domains: BTreeSet<String> = record
            .attachments
            .iter()
            .filter_map(|a| state.networks.get(&a.network).map(|n| n.domain.clone()))
            .collect();
        for d in &domains {
            if let Err(e) = self.reload(&state, d) {
                errors.push(e.to_string());
            }
        }
        teardown_result(&format!("endpoint {key}"), errors)
    }

    /// Removes the endpoints `orphaned` picks (those whose container is gone, such as one removed
    /// by its own `--rm` while nobody waited for it); returns their keys. Keeps going past failures
    /// and reports them all.
    pub fn prune_endpoints(&self, orphaned: impl Fn(&EndpointRecord) -> bool) -> Result<Vec<String>> {
        let keys: Vec<String> = self
            .state()?
            .endpoints
            .values()
            .filter(|e| orphaned(e))
            .map(|e| e.key.clone())
            .collect();
        let mut errors = Vec::new();
        for k in &keys {
            if let Err(e) = self.disconnect(k) {
                errors.push(e.to_string());
            }
        }
        teardown_result("orphaned endpoints", errors).map(|()| keys)
    }

    /// Removes a whole domain at once: its daemon first (ports and resolvers close, and nothing is
    /// reloaded per endpoint), then every endpoint on its networks (their namespaces, and so the
    /// veth pairs in them), the networks, and the infra namespace, which takes the bridges with it.
    /// Endpoints that also join another domain's networks lose those links too, and that domain
    /// is reloaded once. Keeps going past failures and reports them all.
    pub fn teardown_domain(&self, domain: &str) -> Result<()> {
        let _lock = self.layout.lock()?;
        let mut state = self.layout.read()?;
        let networks: BTreeSet<String> = state.domain_networks(domain).map(|n| n.name.clone()).collect();
        let endpoints: Vec<EndpointRecord> = state
            .endpoints
            .values()
            .filter(|e| e.attachments.iter().any(|a| networks.contains(&a.network)))
            .cloned()
            .collect();
        let mut errors = Vec::new();
        if let Err(e) = daemon::stop(&self.layout, domain) {
            errors.push(e.to_string());
        }
        let mut others = BTreeSet::new();
        for e in &endpoints {
            for a in e.attachments.iter().filter(|a| !networks.contains(&a.network)) {
                let Some(net) = state.networks.get(&a.network) else {
                    continue;
                };
                others.insert(net.domain.clone());
                if let Err(err) = self.unlink(net, &a.host_ifname) {
                    errors.push(err.to_string());
                }
            }
            if let Err(err) = netns::remove(&e.netns) {
                errors.push(err.to_string());
            }
            state.endpoints.remove(&e.key);
        }
        for n in &networks {
            state.networks.remove(n);
        }
        self.layout.write(&state)?;
        if let Err(e) = self.remove_domain_files(domain) {
            errors.push(e.to_string());
        }
        for d in &others {
            if let Err(e) = self.reload(&state, d) {
                errors.push(e.to_string());
            }
        }
        teardown_result(&format!("domain {domain}"), errors)
    }

    /// The `resolv.conf` for an endpoint whose first network is `network`: the resolver on the
    /// gateway. No search domains: a short name is a service name and must not wander upstream.
    pub fn resolv_conf(&self, network: &str) -> Result<String> {
        let n = self.network(network)?;
        Ok(format!("nameserver {}\noptions ndots:0\n", n.gateway))
    }

    /// The domain's infra namespace, created when missing.
    fn ensure_infra(&self, domain: &str) -> Result<std::os::fd::OwnedFd> {
        let dir = self.layout.domain(domain);
        std::fs::create_dir_all(&dir).map_err(|e| NetworkError::io("create", &dir, e))?;
        let path = self.layout.infra(domain);
        if !path.exists() {
            netns::create(&path)?;
        }
        netns::open(&path)
    }

    /// Stops a domain's daemon and removes its namespace and directory.
    fn remove_domain_files(&self, domain: &str) -> Result<()> {
        let mut errors = Vec::new();
        if let Err(e) = daemon::stop(&self.layout, domain) {
            errors.push(e.to_string());
        }
        if let Err(e) = netns::remove(&self.layout.infra(domain)) {
            errors.push(e.to_string());
        }
        let dir = self.layout.domain(domain);
        if errors.is_empty()
            && let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            errors.push(NetworkError::io("remove", &dir, e).to_string());
        }
        teardown_result(&format!("domain {domain}"), errors)
    }

    /// Starts the domain's daemon if needed and has it load the state; returns what it bound and
    /// what failed. A failure of the domain itself (not of one endpoint) is an error.
    fn reload(&self, state: &State, domain: &str) -> Result<daemon::Reply> {
        if state.domain_networks(domain).next().is_none() {
            return Ok(daemon::Reply::default());
        }
        daemon::ensure(&self.layout, domain, &self.exe)?;
        let reply = daemon::reload(&self.layout, domain)?;
        let general: Vec<String> = reply
            .errors
            .iter()
            .filter(|(k, _)| k.is_empty())
            .map(|(_, m)| m.clone())
            .collect();
        if general.is_empty() {
            Ok(reply)
        } else {
            Err(NetworkError::Daemon {
                domain: domain.to_string(),
                reason: general.join("; "),
            })
        }
    }

    /// Makes the endpoint's namespace and links.
    fn wire(&self, state: &State, e: &EndpointRecord) -> Result<()> {
        netns::create(&e.netns)?;
        let ns = netns::open(&e.netns)?;
        for a in &e.attachments {
            let net = &state.networks[&a.network];
            let infra = netns::open(&self.layout.infra(&net.domain))?;
            netns::run_in(&infra, || {
                let mut nl = Netlink::open()?;
                let bridge = nl.require_link(&net.bridge)?;
                let index = nl.create_veth(&a.host_ifname, &a.ifname, Some(ns.as_raw_fd()))?;
                nl.set_up(index, Some(bridge))
            })?;
        }
        let route = e
            .attachments
            .iter()
            .map(|a| &state.networks[&a.network])
            .find(|n| !n.internal)
            .map(|n| n.gateway);
        netns::run_in(&ns, || {
            let mut nl = Netlink::open()?;
            for a in &e.attachments {
                let net = &state.networks[&a.network];
                let index = nl.require_link(&a.ifname)?;
                nl.add_address(index, a.address, net.subnet.len)?;
                nl.set_up(index, None)?;
            }
            if let Some(gw) = route {
                nl.add_default_route(gw)?;
            }
            Ok(())
        })
    }

    /// Removes the endpoint's links and namespace; returns what failed.
    fn unwire(&self, state: &State, e: &EndpointRecord) -> Vec<String> {
        let mut errors = Vec::new();
        for a in &e.attachments {
            let Some(net) = state.networks.get(&a.network) else {
                continue;
            };
            if let Err(err) = self.unlink(net, &a.host_ifname) {
                errors.push(err.to_string());
            }
        }
        if let Err(err) = netns::remove(&e.netns) {
            errors.push(err.to_string());
        }
        errors
    }

    /// Deletes an endpoint's host-side link from the infra namespace of `net`'s domain.
    fn unlink(&self, net: &NetworkRecord, host_ifname: &str) -> Result<()> {
        let infra = netns::open(&self.layout.infra(&net.domain))?;
        netns::run_in(&infra, || delete_link(host_ifname))
    }
}

/// Deletes a link by name in the current namespace; absent is fine.
fn delete_link(name: &str) -> Result<()> {
    let mut nl = Netlink::open()?;
    match nl.link_index(name)? {
        Some(i) => nl.delete_link(i),
        None => Ok(()),
    }
}

/// The endpoint record for `cfg`: addresses allocated, interface names chosen.
fn plan_endpoint(state: &State, cfg: &EndpointConfig, netns: PathBuf) -> Result<EndpointRecord> {
    let mut attachments = Vec::new();
    for (i, a) in cfg.networks.iter().enumerate() {
        let net = state
            .networks
            .get(&a.network)
            .ok_or_else(|| NetworkError::NotFound(format!("network {} not found", a.network)))?;
        if cfg.networks[..i].iter().any(|b| b.network == a.network) {
            return Err(NetworkError::Invalid(format!(
                "endpoint {} joins {} twice",
                cfg.key, a.network
            )));
        }
        let mut used: BTreeSet<Ipv4Addr> = state
            .users(&net.name)
            .flat_map(|e| {
                e.attachments
                    .iter()
                    .filter(|x| x.network == net.name)
                    .map(|x| x.address)
            })
            .collect();
        used.insert(net.gateway);
        let address = match a.ipv4_address {
            Some(ip) => {
                ipam::check_host(net.subnet, ip, "address")?;
                if used.contains(&ip) {
                    return Err(NetworkError::Ipam(format!(
                        "address {ip} is already in use on {}",
                        net.name
                    )));
                }
                ip
            }
            None => ipam::next_free(net.subnet, &used)?,
        };
        attachments.push(AttachmentRecord {
            network: net.name.clone(),
            ifname: format!("eth{i}"),
            host_ifname: format!("vb{}", random_hex(6)),
            address,
            aliases: a.aliases.clone(),
        });
    }
    Ok(EndpointRecord {
        key: cfg.key.clone(),
        netns,
        names: cfg.names.clone(),
        attachments,
        ports: cfg
            .ports
            .iter()
            .map(|p| PortRecord {
                proto: p.proto,
                host_ip: p.host_ip,
                host_port: p.host_port,
                container_port: p.container_port,
                bound: 0,
            })
            .collect(),
    })
}

/// Names that become file names must be plain.
fn check_name(name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(NetworkError::Invalid(format!(
            "invalid {what} {name:?}: use letters, digits, '_', '.' and '-'"
        )))
    }
}

/// `Ok` when nothing failed, else one `Teardown` error listing every failure.
fn teardown_result(what: &str, errors: Vec<String>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(NetworkError::Teardown {
            what: what.to_string(),
            errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, subnet: &str) -> NetworkRecord {
        let subnet = ipam::parse_prefix(subnet).unwrap();
        NetworkRecord {
            name: name.into(),
            id: "0".repeat(64),
            domain: "p".into(),
            bridge: "br-x".into(),
            subnet,
            gateway: ipam::nth(subnet, 1),
            internal: false,
            labels: BTreeMap::new(),
            created: String::new(),
        }
    }

    #[test]
    fn endpoints_get_the_lowest_free_address_and_fixed_ones_are_checked() {
        let mut state = State::default();
        state.networks.insert("a".into(), net("a", "10.9.0.0/24"));
        state.networks.insert("b".into(), net("b", "10.9.1.0/24"));
        let cfg = EndpointConfig {
            key: "one".into(),
            networks: vec![
                AttachConfig {
                    network: "a".into(),
                    ..Default::default()
                },
                AttachConfig {
                    network: "b".into(),
                    ipv4_address: Some(Ipv4Addr::new(10, 9, 1, 50)),
                    aliases: vec!["db".into()],
                },
            ],
            ..Default::default()
        };
        let one = plan_endpoint(&state, &cfg, "/x".into()).unwrap();
        assert_eq!(one.attachments[0].address, Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(one.attachments[0].ifname, "eth0");
        assert_eq!(one.attachments[1].address, Ipv4Addr::new(10, 9, 1, 50));
        assert_eq!(one.attachments[1].ifname, "eth1");
        assert!(one.attachments[0].host_ifname.len() <= 15);
        state.endpoints.insert("one".into(), one);
        let two = plan_endpoint(
            &state,
            &EndpointConfig {
                key: "two".into(),
                ..cfg.clone()
            },
            "/y".into(),
        );
        let e = two.unwrap_err().to_string();
        assert!(e.contains("10.9.1.50 is already in use on b"), "{e}");
        let mut three = cfg.clone();
        three.networks.truncate(1);
        let three = plan_endpoint(&state, &three, "/z".into()).unwrap();
        assert_eq!(three.attachments[0].address, Ipv4Addr::new(10, 9, 0, 3));
        let mut gw = cfg.clone();
        gw.networks[1].ipv4_address = Some(Ipv4Addr::new(10, 9, 1, 1));
        assert!(
            plan_endpoint(
                &State {
                    endpoints: BTreeMap::new(),
                    ..state.clone()
                },
                &gw,
                "/g".into()
            )
            .is_err()
        );
        let mut missing = cfg;
        missing.networks[0].network = "nope".into();
        assert!(
            plan_endpoint(&state, &missing, "/m".into())
                .unwrap_err()
                .to_string()
                .contains("network nope not found")
        );
    }

    #[test]
    fn names_are_plain() {
        assert!(check_name("proj_default-1.x", "domain").is_ok());
        assert!(check_name("../x", "domain").is_err());
        assert!(check_name("", "domain").is_err());
        assert!(check_name(".hidden", "domain").is_err());
    }
}
