//! The per-domain network daemon (`berth __netd ROOT DOMAIN`) and its client. The daemon runs in
//! the host network namespace and outlives the CLI. It holds the sockets that cross into the
//! domain's infra namespace: the DNS resolver on each network's gateway, the published-port
//! proxies, and the egress listener that nftables redirects containers' outbound TCP to. It keeps
//! no state of its own: on `reload` it re-reads `state.json` and converges on it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::dns::{DnsTable, Resolver};
use super::nft::{self, EgressBridge};
use super::proxy::{self, ProxyHandle};
use super::state::{Layout, Proto, State};
use super::{NetworkError, Result, netns};
use crate::fsutil::{Lock, LockMode};

/// The hidden subcommand that runs the daemon.
pub const SUBCOMMAND: &str = "__netd";

/// The nftables table the daemon owns in an infra namespace.
const TABLE: &str = "berth";

/// How long an idle UDP flow through a published port is kept.
const UDP_IDLE: Duration = Duration::from_secs(30);

/// A request on the control socket (one JSON line).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    /// Re-read the state and converge.
    Reload,
    /// Exit.
    Stop,
}

/// A port the daemon listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundPort {
    /// The endpoint.
    pub key: String,
    /// Protocol.
    pub proto: Proto,
    /// Host address.
    pub host_ip: IpAddr,
    /// The requested host port (0 = any).
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// The port bound.
    pub bound: u16,
}

/// The daemon's answer to `reload`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    /// Every published port it listens on.
    pub ports: Vec<BoundPort>,
    /// Failures, by endpoint key ("" for the domain itself).
    pub errors: Vec<(String, String)>,
}

/// Starts the domain's daemon unless it runs, and waits until its control socket answers.
pub fn ensure(layout: &Layout, domain: &str, exe: &Path) -> Result<()> {
    let lock = layout.daemon_lock(domain);
    let fail = |reason: String| NetworkError::Daemon {
        domain: domain.to_string(),
        reason,
    };
    match Lock::try_take(&lock, LockMode::Exclusive) {
        Ok(None) => return Ok(()),
        Ok(Some(_free)) => {}
        Err(e) => return Err(NetworkError::io("lock", &lock, e)),
    }
    let log_path = layout.daemon_log(domain);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| NetworkError::io("open", &log_path, e))?;
    let err = log.try_clone().map_err(|e| NetworkError::io("open", &log_path, e))?;
    let _ = std::fs::remove_file(layout.socket(domain));
    let mut cmd = std::process::Command::new(exe);
    cmd.arg0("berth-netd")
        .arg(SUBCOMMAND)
        .arg(&layout.root)
        .arg(domain)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from the CLI's session so
    // that a terminal hang-up or Ctrl-C does not reach it.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start {}: {e}", exe.display())))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if UnixStream::connect(layout.socket(domain)).is_ok() {
            // Reaped by whoever outlives it; the CLI exits soon and the daemon is re-parented.
            std::mem::forget(child);
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last = tail.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
            return Err(fail(format!("exited at start ({status}): {last}")));
        }
        if Instant::now() > deadline {
            return Err(fail("did not answer within 10 s".into()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Asks the domain's daemon to converge on the current state; returns what it bound and what failed.
pub fn reload(layout: &Layout, domain: &str) -> Result<Reply> {
    let reply = call(layout, domain, &Request::Reload)?;
    serde_json::from_str(&reply).map_err(|e| NetworkError::Daemon {
        domain: domain.to_string(),
        reason: format!("bad reply {reply:?}: {e}"),
    })
}

/// Stops the domain's daemon (absent is fine) and waits until it is gone.
pub fn stop(layout: &Layout, domain: &str) -> Result<()> {
    // No lock file: the domain is gone (its last network took the daemon with it).
    if !layout.daemon_lock(domain).exists() {
        return Ok(());
    }
    if Lock::try_take(&layout.daemon_lock(domain), LockMode::Exclusive)
        .ok()
        .flatten()
        .is_some()
    {
        return Ok(());
    }
    let _ = call(layout, domain, &Request::Stop);
    let deadline = Instant::now() + Duration::from_secs(10);
    let lock = layout.daemon_lock(domain);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = Lock::try_take(&lock, LockMode::Exclusive) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(NetworkError::Daemon {
        domain: domain.to_string(),
        reason: "did not stop within 10 s".into(),
    })
}

/// Sends one request line and reads the one reply line.
fn call(layout: &Layout, domain: &str, req: &Request) -> Result<String> {
    let path = layout.socket(domain);
    let fail = |reason: String| NetworkError::Daemon {
        domain: domain.to_string(),
        reason,
    };
    let mut s = UnixStream::connect(&path).map_err(|e| fail(format!("connect {}: {e}", path.display())))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut line = serde_json::to_string(req).map_err(|e| fail(e.to_string()))?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(|e| fail(format!("send: {e}")))?;
    let mut reply = String::new();
    BufReader::new(s)
        .read_line(&mut reply)
        .map_err(|e| fail(format!("read reply: {e}")))?;
    Ok(reply)
}

/// Entry point of `berth __netd ROOT DOMAIN`; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let [root, domain] = args else {
        eprintln!("usage: berth {SUBCOMMAND} NETWORKS_ROOT DOMAIN");
        return 2;
    };
    // It outlives the CLI that started it: nothing that CLI's caller left open (a shell's extra pipe, say) may
    // stay open with it. Only stdin, stdout and stderr are meant for it.
    // SAFETY: nothing in this process has opened a descriptor from 3 up.
    unsafe { crate::fsutil::close_from(3) };
    let layout = Layout { root: root.into() };
    match run(&layout, domain) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth-netd {domain}: {e}");
            1
        }
    }
}

