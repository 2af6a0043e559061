//! The embedded DNS resolver: answers containers' queries for the names of their networks out of
//! a [`DnsTable`] and relays everything else to the host's upstream resolvers.
//!
//! One [`Resolver`] serves every gateway socket of a domain; the daemon swaps its table whenever
//! endpoints join or leave. Names are scoped like Docker's: an asker sees the names of every
//! network its endpoint is on, and nothing else.
//!
//! Choices, kept small on purpose:
//! - Local answers carry TTL [`TTL`] (600 s, as Docker's embedded DNS) and the AA and RA flags.
//!   A name the asker knows gets an answer for every type: A, AAAA and ANY list its addresses,
//!   and any other type gets NOERROR with no records (never NXDOMAIN, which a stub could cache
//!   for the whole name). PTR queries for the asker's networks' addresses are answered too.
//!   Everything else is forwarded.
//! - Over UDP a local answer fits the asker's advertised EDNS size (512 bytes without EDNS,
//!   at most 4096): records that do not fit are dropped and TC is set, so glibc retries over TCP
//!   and a stub that ignores TC (older musl) still gets some addresses.
//! - Forwarding relays the raw query to the upstreams in order (at most three, as glibc reads),
//!   waiting [`UPSTREAM_TIMEOUT`] for each, and relays the raw reply back. A SERVFAIL or REFUSED
//!   reply moves on to the next upstream, like Docker. When no upstream answers the asker gets
//!   SERVFAIL. UDP queries are forwarded over UDP from a short-lived worker thread each (at most
//!   [`MAX_FORWARDS`] at once; beyond that queries are dropped and the asker retries), so a slow
//!   upstream never delays local answers, which are made on the serving thread with no thread
//!   and one reply buffer. TCP queries are forwarded over TCP, on the connection's own thread.
//! - The forwarding sockets are created at run time, so they live in the namespace of the
//!   serving thread (the host's), whatever namespace the listening sockets were made in.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Metadata, OpCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// Time to live of local answers, in seconds (Docker's embedded DNS uses the same).
pub const TTL: u32 = 600;
/// How long each upstream gets to answer a forwarded query.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwarded UDP queries in flight at once; more are dropped until some finish.
pub const MAX_FORWARDS: usize = 256;
/// TCP connections served at once; more are closed at once.
pub const MAX_TCP_CONNECTIONS: usize = 64;
/// How long an idle TCP connection is kept open.
pub const TCP_IDLE: Duration = Duration::from_secs(10);

/// Largest UDP query read; longer ones are cut and then answered FORMERR.
const MAX_UDP_QUERY: usize = 4096;
/// The UDP payload size this resolver advertises and honours at most.
const MAX_UDP_PAYLOAD: u16 = 4096;
/// The UDP payload size of a query without EDNS (RFC 1035).
const MIN_UDP_PAYLOAD: u16 = 512;
/// Upstreams read from resolv.conf, as glibc's MAXNS.
const MAX_NAMESERVERS: usize = 3;
/// Consecutive failed reads after which a serving loop gives up.
const MAX_ERRORS: u32 = 100;

const RCODE_FORMERR: u8 = 1;
const RCODE_SERVFAIL: u8 = 2;
const RCODE_NOTIMP: u8 = 4;
const RCODE_REFUSED: u8 = 5;

/// Names known to the resolver, scoped by network.
#[derive(Debug, Clone, Default)]
pub struct DnsTable {
    /// Per network: its names and reverse entries.
    networks: BTreeMap<String, Zone>,
    /// Per endpoint address: every network its endpoint is on.
    members: BTreeMap<IpAddr, BTreeSet<String>>,
}

/// The names of one network.
#[derive(Debug, Clone, Default)]
struct Zone {
    /// Normalized name → addresses.
    names: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Address → the first name added for it, for PTR answers.
    reverse: BTreeMap<IpAddr, String>,
}

impl DnsTable {
    /// An empty table: every query is forwarded.
    pub fn new() -> Self {
        Self::default()
    }

    /// `name` resolves to `addr` for askers on `network` (names are case-insensitive; a trailing
    /// dot is ignored). The first name added for an address is the one PTR queries get, so add
    /// an endpoint's canonical name first.
    pub fn add_name(&mut self, network: &str, name: &str, addr: IpAddr) {
        let name = normalize(name);
        if name.is_empty() {
            return;
        }
        let addr = addr.to_canonical();
        let zone = self.networks.entry(network.to_owned()).or_default();
        zone.reverse.entry(addr).or_insert_with(|| name.clone());
        zone.names.entry(name).or_default().insert(addr);
    }

    /// `addr` is an endpoint's address on `network`: askers from it see that network's names.
    pub fn add_member(&mut self, network: &str, addr: IpAddr) {
        self.members
            .entry(addr.to_canonical())
            .or_default()
            .insert(network.to_owned());
    }

