//! Userland forwarding across the namespace boundary: published ports (TCP connections and UDP
//! flows from the host into the infra namespace), transparent egress (`SO_ORIGINAL_DST`), and
//! bind errors that name the holder of a port.
//!
//! Design:
//! - One accept thread per TCP forwarder, and one worker thread per open TCP connection, taken
//!   from the forwarder's own pool of waiting workers (a new one is started when none waits;
//!   workers idle for 30 s end). The worker opens the upstream side (so a connector may move it
//!   into another namespace: the pool is per forwarder, so its threads only ever run that
//!   forwarder's connector) and relays both directions in a single `poll` loop over non-blocking
//!   sockets.
//! - Bytes move with `splice(2)` through one pipe per direction (zero copy). If the kernel refuses
//!   to splice a socket (`EINVAL`), that direction falls back to `read`/`write` through a buffer.
//! - When one side reaches end of stream, the other side's write half is shut down
//!   (`shutdown(SHUT_WR)`); the connection ends once both directions have ended. A reset or write
//!   error on either side resets both (`SO_LINGER` 0), so an abort is seen as an abort.
//! - UDP: one thread per forwarder with an `epoll` set over the listening socket and one connected
//!   upstream socket per client address (a flow). Flows idle longer than the given time are
//!   dropped, and the table holds at most [`MAX_UDP_FLOWS`], the least recently active evicted.
//! - Stopping closes the listener, wakes and joins the forwarder's thread, and cuts the TCP
//!   connections still open (`shutdown(SHUT_RDWR)` on both sides).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{
    Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag};

use super::{NetworkError, Result};

/// Opens the upstream side of a forwarded TCP connection (in the right namespace). It is called
/// on a worker thread of the forwarder, which serves only this forwarder's connections: the
/// connector may leave that thread in another network namespace.
pub type TcpConnector = Arc<dyn Fn() -> io::Result<TcpStream> + Send + Sync>;

/// Opens a connected UDP socket towards the target (in the right namespace). It is called on the
/// forwarder's thread, which creates no socket of its own once started: the connector may leave
/// that thread in another network namespace.
pub type UdpConnector = Arc<dyn Fn() -> io::Result<UdpSocket> + Send + Sync>;

/// A sensible idle time for UDP flows: long enough for request/response protocols and keepalives
/// every few seconds, short enough not to pin sockets (Docker's `docker-proxy` uses 90 s).
pub const DEFAULT_UDP_IDLE: Duration = Duration::from_secs(30);

/// The most UDP flows one forwarder keeps; a new client beyond it evicts the least recently
/// active flow.
pub const MAX_UDP_FLOWS: usize = 1024;

/// How long egress waits for the real destination to accept a connection.
const EGRESS_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The listen backlog (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: libc::c_int = 4096;

/// The most bytes one `splice` call is asked to move.
const SPLICE_CHUNK: usize = 1 << 20;

/// The size of the relay pipes, when the kernel allows it (the default is 64 KiB).
const PIPE_SIZE: libc::c_int = 256 << 10;

/// The buffer of a direction relayed with `read`/`write`.
const COPY_BUF: usize = 64 << 10;

/// The largest UDP datagram.
const UDP_BUF: usize = 65536;

/// Datagrams moved for one ready socket before the others get a turn.
const UDP_BATCH: usize = 64;

/// How long a connection worker waits for the next connection before it ends.
const WORKER_IDLE: Duration = Duration::from_secs(30);

/// The most workers a forwarder keeps waiting for connections.
const MAX_IDLE_WORKERS: usize = 64;

/// The stack of a connection thread (the relay keeps its buffers on the heap).
const CONN_STACK: usize = 256 << 10;

/// A running forwarder. Stopping it (with [`ProxyHandle::stop`] or by dropping the handle) closes
/// the listening socket, joins the forwarder's thread and cuts the TCP connections it still
/// relays; UDP flows end with the thread. It returns promptly.
pub struct ProxyHandle {
    /// The address the forwarder listens on.
    local: SocketAddr,
    /// What wakes the forwarder's thread.
    wake: Option<Wake>,
    /// The forwarder's thread.
    thread: Option<JoinHandle<()>>,
    /// The TCP connections being relayed.
    conns: Option<Arc<Conns>>,
}

/// How a forwarder's thread is woken to stop.
enum Wake {
    /// A TCP listener: `shutdown(SHUT_RDWR)` makes a blocked `accept` fail.
    Listener(Arc<TcpListener>),
    /// The write end of a pipe in the thread's poll set: closing it wakes the thread.
    Pipe(OwnedFd),
}

impl ProxyHandle {
    /// The address the forwarder listens on (with the port chosen when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops the forwarder: closes the listener, ends its thread and cuts its TCP connections.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        if let Some(conns) = &self.conns {
            conns.stop();
        }
        match self.wake.take() {
            Some(Wake::Listener(l)) => shutdown_raw(l.as_raw_fd()),
            Some(Wake::Pipe(w)) => drop(w),
            None => {}
        }
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::warn!(addr = %self.local, "proxy thread panicked");
        }
        if let Some(conns) = &self.conns {
            conns.cut_all();
        }
    }
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// The TCP connections of one forwarder, so that stopping it can cut them.
#[derive(Default)]
struct Conns {
    /// Set once the forwarder stops; no connection is registered after that.
    stopping: AtomicBool,
    /// The next connection id.
    next: AtomicU64,
    /// Both sockets of each live connection, by id.
    live: Mutex<HashMap<u64, Vec<Arc<TcpStream>>>>,
    /// The workers waiting for a connection.
    pool: Mutex<Pool>,
    /// Signalled when a connection is queued for a waiting worker, or on stop.
    ready: Condvar,
}