/// The daemon's life: take the lock, open the infra namespace, serve the control socket.
fn run(layout: &Layout, domain: &str) -> Result<()> {
    let lock_path = layout.daemon_lock(domain);
    let Some(_lock) =
        Lock::try_take(&lock_path, LockMode::Exclusive).map_err(|e| NetworkError::io("lock", &lock_path, e))?
    else {
        return Ok(()); // another daemon serves this domain
    };
    let infra = Arc::new(netns::open(&layout.infra(domain))?);
    let upstreams = upstreams()?;
    let mut daemon = Daemon {
        domain: domain.to_string(),
        sockets: SocketFactory::start(&infra)?,
        infra,
        resolver: Resolver::new(DnsTable::new(), upstreams),
        dns: BTreeMap::new(),
        ports: BTreeMap::new(),
        egress: None,
    };
    let path = layout.socket(domain);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| NetworkError::io("listen on", &path, e))?;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let mut line = String::new();
        let mut reader = BufReader::new(&conn);
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        match serde_json::from_str::<Request>(&line) {
            Ok(Request::Reload) => {
                let reply = daemon.reload(layout);
                let mut text = serde_json::to_string(&reply).unwrap_or_else(|_| "{}".into());
                text.push('\n');
                let _ = (&conn).write_all(text.as_bytes());
            }
            Ok(Request::Stop) => {
                let _ = (&conn).write_all(b"{}\n");
                break;
            }
            Err(e) => {
                let _ = writeln!(&conn, "{{\"error\":{:?}}}", e.to_string());
            }
        }
    }
    let _ = std::fs::remove_file(&path);
    daemon.shutdown();
    Ok(())
}

/// The resolvers unknown names are forwarded to: `BERTH_DNS_UPSTREAMS` (comma-separated
/// `ip` or `ip:port`), else the host's `/etc/resolv.conf`. Loopback resolvers work, since the
/// daemon forwards from the host namespace.
fn upstreams() -> Result<Vec<SocketAddr>> {
    match std::env::var("BERTH_DNS_UPSTREAMS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|s| {
                let s = s.trim();
                s.parse::<SocketAddr>()
                    .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| NetworkError::Invalid(format!("invalid BERTH_DNS_UPSTREAMS entry {s:?}")))
            })
            .collect(),
        _ => Ok(super::dns::upstreams_from_resolv_conf(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        )),
    }
}

/// Identity of a published port: what the state asks for.
type PortKey = (String, Proto, IpAddr, u16, u16);

/// What the daemon serves right now.
struct Daemon {
    domain: String,
    infra: Arc<OwnedFd>,
    sockets: SocketFactory,
    resolver: Arc<Resolver>,
    /// Per gateway: the UDP and TCP DNS sockets' raw fds (to shut them down) and serve threads.
    dns: BTreeMap<Ipv4Addr, DnsListener>,
    /// Per published port: the proxy, the port bound and the container address it targets.
    ports: BTreeMap<PortKey, (ProxyHandle, u16, SocketAddrV4)>,
    /// The egress listener and its port.
    egress: Option<(ProxyHandle, u16, Vec<EgressBridge>)>,
}

/// A resolver's two sockets on one gateway address.
struct DnsListener {
    udp: OwnedFd,
    tcp: OwnedFd,
}

impl Daemon {
    /// Converges on the state file.
    fn reload(&mut self, layout: &Layout) -> Reply {
        let mut reply = Reply::default();
        let state = match layout.read() {
            Ok(s) => s,
            Err(e) => {
                reply.errors.push((String::new(), e.to_string()));
                return reply;
            }
        };
        self.resolver.set_table(dns_table(&state, &self.domain));
        if let Err(e) = self.converge_dns(&state) {
            reply.errors.push((String::new(), e.to_string()));
        }
        if let Err(e) = self.converge_egress(&state) {
            reply.errors.push((String::new(), e.to_string()));
        }
        self.converge_ports(&state, &mut reply);
        reply
    }