    /// One endpoint with its address on each of its networks: an asker from any of these
    /// addresses sees the names of all these networks, as a Docker container sees the names of
    /// every network it shares.
    pub fn add_endpoint<N: AsRef<str>>(&mut self, addrs: &[(N, IpAddr)]) {
        let networks: BTreeSet<String> = addrs.iter().map(|(n, _)| n.as_ref().to_owned()).collect();
        for (_, addr) in addrs {
            self.members
                .entry(addr.to_canonical())
                .or_default()
                .extend(networks.iter().cloned());
        }
    }

    /// Addresses for `name` as seen by `asker`: the union over every network the asker's endpoint
    /// is on, sorted (IPv4 first). `None` when the asker knows no such name.
    pub fn lookup(&self, asker: IpAddr, name: &str) -> Option<Vec<IpAddr>> {
        let name = normalize(name);
        let mut found = BTreeSet::new();
        for zone in self.zones_of(asker) {
            if let Some(addrs) = zone.names.get(&name) {
                found.extend(addrs.iter().copied());
            }
        }
        (!found.is_empty()).then(|| found.into_iter().collect())
    }

    /// The name of `addr` as seen by `asker` (reverse, PTR, lookup), from the first of the
    /// asker's networks (by name) that knows it; without a trailing dot.
    pub fn reverse(&self, asker: IpAddr, addr: IpAddr) -> Option<String> {
        let addr = addr.to_canonical();
        self.zones_of(asker).find_map(|zone| zone.reverse.get(&addr).cloned())
    }

    /// The zones of every network `asker` is on.
    fn zones_of(&self, asker: IpAddr) -> impl Iterator<Item = &Zone> {
        self.members
            .get(&asker.to_canonical())
            .into_iter()
            .flatten()
            .filter_map(|network| self.networks.get(network))
    }
}

/// A name as the table keys it: lower case, without its trailing dot.
fn normalize(name: &str) -> String {
    let name = name.trim();
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// What to do with one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Send these bytes back to the asker.
    Reply(Vec<u8>),
    /// Relay the query to the upstream resolvers.
    Forward,
    /// Ignore the query (not even a header could be read, or it is not a query).
    Drop,
}

/// The channel a query came on, which bounds its reply's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// Answers a wire-format query from `asker` out of the table, with UDP's size rules: A, AAAA and
/// ANY for known names (another type of a known name gets NOERROR with no records), PTR for
/// known addresses, FORMERR for a query that cannot be parsed but has a header, NOTIMP for other
/// opcodes; everything else is to be forwarded.
pub fn answer(table: &DnsTable, asker: IpAddr, query: &[u8]) -> Answer {
    respond(table, asker, query, Transport::Udp)
}

/// [`answer`] for `transport`.
fn respond(table: &DnsTable, asker: IpAddr, query: &[u8], transport: Transport) -> Answer {
    // A header is 12 bytes; a message with QR set is a response, never answered (no loops).
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return Answer::Drop;
    }
    let Ok(request) = Message::from_vec(query) else {
        return Answer::Reply(header_reply(query, RCODE_FORMERR));
    };
    if request.metadata.op_code != OpCode::Query {
        return Answer::Reply(header_reply(query, RCODE_NOTIMP));
    }
    let [question] = request.queries.as_slice() else {
        return Answer::Reply(header_reply(query, RCODE_FORMERR));
    };
    if question.query_class() != DNSClass::IN {
        return Answer::Forward;
    }
    let qname = question.name();
    let qtype = question.query_type();
    let mut records = Vec::new();
    if qtype == RecordType::PTR {
        let Some(addr) = arpa_address(qname) else {
            return Answer::Forward;
        };
        let Some(target) = table
            .reverse(asker, addr)
            .and_then(|n| Name::from_ascii(format!("{n}.")).ok())
        else {
            return Answer::Forward;
        };
        records.push(Record::from_rdata(qname.clone(), TTL, RData::PTR(PTR(target))));
    } else {
        let Some(addrs) = table.lookup(asker, &qname.to_ascii()) else {
            return Answer::Forward;
        };
        for addr in addrs {
            let rdata = match (addr, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
                _ => continue,
            };
            records.push(Record::from_rdata(qname.clone(), TTL, rdata));
        }
    }

    let mut reply = Message::response(request.metadata.id, OpCode::Query);
    reply.metadata = Metadata::response_from_request(&request.metadata);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_available = true;
    reply.add_query(question.clone());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        reply.set_edns(edns);
    }
    let limit = match transport {
        Transport::Udp => {
            let asked = request.edns.as_ref().map_or(MIN_UDP_PAYLOAD, Edns::max_payload);
            usize::from(asked.clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD))
        }
        Transport::Tcp => usize::from(u16::MAX),
    };
    reply.answers = records;
    loop {
        let Ok(bytes) = reply.to_vec() else {
            return Answer::Reply(header_reply(query, RCODE_SERVFAIL));
        };
        if bytes.len() <= limit || reply.answers.is_empty() {
            return Answer::Reply(bytes);
        }
        // Drop whole records until the rest fits; TC tells the asker to retry over TCP.
        reply.metadata.truncation = true;
        let excess = bytes.len() - limit;
        let per_record = bytes.len() / (reply.answers.len() + 1);
        let cut = excess.div_ceil(per_record.max(1)).clamp(1, reply.answers.len());
        reply.answers.truncate(reply.answers.len() - cut);
    }
}

