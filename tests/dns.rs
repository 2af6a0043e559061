//! The embedded DNS resolver over real sockets on 127.0.0.1: local answers, forwarding to a fake
//! upstream over UDP and TCP, SERVFAIL when upstreams are dead, and shutdown. Needs no root.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use berth::network::dns::{DnsTable, Resolver};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The one name the fake upstream knows, and its address.
const UPSTREAM_NAME: &str = "upstream.test.";
const UPSTREAM_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
/// Generous bound on any one reply in these tests.
const PATIENCE: Duration = Duration::from_secs(10);

/// A fake upstream resolver on UDP and TCP of one 127.0.0.1 port: knows `UPSTREAM_NAME`, answers
/// NXDOMAIN for everything else, and counts the queries it gets.
struct FakeUpstream {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
}

impl FakeUpstream {
    fn start() -> Self {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().expect("upstream address");
        let queries = Arc::new(AtomicUsize::new(0));
        let count = queries.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok((n, peer)) = udp.recv_from(&mut buf) {
                count.fetch_add(1, Ordering::SeqCst);
                if let Some(reply) = upstream_reply(&buf[..n]) {
                    let _ = udp.send_to(&reply, peer);
                }
            }
        });
        let count = queries.clone();
        std::thread::spawn(move || {
            for mut stream in tcp.incoming().flatten() {
                let count = count.clone();
                std::thread::spawn(move || {
                    while let Some(query) = read_framed(&mut stream) {
                        count.fetch_add(1, Ordering::SeqCst);
                        let Some(reply) = upstream_reply(&query) else { return };
                        if write_framed(&mut stream, &reply).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeUpstream { addr, queries }
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

/// A UDP socket and a TCP listener on the same ephemeral 127.0.0.1 port.
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp");
        let addr = udp.local_addr().expect("udp address");
        if let Ok(tcp) = TcpListener::bind(addr) {
            return (udp, tcp);
        }
    }
    panic!("no port free for both udp and tcp on 127.0.0.1");
}

/// The fake upstream's reply to one query.
fn upstream_reply(query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let question = request.queries.first()?.clone();
    let mut reply = Message::response(request.metadata.id, OpCode::Query);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    if question.name().to_ascii().eq_ignore_ascii_case(UPSTREAM_NAME) && question.query_type() == RecordType::A {
        reply.add_answer(Record::from_rdata(
            question.name().clone(),
            42,
            RData::A(A(UPSTREAM_ADDR)),
        ));
    } else {
        reply.metadata.response_code = ResponseCode::NXDomain;
    }
    reply.add_query(question);
    reply.to_vec().ok()
}

/// A resolver serving UDP and TCP on ephemeral 127.0.0.1 ports in their own threads.
struct Served {
    udp: SocketAddr,
    tcp: SocketAddr,
    /// Second descriptors of the serving sockets, to shut them down.
    udp_fd: OwnedFd,
    tcp_fd: OwnedFd,
    udp_done: mpsc::Receiver<()>,
    tcp_done: mpsc::Receiver<()>,
    threads: Vec<JoinHandle<()>>,
}

impl Served {
    /// `web` (two replicas) is known on network `front`, which 127.0.0.1 is on.
    fn start(upstreams: Vec<SocketAddr>, timeout: Duration) -> Self {
        let mut table = DnsTable::new();
        let endpoint: Vec<(String, IpAddr)> = vec![("front".to_owned(), LOCALHOST)];
        table.add_endpoint(&endpoint);
        table.add_name("front", "web", "10.0.1.3".parse().expect("addr"));
        table.add_name("front", "web", "10.0.1.2".parse().expect("addr"));
        let resolver = Resolver::with_timeout(table, upstreams, timeout);

        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind resolver udp");
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind resolver tcp");
        let (udp_addr, tcp_addr) = (udp.local_addr().expect("addr"), tcp.local_addr().expect("addr"));
        let udp_fd = OwnedFd::from(udp.try_clone().expect("dup udp"));
        let tcp_fd = OwnedFd::from(tcp.try_clone().expect("dup tcp"));
        let (udp_tx, udp_done) = mpsc::channel();
        let (tcp_tx, tcp_done) = mpsc::channel();
        let r = resolver.clone();
        let t1 = std::thread::spawn(move || {
            r.serve_udp(udp);
            let _ = udp_tx.send(());
        });
        let r = resolver;
        let t2 = std::thread::spawn(move || {
            r.serve_tcp(tcp);
            let _ = tcp_tx.send(());
        });
        Served {
            udp: udp_addr,
            tcp: tcp_addr,
            udp_fd,
            tcp_fd,
            udp_done,
            tcp_done,
            threads: vec![t1, t2],
        }
    }
}

fn query(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    m.to_vec().expect("encode query")
}

/// A UDP client socket with a bounded wait.
fn client() -> UdpSocket {
    let c = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind client");
    c.set_read_timeout(Some(PATIENCE)).expect("timeout");
    c
}

fn receive(c: &UdpSocket) -> Message {
    let mut buf = [0u8; 4096];
    let (n, _) = c.recv_from(&mut buf).expect("a reply in time");
    Message::from_vec(&buf[..n]).expect("decode reply")
}

fn ask_udp(server: SocketAddr, id: u16, name: &str, qtype: RecordType) -> Message {
    let c = client();
    c.send_to(&query(id, name, qtype), server).expect("send");
    receive(&c)
}

fn read_framed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).ok()?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut msg).ok()?;
    Some(msg)
}

fn write_framed(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let mut framed = u16::try_from(msg.len()).expect("short message").to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    stream.write_all(&framed)
}

fn addresses(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

fn shutdown(fd: &OwnedFd) {
    // SAFETY: shutdown(2) on a descriptor this test owns; it only changes the socket's state.
    let rc = unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
    // A UDP socket reports ENOTCONN but is shut down all the same.
    assert!(rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOTCONN));
}

#[test]
fn known_name_is_answered_locally() {
    let upstream = FakeUpstream::start();
    let s = Served::start(vec![upstream.addr], Duration::from_secs(2));
    let m = ask_udp(s.udp, 0x1111, "WEB.", RecordType::A);
    assert_eq!(m.metadata.id, 0x1111);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(
        addresses(&m),
        vec![
            "10.0.1.2".parse::<IpAddr>().expect("addr"),
            "10.0.1.3".parse().expect("addr")
        ]
    );
    assert!(m.answers.iter().all(|r| r.ttl == 600));
    let m = ask_udp(s.udp, 0x1112, "web.", RecordType::AAAA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(upstream.queries(), 0, "nothing was forwarded");
}

#[test]
fn unknown_name_is_forwarded_and_the_reply_keeps_the_id() {
    let upstream = FakeUpstream::start();
    let s = Served::start(vec![upstream.addr], Duration::from_secs(2));
    let m = ask_udp(s.udp, 0xabcd, UPSTREAM_NAME, RecordType::A);
    assert_eq!(m.metadata.id, 0xabcd);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&m), vec![IpAddr::V4(UPSTREAM_ADDR)]);
    assert_eq!(m.answers[0].ttl, 42, "the upstream's reply is relayed as is");
    let m = ask_udp(s.udp, 0xabce, "nowhere.test.", RecordType::A);
    assert_eq!(m.metadata.id, 0xabce);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(upstream.queries(), 2);
}