    /// One resolver per gateway of the domain's networks.
    fn converge_dns(&mut self, state: &State) -> Result<()> {
        let wanted: BTreeSet<Ipv4Addr> = state.domain_networks(&self.domain).map(|n| n.gateway).collect();
        let gone: Vec<Ipv4Addr> = self.dns.keys().filter(|g| !wanted.contains(g)).copied().collect();
        for g in gone {
            if let Some(l) = self.dns.remove(&g) {
                proxy::shutdown_raw(l.udp.as_raw_fd());
                proxy::shutdown_raw(l.tcp.as_raw_fd());
            }
        }
        for gw in wanted {
            if self.dns.contains_key(&gw) {
                continue;
            }
            let addr = SocketAddr::from((gw, 53));
            let (udp, tcp) = netns::run_in(&*self.infra, || {
                let udp = UdpSocket::bind(addr).map_err(|e| NetworkError::sys(format!("bind dns {addr}/udp"), e))?;
                let tcp = TcpListener::bind(addr).map_err(|e| NetworkError::sys(format!("bind dns {addr}/tcp"), e))?;
                Ok((udp, tcp))
            })?;
            let listener = DnsListener {
                udp: dup(&udp)?,
                tcp: dup(&tcp)?,
            };
            let r = self.resolver.clone();
            std::thread::spawn(move || r.serve_udp(udp));
            let r = self.resolver.clone();
            std::thread::spawn(move || r.serve_tcp(tcp));
            self.dns.insert(gw, listener);
        }
        Ok(())
    }

    /// The egress listener and the nftables rules that send non-internal bridges' TCP to it.
    fn converge_egress(&mut self, state: &State) -> Result<()> {
        let bridges: Vec<EgressBridge> = state
            .domain_networks(&self.domain)
            .filter(|n| !n.internal)
            .map(|n| EgressBridge {
                ifname: n.bridge.clone(),
                subnet: n.subnet.addr,
                prefix_len: n.subnet.len,
            })
            .collect();
        if let Some((_, _, current)) = &self.egress
            && *current == bridges
        {
            return Ok(());
        }
        let port = match &self.egress {
            Some((_, port, _)) => *port,
            None => {
                let listener = netns::run_in(&*self.infra, || {
                    TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))
                        .map_err(|e| NetworkError::sys("bind egress listener", e))
                })?;
                let port = listener
                    .local_addr()
                    .map_err(|e| NetworkError::sys("egress listener address", e))?
                    .port();
                let handle = proxy::egress_tcp(listener);
                self.egress = Some((handle, port, Vec::new()));
                port
            }
        };
        let rules = bridges.clone();
        netns::run_in(&*self.infra, move || nft::apply_egress(TABLE, port, &rules))?;
        if let Some(e) = &mut self.egress {
            e.2 = bridges;
        }
        Ok(())
    }

    /// A proxy per published port of the endpoints whose first network is in this domain.
    fn converge_ports(&mut self, state: &State, reply: &mut Reply) {
        let mut wanted: BTreeMap<PortKey, SocketAddrV4> = BTreeMap::new();
        for e in state.endpoints.values() {
            if state.primary_domain(e) != Some(self.domain.as_str()) {
                continue;
            }
            let Some(first) = e.attachments.first() else { continue };
            for p in &e.ports {
                let key = (e.key.clone(), p.proto, p.host_ip, p.host_port, p.container_port);
                wanted.insert(key, SocketAddrV4::new(first.address, p.container_port));
            }
        }
        let stale: Vec<PortKey> = self
            .ports
            .iter()
            .filter(|(k, (_, _, target))| wanted.get(*k) != Some(target))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some((h, _, _)) = self.ports.remove(&k) {
                h.stop();
            }
        }
        for (key, target) in wanted {
            if !self.ports.contains_key(&key) {
                match self.publish(&key, target) {
                    Ok(entry) => {
                        self.ports.insert(key.clone(), entry);
                    }
                    Err(e) => {
                        reply.errors.push((key.0.clone(), e.to_string()));
                        continue;
                    }
                }
            }
            let (_, bound, _) = &self.ports[&key];
            reply.ports.push(BoundPort {
                key: key.0.clone(),
                proto: key.1,
                host_ip: key.2,
                host_port: key.3,
                container_port: key.4,
                bound: *bound,
            });
        }
    }

    /// Binds one published port on the host and starts its proxy into the infra namespace.
    fn publish(&self, key: &PortKey, target: SocketAddrV4) -> Result<(ProxyHandle, u16, SocketAddrV4)> {
        let (_, proto, host_ip, host_port, _) = key;
        let addr = SocketAddr::new(*host_ip, *host_port);
        let sockets = self.sockets.clone();
        let handle = match proto {
            Proto::Tcp => {
                let listener = proxy::bind_tcp(addr)?;
                let connect: proxy::TcpConnector = Arc::new(move || sockets.connect_tcp(target));
                proxy::forward_tcp(listener, connect)
            }
            Proto::Udp => {
                let socket = proxy::bind_udp(addr)?;
                let connect: proxy::UdpConnector = Arc::new(move || sockets.connect_udp(target));
                proxy::forward_udp(socket, connect, UDP_IDLE)
            }
        };
        let bound = handle.local_addr().port();
        Ok((handle, bound, target))
    }

    /// Closes every socket.
    fn shutdown(self) {
        for (_, l) in self.dns {
            proxy::shutdown_raw(l.udp.as_raw_fd());
            proxy::shutdown_raw(l.tcp.as_raw_fd());
        }
        for (_, (h, _, _)) in self.ports {
            h.stop();
        }
        if let Some((h, _, _)) = self.egress {
            h.stop();
        }
    }
}