/// A reply of only a header: the query's id, opcode and RD flag, RA, and `rcode`.
fn header_reply(query: &[u8], rcode: u8) -> Vec<u8> {
    let mut reply = vec![0u8; 12];
    reply[..2].copy_from_slice(&query[..2]);
    reply[2] = 0x80 | (query[2] & 0x79);
    reply[3] = 0x80 | (rcode & 0x0f);
    reply
}

/// SERVFAIL for `query`, echoing its question when it parses.
fn servfail(query: &[u8]) -> Vec<u8> {
    if let Ok(request) = Message::from_vec(query) {
        let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
        reply.metadata = Metadata::response_from_request(&request.metadata);
        reply.metadata.recursion_available = true;
        reply.metadata.response_code = hickory_proto::op::ResponseCode::ServFail;
        reply.add_queries(request.queries);
        if let Ok(bytes) = reply.to_vec() {
            return bytes;
        }
    }
    header_reply(query, RCODE_SERVFAIL)
}

/// The address a reverse name (`4.3.2.1.in-addr.arpa.`, 32 nibbles of `ip6.arpa.`) stands for.
fn arpa_address(name: &Name) -> Option<IpAddr> {
    let text = normalize(&name.to_ascii());
    if let Some(rest) = text.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let mut labels = rest.rsplit('.');
        for octet in &mut octets {
            let label = labels.next()?;
            if label.is_empty() || label.len() > 3 || !label.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *octet = label.parse().ok()?;
        }
        return labels.next().is_none().then(|| IpAddr::V4(Ipv4Addr::from(octets)));
    }
    let rest = text.strip_suffix(".ip6.arpa")?;
    let mut bits: u128 = 0;
    let mut count = 0;
    for label in rest.rsplit('.') {
        let [digit] = label.as_bytes() else { return None };
        bits = (bits << 4) | u128::from(char::from(*digit).to_digit(16)?);
        count += 1;
    }
    (count == 32).then(|| IpAddr::V6(Ipv6Addr::from(bits)))
}

/// Upstream servers from resolv.conf text: the address of each `nameserver` line (IPv4 or IPv6,
/// with an optional `%zone`), port 53, in order, without duplicates, at most three (as glibc
/// reads). Unparsable lines are skipped. No upstream means forwarded queries get SERVFAIL.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next().and_then(parse_nameserver) else {
            continue;
        };
        if !out.contains(&addr) {
            out.push(addr);
        }
        if out.len() == MAX_NAMESERVERS {
            break;
        }
    }
    out
}

/// One `nameserver` address, port 53.
fn parse_nameserver(word: &str) -> Option<SocketAddr> {
    let (addr, zone) = match word.split_once('%') {
        Some((addr, zone)) => (addr, Some(zone)),
        None => (word, None),
    };
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) if zone.is_none() => Some(SocketAddr::from((v4, 53))),
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => {
            let scope = match zone {
                None => 0,
                Some(z) => z.parse().ok().or_else(|| interface_index(z))?,
            };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(v6, 53, 0, scope)))
        }
    }
}