impl Conns {
    /// The table, even if a thread panicked while holding it (it stays consistent).
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Vec<Arc<TcpStream>>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The worker pool, even if a thread panicked while holding it.
    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the forwarder stopping and wakes its waiting workers so that they end.
    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Notify under the lock: a worker checks `stopping` under it before waiting.
        let _pool = self.pool();
        self.ready.notify_all();
    }

    /// Registers a socket of connection `id`; false (and nothing registered) once stopping.
    fn add(&self, id: u64, s: &Arc<TcpStream>) -> bool {
        let mut live = self.lock();
        if self.stopping.load(Ordering::SeqCst) {
            return false;
        }
        live.entry(id).or_default().push(s.clone());
        true
    }

    /// Forgets connection `id`.
    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Shuts down both sockets of every live connection, which ends their relays.
    fn cut_all(&self) {
        for socks in self.lock().values() {
            for s in socks {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Where the upstream side of an accepted connection comes from.
#[derive(Clone)]
enum Upstream {
    /// A published port: the caller's connector.
    Connector(TcpConnector),
    /// Egress: the connection's original destination, connected from the forwarder's namespace.
    OriginalDst,
}

/// Binds `addr` (port 0 = random) for TCP and listens. Sets `SO_REUSEADDR` like `docker-proxy`
/// (a port in `TIME_WAIT` can be published again at once); an IPv6 address binds v6-only. A port
/// in use gives [`NetworkError::PortConflict`] naming the port and, when it can be found, the
/// process that holds it.
pub fn bind_tcp(addr: SocketAddr) -> Result<TcpListener> {
    bind_socket(addr, libc::SOCK_STREAM)
        .map(TcpListener::from)
        .map_err(|e| bind_error("tcp", addr, e))
}

/// Binds `addr` (port 0 = random) for UDP. No `SO_REUSEADDR` here: on UDP it would let two
/// sockets share a port silently. An IPv6 address binds v6-only. A port in use gives
/// [`NetworkError::PortConflict`] like [`bind_tcp`].
pub fn bind_udp(addr: SocketAddr) -> Result<UdpSocket> {
    bind_socket(addr, libc::SOCK_DGRAM)
        .map(UdpSocket::from)
        .map_err(|e| bind_error("udp", addr, e))
}

/// Forwards every connection accepted on `listener` to a stream opened by `connect`, relaying
/// both ways with half-close (the other side's write half is shut down when one side ends its
/// stream) until both directions end. Runs on its own threads; stopping the handle cuts the
/// connections still open.
pub fn forward_tcp(listener: TcpListener, connect: TcpConnector) -> ProxyHandle {
    serve_tcp(listener, Upstream::Connector(connect), "proxy-tcp")
}

/// Transparent egress: accepts the connections nftables redirected to `listener` and connects
/// each to its original destination (`SO_ORIGINAL_DST`, IPv4 and IPv6) from the namespace of the
/// thread calling this function (the host's, so the remote sees the host's address), then relays
/// like [`forward_tcp`]. A connection whose destination cannot be read, or is the listener itself
/// (it was not redirected), or cannot be reached, is reset.
pub fn egress_tcp(listener: TcpListener) -> ProxyHandle {
    serve_tcp(listener, Upstream::OriginalDst, "proxy-egress")
}

/// Per-flow UDP forwarding: each client address gets its own upstream socket from `connect`;
/// datagrams from that socket go back to the client from `socket`. Flows idle (no datagram either
/// way) for longer than `idle` are dropped (zero means [`DEFAULT_UDP_IDLE`]); at most
/// [`MAX_UDP_FLOWS`] are kept, the least recently active evicted first. A datagram that cannot be
/// sent at once is dropped, as the network would.
pub fn forward_udp(socket: UdpSocket, connect: UdpConnector, idle: Duration) -> ProxyHandle {
    let local = socket.local_addr().unwrap_or_else(|_| unspecified());
    let idle = if idle.is_zero() { DEFAULT_UDP_IDLE } else { idle };
    let (wake_r, wake_w) = match nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(addr = %local, "udp proxy: create wake pipe: {e}");
            return ProxyHandle {
                local,
                wake: None,
                thread: None,
                conns: None,
            };
        }
    };
    let spawned = std::thread::Builder::new().name("proxy-udp".into()).spawn(move || {
        let mut flows = UdpFlows::new(socket, connect, idle, MAX_UDP_FLOWS);
        if let Err(e) = flows.run(&wake_r) {
            tracing::error!(addr = %local, "udp proxy stopped: {e}");
        }
    });
    let thread = match spawned {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(addr = %local, "udp proxy: spawn thread: {e}");
            None
        }
    };
    ProxyHandle {
        local,
        wake: Some(Wake::Pipe(wake_w)),
        thread,
        conns: None,
    }
}