/// The names each network of the domain resolves: every endpoint's names, aliases on that
/// network, and which networks each asking address is on.
fn dns_table(state: &State, domain: &str) -> DnsTable {
    let mut table = DnsTable::new();
    let ours: BTreeSet<&str> = state.domain_networks(domain).map(|n| n.name.as_str()).collect();
    for e in state.endpoints.values() {
        let addrs: Vec<(String, IpAddr)> = e
            .attachments
            .iter()
            .map(|a| (a.network.clone(), IpAddr::V4(a.address)))
            .collect();
        table.add_endpoint(&addrs);
        for a in &e.attachments {
            if !ours.contains(a.network.as_str()) {
                continue;
            }
            for name in e.names.iter().chain(&a.aliases) {
                table.add_name(&a.network, name, IpAddr::V4(a.address));
            }
        }
    }
    table
}

/// Makes sockets inside the infra namespace for the proxies. One thread lives there for the
/// daemon's life and answers requests over a channel, so no proxy thread ever switches namespace
/// (a socket keeps the namespace it was made in; connecting it can happen on any thread).
#[derive(Clone)]
struct SocketFactory {
    requests: std::sync::mpsc::Sender<SocketRequest>,
}

/// One socket wanted: its type, and where to send it.
type SocketRequest = (
    nix::sys::socket::SockType,
    std::sync::mpsc::SyncSender<std::io::Result<OwnedFd>>,
);

impl SocketFactory {
    /// Starts the thread in `infra`.
    fn start(infra: &OwnedFd) -> Result<Self> {
        let ns = dup(infra)?;
        let (tx, rx) = std::sync::mpsc::channel::<SocketRequest>();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("infra-sockets".into())
            .spawn(move || {
                let entered = netns::enter(&ns);
                let failed = entered.is_err();
                let _ = ready_tx.send(entered);
                if failed {
                    return;
                }
                for (kind, reply) in rx {
                    let made = nix::sys::socket::socket(
                        nix::sys::socket::AddressFamily::Inet,
                        kind,
                        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
                        None,
                    );
                    let _ = reply.send(made.map_err(std::io::Error::from));
                }
            })
            .map_err(|e| NetworkError::sys("start the infra socket thread", e))?;
        ready_rx
            .recv()
            .map_err(|_| NetworkError::Invalid("the infra socket thread died".into()))??;
        Ok(SocketFactory { requests: tx })
    }

    /// A new IPv4 socket of `kind` in the infra namespace.
    fn socket(&self, kind: nix::sys::socket::SockType) -> std::io::Result<OwnedFd> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.requests
            .send((kind, tx))
            .map_err(|_| std::io::Error::other("the infra socket thread is gone"))?;
        rx.recv()
            .map_err(|_| std::io::Error::other("the infra socket thread is gone"))?
    }

    /// A TCP connection to `target` from inside the infra namespace.
    fn connect_tcp(&self, target: SocketAddrV4) -> std::io::Result<TcpStream> {
        let fd = self.socket(nix::sys::socket::SockType::Stream)?;
        nix::sys::socket::connect(fd.as_raw_fd(), &nix::sys::socket::SockaddrIn::from(target))?;
        Ok(TcpStream::from(fd))
    }

    /// A UDP socket connected to `target`, inside the infra namespace.
    fn connect_udp(&self, target: SocketAddrV4) -> std::io::Result<UdpSocket> {
        let fd = self.socket(nix::sys::socket::SockType::Datagram)?;
        nix::sys::socket::connect(fd.as_raw_fd(), &nix::sys::socket::SockaddrIn::from(target))?;
        Ok(UdpSocket::from(fd))
    }
}

/// A second descriptor of a socket, kept to shut it down from outside its serving thread.
fn dup(s: &impl AsFd) -> Result<OwnedFd> {
    s.as_fd()
        .try_clone_to_owned()
        .map_err(|e| NetworkError::sys("dup socket", e))
}