/// The index of the interface named `name`, if there is one.
fn interface_index(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call, which only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The running resolver shared by all listening sockets of a daemon.
#[derive(Debug)]
pub struct Resolver {
    /// The names served; replaced whole when endpoints change.
    table: RwLock<DnsTable>,
    /// Where other queries go, in order.
    upstreams: Vec<SocketAddr>,
    /// How long each upstream gets.
    timeout: Duration,
    /// Forwarded UDP queries in flight.
    forwards: AtomicUsize,
    /// TCP connections being served.
    connections: AtomicUsize,
}

impl Resolver {
    /// A resolver answering from `table` and forwarding to `upstreams`, waiting
    /// [`UPSTREAM_TIMEOUT`] for each.
    pub fn new(table: DnsTable, upstreams: Vec<SocketAddr>) -> Arc<Self> {
        Self::with_timeout(table, upstreams, UPSTREAM_TIMEOUT)
    }

    /// [`Resolver::new`] with another per-upstream timeout.
    pub fn with_timeout(table: DnsTable, upstreams: Vec<SocketAddr>, timeout: Duration) -> Arc<Self> {
        Arc::new(Resolver {
            table: RwLock::new(table),
            upstreams,
            timeout,
            forwards: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        })
    }

    /// Replaces the table (called when endpoints join or leave).
    pub fn set_table(&self, table: DnsTable) {
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = table;
    }

    /// The upstream servers, in the order they are tried.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// [`respond`] from the current table.
    fn respond(&self, asker: IpAddr, query: &[u8], transport: Transport) -> Answer {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        respond(&table, asker, query, transport)
    }

    /// Serves UDP queries on `socket` until it is shut down (shutdown(2) of its descriptor) or
    /// fails for good; returns then. Local answers are sent from this thread; forwarded queries
    /// each get a worker thread, so they never hold up other queries.
    pub fn serve_udp(self: &Arc<Self>, socket: UdpSocket) {
        let socket = Arc::new(socket);
        let mut buf = vec![0u8; MAX_UDP_QUERY];
        let mut errors = 0;
        loop {
            let (len, peer) = match recv_from(&socket, &mut buf) {
                Ok((len, Some(peer))) => (len, peer),
                // What a shut-down socket returns: nothing, from nobody.
                Ok((_, None)) if is_shut_down(&*socket) => return,
                Ok((_, None)) => continue,
                Err(e) => {
                    if is_shut_down(&*socket) || is_fatal(&e) {
                        return;
                    }
                    errors += 1;
                    if errors >= MAX_ERRORS {
                        tracing::warn!("dns: giving up on udp socket after {errors} errors, last: {e}");
                        return;
                    }
                    continue;
                }
            };
            errors = 0;
            let query = &buf[..len];
            match self.respond(peer.ip(), query, Transport::Udp) {
                Answer::Reply(reply) => send_udp(&socket, &reply, peer),
                Answer::Drop => tracing::trace!("dns: dropped a message from {peer}"),
                Answer::Forward => self.forward_udp(&socket, query, peer),
            }
        }
    }

    /// Relays `query` from `peer` to the upstreams on a worker thread, which sends the reply (or
    /// SERVFAIL) back through `socket`.
    fn forward_udp(self: &Arc<Self>, socket: &Arc<UdpSocket>, query: &[u8], peer: SocketAddr) {
        if self.upstreams.is_empty() {
            send_udp(socket, &servfail(query), peer);
            return;
        }
        if self.forwards.fetch_add(1, Ordering::AcqRel) >= MAX_FORWARDS {
            self.forwards.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!("dns: too many queries in flight, dropped one from {peer}");
            return;
        }
        let guard = InFlight(self.clone());
        let socket = socket.clone();
        let query = query.to_vec();
        let spawned = std::thread::Builder::new().name("dns-forward".into()).spawn(move || {
            let resolver = &guard.0;
            let reply = forward(&resolver.upstreams, resolver.timeout, &query, exchange_udp);
            send_udp(&socket, &reply.unwrap_or_else(|| servfail(&query)), peer);
        });
        // The closure, and with it the guard, is dropped when the thread cannot start.
        if let Err(e) = spawned {
            tracing::warn!("dns: cannot start a forwarding thread: {e}");
        }
    }

    /// Serves DNS over TCP (each message behind its 2-byte length, several per connection, one
    /// thread per connection, answered in order) on `listener` until it is shut down
    /// (shutdown(2) of its descriptor) or fails for good; returns then. Queries to forward are
    /// relayed to the upstreams over TCP. Connections already open end on their own, when the
    /// asker closes them or after [`TCP_IDLE`].
    pub fn serve_tcp(self: &Arc<Self>, listener: TcpListener) {
        let mut errors = 0;
        loop {
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) => {
                    if is_shut_down(&listener) || is_fatal(&e) {
                        return;
                    }
                    errors += 1;
                    if errors >= MAX_ERRORS {
                        tracing::warn!("dns: giving up on tcp listener after {errors} errors, last: {e}");
                        return;
                    }
                    // Out of descriptors or memory: let some connections end first.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            errors = 0;
            if self.connections.fetch_add(1, Ordering::AcqRel) >= MAX_TCP_CONNECTIONS {
                self.connections.fetch_sub(1, Ordering::AcqRel);
                tracing::debug!("dns: too many tcp connections, closed one from {peer}");
                continue;
            }
            let resolver = self.clone();
            let spawned = std::thread::Builder::new().name("dns-tcp".into()).spawn(move || {
                resolver.serve_connection(stream, peer);
                resolver.connections.fetch_sub(1, Ordering::AcqRel);
            });
            if let Err(e) = spawned {
                self.connections.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!("dns: cannot start a tcp connection thread: {e}");
            }
        }
    }

    /// Answers the queries of one TCP connection until it closes, idles or errs.
    fn serve_connection(&self, mut stream: TcpStream, peer: SocketAddr) {
        if let Err(e) = stream
            .set_read_timeout(Some(TCP_IDLE))
            .and_then(|()| stream.set_write_timeout(Some(TCP_IDLE)))
        {
            tracing::debug!("dns: tcp connection from {peer}: {e}");
            return;
        }
        let mut query = Vec::new();
        loop {
            let mut len = [0u8; 2];
            if stream.read_exact(&mut len).is_err() {
                return;
            }
            query.resize(usize::from(u16::from_be_bytes(len)), 0);
            if stream.read_exact(&mut query).is_err() {
                return;
            }
            let reply = match self.respond(peer.ip(), &query, Transport::Tcp) {
                Answer::Reply(reply) => reply,
                Answer::Drop => return,
                Answer::Forward => {
                    forward(&self.upstreams, self.timeout, &query, exchange_tcp).unwrap_or_else(|| servfail(&query))
                }
            };
            if write_framed(&mut stream, &reply).is_err() {
                return;
            }
        }
    }
}

/// Counts one forwarded query in flight for as long as it lives.
struct InFlight(Arc<Resolver>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.forwards.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Receives one datagram and its sender. Unlike `UdpSocket::recv_from`, which asserts that the
/// kernel gave an address, this accepts the empty read of a socket that was shut down.
fn recv_from(socket: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, Option<SocketAddr>)> {
    // SAFETY: sockaddr_storage is plain data, for which all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the buffer and the address storage are valid for writes of the lengths given, and
    // outlive the call; the descriptor is borrowed from `socket` for the call.
    let read = unsafe {
        libc::recvfrom(
            socket.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&raw mut storage).cast(),
            &mut len,
        )
    };
    // A negative count is an error; any other fits usize.
    let Ok(read) = usize::try_from(read) else {
        return Err(std::io::Error::last_os_error());
    };
    Ok((read, socket_addr(&storage, len as usize)))
}

/// The address in `storage`, of which the kernel filled `len` bytes, if it is IPv4 or IPv6.
fn socket_addr(storage: &libc::sockaddr_storage, len: usize) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large and
            // aligned enough for, and `len` says the kernel filled it.
            let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                port,
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Sends `reply` to `peer`, logging a failure (the asker will retry).
fn send_udp(socket: &UdpSocket, reply: &[u8], peer: SocketAddr) {
    if let Err(e) = socket.send_to(reply, peer) {
        tracing::debug!("dns: reply to {peer}: {e}");
    }
}

/// Whether a socket was shut down: poll reports a hang-up, or the descriptor is gone.
fn is_shut_down(fd: &impl AsFd) -> bool {
    let mut pollfd = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd for a descriptor borrowed for the call; a zero timeout never blocks.
    let ready = unsafe { libc::poll(&mut pollfd, 1, 0) };
    ready < 0 || pollfd.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLNVAL) != 0
}