/// Who holds a port (for error messages), if findable: `"process nginx (pid 1234)"`, or the owner
/// of the socket when no visible process has it open. `proto` is `tcp` (listening sockets) or
/// `udp`; sockets are looked up in the calling thread's network namespace.
pub fn port_holder(proto: &str, port: u16) -> Option<String> {
    let tcp = match proto {
        "tcp" => true,
        "udp" => false,
        _ => return None,
    };
    let mut found: Vec<(u64, u32)> = Vec::new();
    for v in ["", "6"] {
        let file = format!("{proto}{v}");
        let text = std::fs::read_to_string(format!("/proc/thread-self/net/{file}"))
            .or_else(|_| std::fs::read_to_string(format!("/proc/net/{file}")));
        if let Ok(text) = text {
            found.extend(sockets_on_port(&text, port, tcp));
        }
    }
    let (_, uid) = *found.first()?;
    let inodes: Vec<u64> = found.iter().map(|(inode, _)| *inode).collect();
    match socket_process(&inodes) {
        Some((pid, comm)) => Some(format!("process {comm} (pid {pid})")),
        None => Some(format!("a socket of uid {uid} (no visible process)")),
    }
}

/// The `(inode, uid)` of the sockets bound to local `port` in a `/proc/net/{tcp,udp}[6]` table;
/// for TCP only listening ones.
fn sockets_on_port(table: &str, port: u16, listening_only: bool) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let Some(p) = f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()) else {
            continue;
        };
        // TCP state 0A is LISTEN.
        if p != port || (listening_only && f[3] != "0A") {
            continue;
        }
        let (Ok(uid), Ok(inode)) = (f[7].parse::<u32>(), f[9].parse::<u64>()) else {
            continue;
        };
        if inode != 0 {
            out.push((inode, uid));
        }
    }
    out
}

/// The first process (lowest pid) with one of the socket `inodes` open, and its command name.
fn socket_process(inodes: &[u64]) -> Option<(u32, String)> {
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if targets.iter().any(|t| link.as_os_str() == t.as_str()) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                let comm = comm.trim();
                return Some((
                    pid,
                    if comm.is_empty() {
                        "?".to_string()
                    } else {
                        comm.to_string()
                    },
                ));
            }
        }
    }
    None
}

/// The error of a failed bind of `addr`, turned into a conflict the user can act on when it is one.
fn bind_error(proto: &'static str, addr: SocketAddr, e: io::Error) -> NetworkError {
    let port = addr.port();
    let reason = match e.raw_os_error() {
        Some(libc::EADDRINUSE) => match port_holder(proto, port) {
            Some(holder) => {
                format!("port {port} is already in use, held by {holder}; stop it or choose another host port")
            }
            None => format!("port {port} is already in use; free it or choose another host port"),
        },
        Some(libc::EADDRNOTAVAIL) => {
            format!(
                "address {} is not assigned to this host; use one of its addresses",
                addr.ip()
            )
        }
        Some(libc::EACCES) if port < 1024 => {
            format!("permission denied for port {port}: ports below 1024 need root or CAP_NET_BIND_SERVICE")
        }
        _ => return NetworkError::sys(format!("bind {proto} {addr}"), e),
    };
    NetworkError::PortConflict {
        proto,
        addr: addr.to_string(),
        reason,
    }
}