#[test]
fn dead_upstreams_give_servfail_in_bounded_time() {
    // One that never answers, and a closed port.
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind silent upstream");
    let closed = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("bind")
        .local_addr()
        .expect("addr");
    let timeout = Duration::from_millis(300);
    let s = Served::start(vec![closed, silent.local_addr().expect("addr")], timeout);
    let started = Instant::now();
    let m = ask_udp(s.udp, 0x5151, UPSTREAM_NAME, RecordType::A);
    let took = started.elapsed();
    assert_eq!(m.metadata.id, 0x5151);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(m.queries.len(), 1, "the question is echoed");
    assert!(
        took >= timeout,
        "answered before the silent upstream timed out: {took:?}"
    );
    assert!(took < timeout * 5, "took {took:?}");
}

#[test]
fn no_upstream_gives_servfail() {
    let s = Served::start(Vec::new(), Duration::from_secs(2));
    let m = ask_udp(s.udp, 7, UPSTREAM_NAME, RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[test]
fn a_dead_upstream_is_skipped_for_the_next() {
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind silent upstream");
    let upstream = FakeUpstream::start();
    let s = Served::start(
        vec![silent.local_addr().expect("addr"), upstream.addr],
        Duration::from_millis(200),
    );
    let m = ask_udp(s.udp, 9, UPSTREAM_NAME, RecordType::A);
    assert_eq!(addresses(&m), vec![IpAddr::V4(UPSTREAM_ADDR)]);
}

#[test]
fn local_answers_do_not_wait_for_forwarded_ones() {
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind silent upstream");
    let s = Served::start(vec![silent.local_addr().expect("addr")], Duration::from_secs(1));
    let c = client();
    c.send_to(&query(1, UPSTREAM_NAME, RecordType::A), s.udp).expect("send");
    c.send_to(&query(2, "web.", RecordType::A), s.udp).expect("send");
    let first = receive(&c);
    assert_eq!(first.metadata.id, 2, "the local answer comes first");
    assert_eq!(addresses(&first).len(), 2);
    let second = receive(&c);
    assert_eq!(second.metadata.id, 1);
    assert_eq!(second.metadata.response_code, ResponseCode::ServFail);
}

#[test]
fn tcp_serves_several_queries_per_connection() {
    let upstream = FakeUpstream::start();
    let s = Served::start(vec![upstream.addr], Duration::from_secs(2));
    let mut stream = TcpStream::connect(s.tcp).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    write_framed(&mut stream, &query(0x2001, "web.", RecordType::A)).expect("write");
    write_framed(&mut stream, &query(0x2002, UPSTREAM_NAME, RecordType::A)).expect("write");
    let local = Message::from_vec(&read_framed(&mut stream).expect("first reply")).expect("decode");
    assert_eq!(local.metadata.id, 0x2001);
    assert_eq!(addresses(&local).len(), 2);
    let forwarded = Message::from_vec(&read_framed(&mut stream).expect("second reply")).expect("decode");
    assert_eq!(forwarded.metadata.id, 0x2002);
    assert_eq!(addresses(&forwarded), vec![IpAddr::V4(UPSTREAM_ADDR)]);
    assert_eq!(upstream.queries(), 1, "forwarded over tcp");
}

#[test]
fn shutting_the_sockets_down_ends_serving() {
    let s = Served::start(Vec::new(), Duration::from_secs(2));
    // Serving first, so the threads are blocked in recv and accept.
    assert_eq!(addresses(&ask_udp(s.udp, 1, "web.", RecordType::A)).len(), 2);
    shutdown(&s.udp_fd);
    s.udp_done
        .recv_timeout(PATIENCE)
        .expect("serve_udp returns after shutdown");
    assert!(s.tcp_done.try_recv().is_err(), "tcp is still served");
    let mut stream = TcpStream::connect(s.tcp).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    write_framed(&mut stream, &query(2, "web.", RecordType::A)).expect("write");
    assert!(read_framed(&mut stream).is_some());
    shutdown(&s.tcp_fd);
    s.tcp_done
        .recv_timeout(PATIENCE)
        .expect("serve_tcp returns after shutdown");
    for t in s.threads {
        t.join().expect("serving thread panicked");
    }
}