/// Errors after which a socket cannot serve again (a listener shut down fails `accept` with
/// EINVAL).
fn is_fatal(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EFAULT)
    )
}

/// Tries each upstream in order with `exchange`; the first reply that is not SERVFAIL or REFUSED
/// wins, else the last reply received, else `None`.
fn forward(
    upstreams: &[SocketAddr],
    timeout: Duration,
    query: &[u8],
    exchange: fn(SocketAddr, &[u8], Duration) -> std::io::Result<Vec<u8>>,
) -> Option<Vec<u8>> {
    let mut last = None;
    for &upstream in upstreams {
        match exchange(upstream, query, timeout) {
            Ok(reply) if matches!(reply[3] & 0x0f, RCODE_SERVFAIL | RCODE_REFUSED) => last = Some(reply),
            Ok(reply) => return Some(reply),
            Err(e) => tracing::debug!("dns: upstream {upstream}: {e}"),
        }
    }
    last
}

/// Whether `reply` (at least a header) answers `query`: same id, QR set.
fn answers(query: &[u8], reply: &[u8]) -> bool {
    reply.len() >= 12 && query.len() >= 2 && reply[..2] == query[..2] && reply[2] & 0x80 != 0
}

/// One query to `upstream` over UDP, from a fresh socket on a random port; stray datagrams are
/// ignored until the timeout.
pub(super) fn exchange_udp(upstream: SocketAddr, query: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(upstream)?;
    socket.send(query)?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        socket.set_read_timeout(Some(left))?;
        let len = socket.recv(&mut buf)?;
        if answers(query, &buf[..len]) {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

/// One query to `upstream` over TCP, `timeout` for the connection and for each read or write.
pub(super) fn exchange_tcp(upstream: SocketAddr, query: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&upstream, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write_framed(&mut stream, query)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply)?;
    if !answers(query, &reply) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "reply does not match the query",
        ));
    }
    Ok(reply)
}