/// A socket of type `ty` bound to `addr` (and listening, for a stream).
fn bind_socket(addr: SocketAddr, ty: libc::c_int) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new descriptor we own.
    let raw = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` was just returned by socket(2) and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if ty == libc::SOCK_STREAM {
        set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    }
    if addr.is_ipv6() {
        set_int_opt(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid socket address of `len` bytes for the socket's family.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const storage).cast(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen(2) on a descriptor we own; no pointers.
    if ty == libc::SOCK_STREAM && unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Sets an integer socket option.
fn set_int_opt(fd: &impl AsFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the pointer and length describe `value`, an int that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `addr` as a C socket address and its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero bytes are a valid `sockaddr_storage`.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is larger than and suitably aligned for `sockaddr_in`.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: `sockaddr_storage` is larger than and suitably aligned for `sockaddr_in6`.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// `0.0.0.0:0`, for an address that cannot be read.
fn unspecified() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
}

/// Shuts a socket down both ways, ignoring errors: it wakes the threads blocked on it (a blocked
/// `accept` or `recv` returns), which is how forwarders and the daemon's resolvers are stopped.
pub(super) fn shutdown_raw(fd: RawFd) {
    let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
}

/// Starts the accept thread of a TCP forwarder.
fn serve_tcp(listener: TcpListener, upstream: Upstream, name: &str) -> ProxyHandle {
    let local = listener.local_addr().unwrap_or_else(|_| unspecified());
    let listener = Arc::new(listener);
    let conns = Arc::new(Conns::default());
    let (l, c) = (listener.clone(), conns.clone());
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || accept_loop(&l, &c, &upstream));
    let thread = match spawned {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(addr = %local, "tcp proxy: spawn accept thread: {e}");
            None
        }
    };
    ProxyHandle {
        local,
        wake: Some(Wake::Listener(listener)),
        thread,
        conns: Some(conns),
    }
}

/// Accepts connections until the forwarder stops, one relay thread each.
fn accept_loop(listener: &TcpListener, conns: &Arc<Conns>, upstream: &Upstream) {
    let local = listener.local_addr().unwrap_or_else(|_| unspecified());
    loop {
        let (client, peer) = match listener.accept() {
            Ok(c) => c,
            Err(_) if conns.stopping.load(Ordering::SeqCst) => return,
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO | libc::EPERM) => continue,
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    tracing::warn!(addr = %local, "tcp proxy: accept: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                _ => {
                    tracing::error!(addr = %local, "tcp proxy: accept: {e}; giving up");
                    return;
                }
            },
        };
        let id = conns.next.fetch_add(1, Ordering::Relaxed);
        let client = Arc::new(client);
        if !conns.add(id, &client) {
            return;
        }
        if let Err(e) = dispatch(
            conns,
            upstream,
            Job {
                client: client.clone(),
                id,
                peer,
            },
        ) {
            tracing::warn!(addr = %local, %peer, "tcp proxy: spawn connection thread: {e}");
            reset(&client);
            conns.remove(id);
        }
    }
}

/// An accepted connection waiting for a worker.
struct Job {
    /// The accepted socket.
    client: Arc<TcpStream>,
    /// Its id in the connection table.
    id: u64,
    /// The client's address.
    peer: SocketAddr,
}

/// The workers of a forwarder waiting for a connection, and the connections handed to them.
#[derive(Default)]
struct Pool {
    /// Connections handed to waiting workers and not yet taken.
    queue: VecDeque<Job>,
    /// Waiting workers not yet promised a connection.
    idle: usize,
}

/// Hands `job` to a waiting worker, or starts a new one.
fn dispatch(conns: &Arc<Conns>, upstream: &Upstream, job: Job) -> io::Result<()> {
    {
        let mut pool = conns.pool();
        if pool.idle > 0 {
            pool.idle -= 1;
            pool.queue.push_back(job);
            conns.ready.notify_one();
            return Ok(());
        }
    }
    let (c, u) = (conns.clone(), upstream.clone());
    std::thread::Builder::new()
        .name("proxy-conn".into())
        .stack_size(CONN_STACK)
        .spawn(move || worker(&c, &u, job))
        .map(drop)
}

/// Serves connections one after the other until none comes for [`WORKER_IDLE`].
fn worker(conns: &Conns, upstream: &Upstream, first: Job) {
    let mut job = first;
    loop {
        serve_conn(&job.client, job.id, conns, upstream, job.peer);
        conns.remove(job.id);
        // Closes the client's socket before waiting for the next connection.
        drop(job);
        match next_job(conns) {
            Some(j) => job = j,
            None => return,
        }
    }
}

/// Waits for the next connection; `None` when the worker should end (idle too long, enough
/// other idle workers, or the forwarder stopping).
fn next_job(conns: &Conns) -> Option<Job> {
    let mut pool = conns.pool();
    if pool.idle >= MAX_IDLE_WORKERS || conns.stopping.load(Ordering::SeqCst) {
        return None;
    }
    pool.idle += 1;
    let deadline = Instant::now() + WORKER_IDLE;
    loop {
        if let Some(job) = pool.queue.pop_front() {
            return Some(job);
        }
        let now = Instant::now();
        if conns.stopping.load(Ordering::SeqCst) || now >= deadline {
            pool.idle -= 1;
            return None;
        }
        pool = conns
            .ready
            .wait_timeout(pool, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Opens the upstream side of one accepted connection and relays it.
fn serve_conn(client: &Arc<TcpStream>, id: u64, conns: &Conns, upstream: &Upstream, peer: SocketAddr) {
    let opened = match upstream {
        Upstream::Connector(connect) => connect(),
        Upstream::OriginalDst => original_dst(client).and_then(|dst| {
            if client.local_addr().ok() == Some(dst) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "connection was not redirected",
                ));
            }
            TcpStream::connect_timeout(&dst, EGRESS_CONNECT_TIMEOUT)
        }),
    };
    let server = match opened {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::debug!(%peer, "tcp proxy: open upstream: {e}");
            reset(client);
            return;
        }
    };
    if !conns.add(id, &server) {
        return;
    }
    if let Err(e) = relay(client, &server, true) {
        tracing::debug!(%peer, "tcp proxy: relay ended: {e}");
        reset(client);
        reset(&server);
    }
}

/// Makes the next close of `s` send a reset instead of a normal end of stream.
fn reset(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the pointer and length describe `linger`, which outlives the call.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// The destination a redirected connection was originally sent to (`SO_ORIGINAL_DST`, or
/// `IP6T_SO_ORIGINAL_DST` for IPv6).
fn original_dst(s: &TcpStream) -> io::Result<SocketAddr> {
    let fd = s.as_raw_fd();
    if s.local_addr()?.is_ipv4() {
        // SAFETY: all-zero bytes are a valid `sockaddr_in`.
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `sin` and `len` describe a writable buffer of the size the kernel is told.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IP,
                libc::SO_ORIGINAL_DST,
                (&raw mut sin).cast(),
                &raw mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        Ok(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
    } else {
        // SAFETY: all-zero bytes are a valid `sockaddr_in6`.
        let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        // SAFETY: `sin6` and `len` describe a writable buffer of the size the kernel is told.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IPV6,
                libc::IP6T_SO_ORIGINAL_DST,
                (&raw mut sin6).cast(),
                &raw mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
        Ok(SocketAddr::V6(SocketAddrV6::new(
            ip,
            u16::from_be(sin6.sin6_port),
            0,
            sin6.sin6_scope_id,
        )))
    }
}

/// Relays `a` ↔ `b` until both directions have ended, in one poll loop. With `zero_copy`, bytes
/// move through pipes with `splice`; otherwise (or where splicing is refused) through buffers.
/// Returns an error when a side fails (a reset, a write to a closed peer).
fn relay(a: &TcpStream, b: &TcpStream, zero_copy: bool) -> io::Result<()> {
    for s in [a, b] {
        s.set_nonblocking(true)?;
        s.set_nodelay(true)?;
    }
    let mut up = Direction::new(zero_copy);
    let mut down = Direction::new(zero_copy);
    loop {
        up.pump(a, b)?;
        down.pump(b, a)?;
        if up.done && down.done {
            return Ok(());
        }
        let (mut ea, mut eb) = (0, 0);
        up.interest(&mut ea, &mut eb);
        down.interest(&mut eb, &mut ea);
        let mut fds = [pollfd(a, ea), pollfd(b, eb)];
        // SAFETY: `fds` is a valid array of two pollfds that outlives the call.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// A pollfd for `s` waiting for `events`; with no events it is ignored (a negative fd), so that a
/// hung-up socket nobody waits on cannot make the loop spin.
fn pollfd(s: &TcpStream, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: if events == 0 { -1 } else { s.as_raw_fd() },
        events,
        revents: 0,
    }
}

/// One direction of a relayed connection.
struct Direction {
    /// Where bytes wait between the two sockets.
    chan: Channel,
    /// Bytes read from the source and not yet written to the destination.
    pending: usize,
    /// The source has ended its stream.
    eof: bool,
    /// Everything was written and the destination's write half shut down.
    done: bool,
}

/// The holding area of a direction.
enum Channel {
    /// A pipe for `splice`: read end, write end.
    Pipe(OwnedFd, OwnedFd),
    /// A buffer for `read`/`write`, and the offset of its pending bytes.
    Buffer(Box<[u8]>, usize),
}

impl Direction {
    /// A direction with a pipe when `zero_copy` and the kernel gives one, a buffer otherwise.
    fn new(zero_copy: bool) -> Self {
        let chan = match zero_copy.then(new_pipe) {
            Some(Ok((r, w))) => Channel::Pipe(r, w),
            _ => Channel::Buffer(vec![0; COPY_BUF].into_boxed_slice(), 0),
        };
        Direction {
            chan,
            pending: 0,
            eof: false,
            done: false,
        }
    }

    /// Moves bytes from `src` to `dst` until one of them would block or the direction ends.
    fn pump(&mut self, src: &TcpStream, dst: &TcpStream) -> io::Result<()> {
        while !self.done {
            if self.pending > 0 {
                match self.flush(dst) {
                    Ok(n) => self.pending -= n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            } else if self.eof {
                match dst.shutdown(Shutdown::Write) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                    Err(e) => return Err(e),
                }
                self.done = true;
            } else {
                match self.fill(src) {
                    Ok(0) => self.eof = true,
                    Ok(n) => self.pending += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Adds the poll events this direction waits for to its source's and destination's sets.
    fn interest(&self, src: &mut libc::c_short, dst: &mut libc::c_short) {
        if self.done {
        } else if self.pending > 0 {
            *dst |= libc::POLLOUT;
        } else {
            *src |= libc::POLLIN;
        }
    }

    /// Reads from `src` into the channel, which is empty.
    fn fill(&mut self, src: &TcpStream) -> io::Result<usize> {
        let spliced = match &mut self.chan {
            Channel::Pipe(_, w) => splice(src, w, SPLICE_CHUNK),
            Channel::Buffer(buf, start) => {
                *start = 0;
                return (&*src).read(buf);
            }
        };
        match spliced {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.fall_back_to_buffer()?;
                self.fill(src)
            }
            r => r,
        }
    }

    /// Writes pending bytes from the channel to `dst`.
    fn flush(&mut self, dst: &TcpStream) -> io::Result<usize> {
        let spliced = match &mut self.chan {
            Channel::Pipe(r, _) => splice(r, dst, self.pending),
            Channel::Buffer(buf, start) => {
                let n = (&*dst).write(&buf[*start..*start + self.pending])?;
                *start += n;
                return Ok(n);
            }
        };
        match spliced {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.fall_back_to_buffer()?;
                self.flush(dst)
            }
            r => r,
        }
    }

    /// Falls back to `read`/`write`, moving what the pipe holds into the buffer.
    fn fall_back_to_buffer(&mut self) -> io::Result<()> {
        tracing::debug!("tcp proxy: splice refused, relaying through a buffer");
        let mut buf = vec![0; COPY_BUF.max(self.pending)].into_boxed_slice();
        if let Channel::Pipe(r, _) = &self.chan {
            let mut got = 0;
            while got < self.pending {
                match nix::unistd::read(r, &mut buf[got..self.pending]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.pending = got;
        }
        self.chan = Channel::Buffer(buf, 0);
        Ok(())
    }
}

/// A non-blocking pipe, enlarged to [`PIPE_SIZE`] when allowed.
fn new_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    let _ = nix::fcntl::fcntl(&w, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    Ok((r, w))
}

/// One non-blocking `splice` of up to `len` bytes.
fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: splice(2) on two descriptors borrowed for the call; null offsets mean "current
    // position", as required for pipes and sockets.
    let n = unsafe {
        libc::splice(
            from.as_fd().as_raw_fd(),
            std::ptr::null_mut(),
            to.as_fd().as_raw_fd(),
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Tokens of the UDP forwarder's epoll set; flows use tokens from `FIRST_FLOW` up.
const TOKEN_LISTENER: u64 = 0;
/// The wake pipe's token.
const TOKEN_WAKE: u64 = 1;
/// The first flow token.
const FIRST_FLOW: u64 = 2;

/// One client of a UDP forwarder.
struct Flow {
    /// The connected upstream socket.
    sock: UdpSocket,
    /// Its token in the epoll set.
    token: u64,
    /// The last datagram either way.
    last: Instant,
}

/// A UDP forwarder's state: its socket, flows and epoll set.
struct UdpFlows {
    /// The listening socket.
    socket: UdpSocket,
    /// Opens upstream sockets.
    connect: UdpConnector,
    /// How long a flow may stay idle.
    idle: Duration,
    /// The most flows kept.
    max: usize,
    /// Flows by client address.
    flows: HashMap<SocketAddr, Flow>,
    /// Client addresses by flow token.
    clients: HashMap<u64, SocketAddr>,
    /// The next flow token.
    next_token: u64,
    /// No flow expires before this.
    next_sweep: Option<Instant>,
    /// The datagram buffer.
    buf: Box<[u8]>,
}

impl UdpFlows {
    /// A forwarder for `socket` with no flows yet.
    fn new(socket: UdpSocket, connect: UdpConnector, idle: Duration, max: usize) -> Self {
        UdpFlows {
            socket,
            connect,
            idle,
            max: max.max(1),
            flows: HashMap::new(),
            clients: HashMap::new(),
            next_token: FIRST_FLOW,
            next_sweep: None,
            buf: vec![0; UDP_BUF].into_boxed_slice(),
        }
    }

    /// Serves datagrams until `wake` is readable or hung up.
    fn run(&mut self, wake: &OwnedFd) -> io::Result<()> {
        self.socket.set_nonblocking(true)?;
        let epoll = Epoll::new()?;
        epoll.add(self.socket.as_raw_fd(), TOKEN_LISTENER)?;
        epoll.add(wake.as_raw_fd(), TOKEN_WAKE)?;
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            let timeout = match self.next_sweep {
                None => -1,
                Some(t) => {
                    let ms = t.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
                    i32::try_from(ms).unwrap_or(i32::MAX)
                }
            };
            let n = epoll.wait(&mut events, timeout)?;
            for ev in &events[..n] {
                match ev.u64 {
                    TOKEN_WAKE => return Ok(()),
                    TOKEN_LISTENER => self.forward_requests(&epoll),
                    token => self.forward_replies(token),
                }
            }
            if self.next_sweep.is_some_and(|t| t <= Instant::now()) {
                self.sweep(&epoll);
            }
        }
    }

    /// Forwards the datagrams waiting on the listening socket, opening flows for new clients.
    fn forward_requests(&mut self, epoll: &Epoll) {
        for _ in 0..UDP_BATCH {
            let (n, client) = match self.socket.recv_from(&mut self.buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!("udp proxy: receive: {e}");
                    continue;
                }
            };
            let now = Instant::now();
            if !self.flows.contains_key(&client) && !self.open(client, epoll, now) {
                continue;
            }
            if let Some(flow) = self.flows.get_mut(&client) {
                flow.last = now;
                if let Err(e) = flow.sock.send(&self.buf[..n]) {
                    tracing::debug!(%client, "udp proxy: send upstream: {e}");
                }
            }
        }
    }

    /// Opens a flow for `client`, evicting the least recently active one when full.
    fn open(&mut self, client: SocketAddr, epoll: &Epoll, now: Instant) -> bool {
        if self.flows.len() >= self.max
            && let Some(oldest) = self.flows.iter().min_by_key(|(_, f)| f.last).map(|(a, _)| *a)
        {
            self.close(oldest, epoll);
        }
        let sock = match (self.connect)() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%client, "udp proxy: open upstream: {e}");
                return false;
            }
        };
        let token = self.next_token;
        if let Err(e) = sock
            .set_nonblocking(true)
            .and_then(|()| epoll.add(sock.as_raw_fd(), token))
        {
            tracing::debug!(%client, "udp proxy: watch upstream: {e}");
            return false;
        }
        self.next_token += 1;
        self.flows.insert(client, Flow { sock, token, last: now });
        self.clients.insert(token, client);
        let expiry = now + self.idle;
        self.next_sweep = Some(self.next_sweep.map_or(expiry, |t| t.min(expiry)));
        true
    }

    /// Sends the replies waiting on flow `token`'s socket back to its client.
    fn forward_replies(&mut self, token: u64) {
        let Some(client) = self.clients.get(&token).copied() else {
            return;
        };
        let Some(flow) = self.flows.get_mut(&client) else {
            return;
        };
        for _ in 0..UDP_BATCH {
            match flow.sock.recv(&mut self.buf) {
                Ok(n) => {
                    flow.last = Instant::now();
                    if let Err(e) = self.socket.send_to(&self.buf[..n], client) {
                        tracing::debug!(%client, "udp proxy: send to client: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // An ICMP error from an earlier datagram; the flow stays until idle.
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::Interrupted) => {}
                Err(e) => {
                    tracing::debug!(%client, "udp proxy: receive upstream: {e}");
                    return;
                }
            }
        }
    }

    /// Drops the flows idle for longer than the idle time and schedules the next sweep.
    fn sweep(&mut self, epoll: &Epoll) {
        let now = Instant::now();
        let expired: Vec<SocketAddr> = self
            .flows
            .iter()
            .filter(|(_, f)| now.duration_since(f.last) >= self.idle)
            .map(|(a, _)| *a)
            .collect();
        for client in expired {
            self.close(client, epoll);
        }
        self.next_sweep = self.flows.values().map(|f| f.last + self.idle).min();
    }

    /// Drops the flow of `client`.
    fn close(&mut self, client: SocketAddr, epoll: &Epoll) {
        if let Some(flow) = self.flows.remove(&client) {
            epoll.delete(flow.sock.as_raw_fd());
            self.clients.remove(&flow.token);
        }
    }
}

/// A minimal epoll instance.
struct Epoll(OwnedFd);

impl Epoll {
    /// A new, empty epoll set.
    fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1(2) takes no pointers; a non-negative result is a new descriptor.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just returned by epoll_create1 and is owned by nothing else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    /// Watches `fd` for input, reported with `token`.
    fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid event that outlives the call; the kernel copies it.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &raw mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops watching `fd` (errors ignored: closing the fd removes it anyway).
    fn delete(&self, fd: RawFd) {
        // SAFETY: EPOLL_CTL_DEL ignores the event pointer, which may be null.
        unsafe {
            libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut());
        }
    }

    /// Waits up to `timeout_ms` (-1: forever) and fills `events`; an interruption is no event.
    fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        let max = i32::try_from(events.len()).unwrap_or(i32::MAX);
        // SAFETY: `events` is a writable array of at least `max` entries that outlives the call.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 0 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn proc_net_table_gives_listening_sockets_on_the_port() {
        assert_eq!(sockets_on_port(TABLE, 8080, true), vec![(4242, 0)]);
        assert_eq!(sockets_on_port(TABLE, 8080, false), vec![(4242, 0), (4343, 1000)]);
        // Inode 0 (a kernel socket) is skipped.
        assert!(sockets_on_port(TABLE, 53, true).is_empty());
        assert!(sockets_on_port(TABLE, 9, true).is_empty());
    }

    #[test]
    fn port_holder_names_this_process() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let holder = port_holder("tcp", port).expect("a holder");
        assert!(holder.contains(&format!("(pid {})", std::process::id())), "{holder}");
        assert_eq!(port_holder("sctp", port), None);
    }

    #[test]
    fn bind_conflict_names_port_and_holder() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let err = bind_tcp(addr).expect_err("port is taken");
        assert!(
            matches!(err, NetworkError::PortConflict { proto: "tcp", .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&addr.port().to_string()), "{msg}");
        assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
    }

    #[test]
    fn udp_conflict_is_reported() {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = s.local_addr().expect("addr");
        let msg = bind_udp(addr).expect_err("port is taken").to_string();
        assert!(
            msg.starts_with(&format!("cannot publish udp port {addr}: port {}", addr.port())),
            "{msg}"
        );
        assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
    }

    /// A connected pair of loopback TCP streams.
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (b, _) = l.accept().expect("accept");
        (a, b)
    }

    /// Relays two pairs with `zero_copy` and checks data and half-close both ways.
    fn relay_roundtrip(zero_copy: bool) {
        let (mut client, proxy_client) = pair();
        let (proxy_server, mut server) = pair();
        let t = std::thread::spawn(move || relay(&proxy_client, &proxy_server, zero_copy));
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            client.write_all(&sent).expect("write");
            client.shutdown(Shutdown::Write).expect("shutdown");
            let mut back = Vec::new();
            client.read_to_end(&mut back).expect("read back");
            back
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).expect("read");
        assert!(got == data, "data differs");
        server.write_all(b"bye").expect("reply after half-close");
        drop(server);
        assert_eq!(writer.join().expect("writer"), b"bye");
        t.join().expect("relay thread").expect("relay");
    }

    #[test]
    fn relay_splices_with_half_close() {
        relay_roundtrip(true);
    }

    #[test]
    fn relay_copies_with_half_close() {
        relay_roundtrip(false);
    }

    #[test]
    fn direction_falls_back_from_pipe_to_buffer_keeping_pending_bytes() {
        let mut d = Direction::new(true);
        let Channel::Pipe(_, w) = &d.chan else {
            panic!("no pipe")
        };
        nix::unistd::write(w, b"pending").expect("fill pipe");
        d.pending = 7;
        d.fall_back_to_buffer().expect("fallback");
        let Channel::Buffer(buf, start) = &d.chan else {
            panic!("no buffer")
        };
        assert_eq!(&buf[*start..*start + d.pending], b"pending");
    }

    #[test]
    fn udp_flows_expire_and_are_capped() {
        let upstream = UdpSocket::bind("127.0.0.1:0").expect("bind upstream");
        let target = upstream.local_addr().expect("addr");
        let listen = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let connect: UdpConnector = Arc::new(move || {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.connect(target)?;
            Ok(s)
        });
        let mut flows = UdpFlows::new(listen, connect, Duration::from_millis(50), 2);
        let epoll = Epoll::new().expect("epoll");
        let t0 = Instant::now();
        for port in [1001, 1002, 1003] {
            assert!(flows.open(
                SocketAddr::from(([127, 0, 0, 1], port)),
                &epoll,
                t0 + Duration::from_millis(port as u64)
            ));
        }
        let mut kept: Vec<u16> = flows.flows.keys().map(|a| a.port()).collect();
        kept.sort_unstable();
        assert_eq!(kept, vec![1002, 1003], "the oldest flow is evicted");
        assert_eq!(flows.clients.len(), 2);
        std::thread::sleep(Duration::from_millis(1100));
        flows.sweep(&epoll);
        assert!(flows.flows.is_empty() && flows.clients.is_empty());
        assert_eq!(flows.next_sweep, None);
    }

    #[test]
    fn sequential_connections_reuse_a_worker_thread() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind target");
        let target = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            for s in l.incoming() {
                drop(s);
            }
        });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let connect: TcpConnector = Arc::new(move || {
            s2.lock().expect("lock").push(std::thread::current().id());
            TcpStream::connect(target)
        });
        let h = forward_tcp(bind_tcp("127.0.0.1:0".parse().expect("addr")).expect("bind"), connect);
        for _ in 0..5 {
            let mut c = TcpStream::connect(h.local_addr()).expect("connect");
            let mut buf = Vec::new();
            c.read_to_end(&mut buf).expect("end of stream");
            drop(c);
            // Let the worker close the connection and wait for the next one.
            std::thread::sleep(Duration::from_millis(20));
        }
        let ids = seen.lock().expect("lock").clone();
        assert_eq!(ids.len(), 5);
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        h.stop();
    }

    #[test]
    fn stop_wakes_a_blocked_accept() {
        let listener = bind_tcp("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let connect: TcpConnector = Arc::new(|| Err(io::Error::other("unused")));
        let h = forward_tcp(listener, connect);
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        h.stop();
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