/// Writes `message` behind its 2-byte length, in one write.
fn write_framed(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "dns message over 65535 bytes"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Query, ResponseCode};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    /// web on front (two replicas, one dual-stack), db on back, proxy on both.
    fn table() -> DnsTable {
        let mut t = DnsTable::new();
        t.add_endpoint(&[("front", ip("10.0.1.2"))]);
        t.add_endpoint(&[("front", ip("10.0.1.3")), ("front", ip("fd00::3"))]);
        t.add_endpoint(&[("back", ip("10.0.2.2"))]);
        t.add_endpoint(&[("front", ip("10.0.1.9")), ("back", ip("10.0.2.9"))]);
        t.add_name("front", "proj-web-2", ip("10.0.1.3"));
        t.add_name("front", "web", ip("10.0.1.3"));
        t.add_name("front", "web", ip("fd00::3"));
        t.add_name("front", "proj-web-1", ip("10.0.1.2"));
        t.add_name("front", "web", ip("10.0.1.2"));
        t.add_name("back", "proj-db-1", ip("10.0.2.2"));
        t.add_name("back", "DB.", ip("10.0.2.2"));
        t.add_name("front", "proxy", ip("10.0.1.9"));
        t.add_name("back", "proxy", ip("10.0.2.9"));
        t
    }

    fn query_bytes(id: u16, name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(id, hickory_proto::op::MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).expect("test name"), qtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().expect("encode test query")
    }

    fn reply(answer: Answer) -> Message {
        match answer {
            Answer::Reply(bytes) => Message::from_vec(&bytes).expect("decode reply"),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn ask(t: &DnsTable, asker: &str, name: &str, qtype: RecordType) -> Answer {
        answer(t, ip(asker), &query_bytes(0x1234, name, qtype, None))
    }

    fn addresses(m: &Message) -> Vec<IpAddr> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn names_are_scoped_by_network() {
        let t = table();
        assert_eq!(t.lookup(ip("10.0.2.2"), "web"), None, "db is only on back");
        assert_eq!(t.lookup(ip("10.0.1.2"), "db"), None, "web is only on front");
        assert_eq!(t.lookup(ip("10.0.2.2"), "db"), Some(vec![ip("10.0.2.2")]));
        assert_eq!(t.lookup(ip("192.0.2.1"), "web"), None, "unknown askers see nothing");
    }

    #[test]
    fn an_endpoint_on_two_networks_sees_both_from_either_address() {
        let t = table();
        for asker in ["10.0.1.9", "10.0.2.9"] {
            assert_eq!(t.lookup(ip(asker), "db"), Some(vec![ip("10.0.2.2")]), "{asker}");
            assert_eq!(t.lookup(ip(asker), "web").map(|v| v.len()), Some(3), "{asker}");
            assert_eq!(
                t.lookup(ip(asker), "proxy"),
                Some(vec![ip("10.0.1.9"), ip("10.0.2.9")]),
                "{asker}"
            );
        }
    }

    #[test]
    fn add_member_scopes_one_address() {
        let mut t = DnsTable::new();
        t.add_name("a", "x", ip("10.1.0.5"));
        t.add_member("b", ip("10.2.0.2"));
        assert_eq!(t.lookup(ip("10.2.0.2"), "x"), None);
        t.add_member("a", ip("10.2.0.2"));
        assert_eq!(t.lookup(ip("10.2.0.2"), "x"), Some(vec![ip("10.1.0.5")]));
    }

    #[test]
    fn replicas_are_all_answered_sorted() {
        let t = table();
        let want = vec![ip("10.0.1.2"), ip("10.0.1.3"), ip("fd00::3")];
        assert_eq!(t.lookup(ip("10.0.1.2"), "web"), Some(want));
        let m = reply(ask(&t, "10.0.1.2", "web.", RecordType::A));
        assert_eq!(addresses(&m), vec![ip("10.0.1.2"), ip("10.0.1.3")]);
        assert!(m.answers.iter().all(|r| r.ttl == TTL));
        let m = reply(ask(&t, "10.0.1.2", "web.", RecordType::ANY));
        assert_eq!(addresses(&m), vec![ip("10.0.1.2"), ip("10.0.1.3"), ip("fd00::3")]);
        let m = reply(ask(&t, "10.0.1.2", "web.", RecordType::AAAA));
        assert_eq!(addresses(&m), vec![ip("fd00::3")]);
    }

    #[test]
    fn names_ignore_case_and_trailing_dot() {
        let t = table();
        for name in ["db", "DB", "Db.", "db."] {
            assert_eq!(t.lookup(ip("10.0.2.2"), name), Some(vec![ip("10.0.2.2")]), "{name}");
        }
        let m = reply(ask(&t, "10.0.2.2", "dB.", RecordType::A));
        assert_eq!(addresses(&m), vec![ip("10.0.2.2")]);
        assert_eq!(m.answers[0].name.to_ascii(), "dB.", "the asker's spelling is echoed");
    }

    #[test]
    fn reply_header_echoes_the_query() {
        let t = table();
        let m = reply(ask(&t, "10.0.2.2", "db.", RecordType::A));
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.message_type, hickory_proto::op::MessageType::Response);
        assert!(m.metadata.authoritative);
        assert!(m.metadata.recursion_available);
        assert!(m.metadata.recursion_desired);
        assert!(!m.metadata.truncation);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.queries[0].name().to_ascii(), "db.");
        assert_eq!(m.queries[0].query_type(), RecordType::A);
        assert!(m.edns.is_none(), "no OPT without one in the query");
    }

    #[test]
    fn aaaa_for_an_ipv4_only_name_is_empty_noerror() {
        let t = table();
        let m = reply(ask(&t, "10.0.2.2", "db.", RecordType::AAAA));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        let m = reply(ask(&t, "10.0.2.2", "db.", RecordType::MX));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
    }

    #[test]
    fn ptr_answers_the_first_name_within_the_askers_networks() {
        let t = table();
        assert_eq!(t.reverse(ip("10.0.1.2"), ip("10.0.1.3")), Some("proj-web-2".to_owned()));
        assert_eq!(t.reverse(ip("10.0.2.2"), ip("10.0.1.3")), None);
        let m = reply(ask(&t, "10.0.1.2", "3.1.0.10.in-addr.arpa.", RecordType::PTR));
        assert_eq!(m.answers.len(), 1);
        let RData::PTR(target) = &m.answers[0].data else {
            panic!("not a PTR: {:?}", m.answers[0])
        };
        assert_eq!(target.0.to_ascii(), "proj-web-2.");
        let v6 = "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
        let m = reply(ask(&t, "10.0.1.2", v6, RecordType::PTR));
        let RData::PTR(target) = &m.answers[0].data else {
            panic!("not a PTR: {:?}", m.answers[0])
        };
        assert_eq!(target.0.to_ascii(), "web.", "the only name added for fd00::3");
        assert_eq!(
            ask(&t, "10.0.2.2", "3.1.0.10.in-addr.arpa.", RecordType::PTR),
            Answer::Forward
        );
        assert_eq!(
            ask(&t, "10.0.1.2", "8.8.8.8.in-addr.arpa.", RecordType::PTR),
            Answer::Forward
        );
    }

    #[test]
    fn arpa_names_parse_strictly() {
        let name = |s: &str| Name::from_ascii(s).expect("test name");
        assert_eq!(arpa_address(&name("4.3.2.1.IN-ADDR.ARPA.")), Some(ip("1.2.3.4")));
        assert_eq!(arpa_address(&name("3.2.1.in-addr.arpa.")), None);
        assert_eq!(arpa_address(&name("5.4.3.2.1.in-addr.arpa.")), None);
        assert_eq!(arpa_address(&name("256.3.2.1.in-addr.arpa.")), None);
        assert_eq!(arpa_address(&name("0004.3.2.1.in-addr.arpa.")), None);
        assert_eq!(arpa_address(&name("1.0.ip6.arpa.")), None);
        assert_eq!(arpa_address(&name("example.com.")), None);
    }

    #[test]
    fn unknown_names_and_other_classes_are_forwarded() {
        let t = table();
        assert_eq!(ask(&t, "10.0.1.2", "example.com.", RecordType::A), Answer::Forward);
        assert_eq!(
            ask(&t, "10.0.1.2", "db.", RecordType::A),
            Answer::Forward,
            "db is out of scope"
        );
        assert_eq!(ask(&t, "192.0.2.7", "web.", RecordType::A), Answer::Forward);
        let mut m = Message::from_vec(&query_bytes(7, "web.", RecordType::A, None)).expect("decode");
        m.queries[0].set_query_class(DNSClass::CH);
        assert_eq!(
            answer(&t, ip("10.0.1.2"), &m.to_vec().expect("encode")),
            Answer::Forward
        );
    }

    #[test]
    fn malformed_queries_get_formerr_or_are_dropped() {
        let t = table();
        let asker = ip("10.0.1.2");
        assert_eq!(answer(&t, asker, &[]), Answer::Drop);
        assert_eq!(answer(&t, asker, &[0xab; 11]), Answer::Drop);
        let good = query_bytes(0xbeef, "web.", RecordType::A, None);
        // Cut inside the question.
        let Answer::Reply(r) = answer(&t, asker, &good[..good.len() - 3]) else {
            panic!("expected FORMERR")
        };
        assert_eq!(r.len(), 12);
        assert_eq!(&r[..2], &[0xbe, 0xef]);
        assert_eq!(r[2] & 0x80, 0x80, "QR");
        assert_eq!(r[3] & 0x0f, RCODE_FORMERR);
        // Two questions.
        let mut two = Message::from_vec(&good).expect("decode");
        two.add_query(two.queries[0].clone());
        let m = reply(answer(&t, asker, &two.to_vec().expect("encode")));
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // No question.
        let none = &[0xbe, 0xef, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            reply(answer(&t, asker, none)).metadata.response_code,
            ResponseCode::FormErr
        );
        // A response is never answered.
        let mut resp = good.clone();
        resp[2] |= 0x80;
        assert_eq!(answer(&t, asker, &resp), Answer::Drop);
        // Another opcode.
        let mut status = good.clone();
        status[2] = (status[2] & !0x78) | (2 << 3);
        let Answer::Reply(r) = answer(&t, asker, &status) else {
            panic!("expected NOTIMP")
        };
        assert_eq!(r[3] & 0x0f, RCODE_NOTIMP);
    }

    #[test]
    fn no_input_panics() {
        // Deterministic mutations of real queries: flipped bytes, cuts and garbage tails.
        let t = table();
        let asker = ip("10.0.1.2");
        let seeds = [
            query_bytes(1, "web.", RecordType::A, Some(1232)),
            query_bytes(2, "3.1.0.10.in-addr.arpa.", RecordType::PTR, None),
            query_bytes(3, "example.com.", RecordType::AAAA, None),
        ];
        let mut state: u32 = 0x2545_f491;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for seed in &seeds {
            for _ in 0..3000 {
                let mut q = seed.clone();
                for _ in 0..=(next() % 4) {
                    let i = next() as usize % q.len();
                    q[i] = next() as u8;
                }
                match next() % 3 {
                    0 => q.truncate(next() as usize % (q.len() + 1)),
                    1 => q.extend((0..next() % 16).map(|_| next() as u8)),
                    _ => {}
                }
                let _ = answer(&t, asker, &q);
                let _ = respond(&t, asker, &q, Transport::Tcp);
            }
        }
    }

    #[test]
    fn edns_is_answered_with_opt() {
        let t = table();
        let m = reply(answer(
            &t,
            ip("10.0.2.2"),
            &query_bytes(9, "db.", RecordType::A, Some(1232)),
        ));
        assert_eq!(m.edns.as_ref().map(Edns::max_payload), Some(MAX_UDP_PAYLOAD));
        assert_eq!(addresses(&m), vec![ip("10.0.2.2")]);
    }

    #[test]
    fn large_udp_answers_are_truncated_with_tc() {
        let mut t = DnsTable::new();
        t.add_member("n", ip("10.9.0.1"));
        for i in 0..100u8 {
            t.add_name("n", "many", IpAddr::V4(Ipv4Addr::new(10, 9, 1, i)));
        }
        let q = query_bytes(5, "many.", RecordType::A, None);
        let Answer::Reply(bytes) = answer(&t, ip("10.9.0.1"), &q) else {
            panic!("expected a reply")
        };
        assert!(bytes.len() <= 512, "{} bytes", bytes.len());
        let m = Message::from_vec(&bytes).expect("decode");
        assert!(m.metadata.truncation);
        assert!(
            !m.answers.is_empty() && m.answers.len() < 100,
            "{} answers",
            m.answers.len()
        );
        assert_eq!(addresses(&m)[0], ip("10.9.1.0"), "the first addresses are kept");
        // With EDNS 4096 everything fits.
        let q = query_bytes(5, "many.", RecordType::A, Some(4096));
        let m = reply(answer(&t, ip("10.9.0.1"), &q));
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 100);
        // Over TCP everything fits too.
        let q = query_bytes(5, "many.", RecordType::A, None);
        let m = reply(respond(&t, ip("10.9.0.1"), &q, Transport::Tcp));
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 100);
    }

    #[test]
    fn servfail_echoes_the_question() {
        let q = query_bytes(0x4242, "example.com.", RecordType::A, None);
        let m = Message::from_vec(&servfail(&q)).expect("decode");
        assert_eq!(m.metadata.id, 0x4242);
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(m.queries[0].name().to_ascii(), "example.com.");
    }

    #[test]
    fn upstreams_come_from_nameserver_lines() {
        let text = "# generated\n\
                    search example.com\n\
                    nameserver 127.0.0.53\n\
                    nameserver   2001:db8::1  # trailing\n\
                    ; nameserver 9.9.9.9\n\
                    nameserver not-an-address\n\
                    nameserver 127.0.0.53\n\
                    nameserver fe80::1%7\n\
                    nameserver 1.1.1.1\n\
                    options ndots:2\n";
        let want: Vec<SocketAddr> = vec![
            "127.0.0.53:53".parse().expect("addr"),
            "[2001:db8::1]:53".parse().expect("addr"),
            SocketAddr::V6(std::net::SocketAddrV6::new("fe80::1".parse().expect("addr"), 53, 0, 7)),
        ];
        assert_eq!(
            upstreams_from_resolv_conf(text),
            want,
            "at most three, in order, no duplicates"
        );
        assert_eq!(upstreams_from_resolv_conf(""), Vec::<SocketAddr>::new());
        assert_eq!(
            upstreams_from_resolv_conf("nameserver 10.0.0.1%eth0\nnameserver"),
            Vec::<SocketAddr>::new()
        );
        assert_eq!(
            upstreams_from_resolv_conf("nameserver 8.8.8.8"),
            vec!["8.8.8.8:53".parse().expect("addr")]
        );
    }

    #[test]
    fn forward_prefers_an_answer_over_servfail() {
        fn ok(_: SocketAddr, q: &[u8], _: Duration) -> std::io::Result<Vec<u8>> {
            Ok(header_reply(q, 0))
        }
        fn fail(_: SocketAddr, q: &[u8], _: Duration) -> std::io::Result<Vec<u8>> {
            Ok(header_reply(q, RCODE_SERVFAIL))
        }
        fn dead(_: SocketAddr, _: &[u8], _: Duration) -> std::io::Result<Vec<u8>> {
            Err(std::io::ErrorKind::TimedOut.into())
        }
        let q = query_bytes(1, "example.com.", RecordType::A, None);
        let ups: Vec<SocketAddr> = vec![
            "192.0.2.1:53".parse().expect("addr"),
            "192.0.2.2:53".parse().expect("addr"),
        ];
        let t = Duration::from_millis(1);
        assert_eq!(forward(&ups, t, &q, ok).map(|r| r[3] & 0x0f), Some(0));
        assert_eq!(forward(&ups, t, &q, fail).map(|r| r[3] & 0x0f), Some(RCODE_SERVFAIL));
        assert_eq!(forward(&ups, t, &q, dead), None);
        assert_eq!(forward(&[], t, &q, ok), None);
    }
}
