//! Integration tests of the userland proxy (`berth::network::proxy`) on loopback: TCP and UDP
//! forwarding, half-close, integrity, flow expiry, bind conflicts, stopping. The egress test needs
//! root (it builds network namespaces and an nftables redirect); not being root fails it.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth::network::NetworkError;
use berth::network::proxy::{
    ProxyHandle, TcpConnector, UdpConnector, bind_tcp, bind_udp, egress_tcp, forward_tcp, forward_udp,
};
use nix::sched::{CloneFlags, unshare};

/// 127.0.0.1 with a random port.
fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// A TCP echo server: each connection's bytes are sent back as they come, and its end of stream
/// answered with one.
fn echo_server(addr: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind(addr).expect("bind echo server");
    let addr = l.local_addr().expect("echo address");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut r = s.try_clone().expect("clone");
                let _ = std::io::copy(&mut r, &mut s);
                let _ = s.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// A connector to `target` from this namespace.
fn tcp_to(target: SocketAddr) -> TcpConnector {
    Arc::new(move || TcpStream::connect(target))
}

/// A proxy on a random loopback port forwarding to a fresh echo server.
fn echo_proxy() -> ProxyHandle {
    let target = echo_server(loopback());
    forward_tcp(bind_tcp(loopback()).expect("bind proxy"), tcp_to(target))
}

/// Sends `data`, shuts the write half, and returns everything read back until end of stream.
fn roundtrip(addr: SocketAddr, data: Vec<u8>) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect proxy");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        w.write_all(&data).expect("write");
        w.shutdown(Shutdown::Write).expect("shutdown write");
    });
    let mut back = Vec::new();
    s.read_to_end(&mut back).expect("read back after half-close");
    writer.join().expect("writer");
    back
}

/// Deterministic test bytes.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn tcp_echo_through_forward_tcp_concurrently_with_half_close() {
    let proxy = echo_proxy();
    let addr = proxy.local_addr();
    let clients: Vec<_> = (0..16u8)
        .map(|i| {
            std::thread::spawn(move || {
                let data = pattern(100_000 + usize::from(i) * 977, i);
                assert!(roundtrip(addr, data.clone()) == data, "client {i}: echo differs");
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    proxy.stop();
}

#[test]
fn tcp_reply_after_client_half_close_reaches_client() {
    // The server reads to end of stream first, then answers: only works if the proxy forwards the
    // client's FIN and keeps the other direction open.
    let l = TcpListener::bind(loopback()).expect("bind");
    let target = l.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read to end");
        s.write_all(format!("got {} bytes", got.len()).as_bytes())
            .expect("answer");
    });
    let proxy = forward_tcp(bind_tcp(loopback()).expect("bind proxy"), tcp_to(target));
    let answer = roundtrip(proxy.local_addr(), vec![7; 5000]);
    assert_eq!(String::from_utf8_lossy(&answer), "got 5000 bytes");
    server.join().expect("server");
}

#[test]
fn tcp_64_mib_transfer_is_intact() {
    let proxy = echo_proxy();
    let data = pattern(64 << 20, 3);
    let t = Instant::now();
    let back = roundtrip(proxy.local_addr(), data.clone());
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "64 MiB echo differs");
    eprintln!(
        "64 MiB echoed through the proxy in {secs:.3} s ({:.0} MB/s each way)",
        64.0 / secs
    );
}

#[test]
fn tcp_connector_failure_resets_the_client() {
    let connect: TcpConnector = Arc::new(|| Err(std::io::Error::from(ErrorKind::ConnectionRefused)));
    let proxy = forward_tcp(bind_tcp(loopback()).expect("bind"), connect);
    let mut s = TcpStream::connect(proxy.local_addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = [0u8; 1];
    let r = s.read(&mut buf);
    assert!(matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionReset), "{r:?}");
}

#[test]
fn tcp_stop_returns_promptly_and_cuts_connections() {
    let proxy = echo_proxy();
    let addr = proxy.local_addr();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).expect("echo");
    let t = Instant::now();
    proxy.stop();
    assert!(t.elapsed() < Duration::from_secs(1), "stop took {:?}", t.elapsed());
    // The established connection is cut: end of stream (or a reset), never a hang.
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        r => panic!("connection still open after stop: {r:?}"),
    }
    let again = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    assert!(again.is_err(), "listener still accepting after stop");
    // The port can be published again at once.
    drop(bind_tcp(addr).expect("rebind after stop"));
}

#[test]
fn tcp_bind_conflict_names_the_port_and_this_process() {
    let holder = TcpListener::bind(loopback()).expect("bind holder");
    let addr = holder.local_addr().expect("addr");
    let err = bind_tcp(addr).expect_err("the port is held");
    let NetworkError::PortConflict { proto, addr: a, reason } = &err else {
        panic!("not a conflict: {err:?}")
    };
    assert_eq!((*proto, a.as_str()), ("tcp", addr.to_string().as_str()));
    assert!(reason.contains(&format!("port {}", addr.port())), "{reason}");
    assert!(reason.contains(&format!("(pid {})", std::process::id())), "{reason}");
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("cannot publish tcp port {addr}: ")), "{msg}");
}

#[test]
fn udp_bind_conflict_names_the_port_and_this_process() {
    let holder = UdpSocket::bind(loopback()).expect("bind holder");
    let addr = holder.local_addr().expect("addr");
    let msg = bind_udp(addr).expect_err("the port is held").to_string();
    assert!(msg.contains(&format!("port {}", addr.port())), "{msg}");
    assert!(msg.contains(&format!("(pid {})", std::process::id())), "{msg}");
}

#[test]
fn ipv6_loopback_binds_v6_only_and_forwards() {
    let v6: SocketAddr = "[::1]:0".parse().expect("addr");
    let target = echo_server(v6);
    let listener = bind_tcp(v6).expect("bind [::1]");
    let addr = listener.local_addr().expect("addr");
    assert!(addr.is_ipv6());
    let proxy = forward_tcp(listener, tcp_to(target));
    assert_eq!(roundtrip(addr, b"over v6".to_vec()), b"over v6");
    proxy.stop();
    let u = bind_udp(v6).expect("bind udp [::1]");
    assert!(u.local_addr().expect("addr").is_ipv6());
    // v6-only: the same port number is still free on 0.0.0.0.
    drop(TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()))).expect("v4 port free"));
}

/// A UDP echo server that prefixes each answer with the sender's port as seen by it.
fn udp_echo() -> SocketAddr {
    let s = UdpSocket::bind(loopback()).expect("bind udp echo");
    let addr = s.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let mut answer = format!("{}:", from.port()).into_bytes();
            answer.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&answer, from);
        }
    });
    addr
}

/// A UDP connector to `target` counting the flows it opens.
fn udp_to(target: SocketAddr, opened: Arc<AtomicUsize>) -> UdpConnector {
    Arc::new(move || {
        opened.fetch_add(1, Ordering::SeqCst);
        let s = UdpSocket::bind(loopback())?;
        s.connect(target)?;
        Ok(s)
    })
}

/// Sends `msg` from `c` to `to` and returns the answer.
fn ask(c: &UdpSocket, to: SocketAddr, msg: &str) -> String {
    c.send_to(msg.as_bytes(), to).expect("send");
    let mut buf = [0u8; 2048];
    let (n, from) = c.recv_from(&mut buf).expect("answer");
    assert_eq!(from, to, "answer from the proxy's address");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A loopback UDP client with a receive timeout.
fn udp_client() -> UdpSocket {
    let c = UdpSocket::bind(loopback()).expect("bind client");
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    c
}

#[test]
fn udp_two_clients_get_their_own_replies() {
    let opened = Arc::new(AtomicUsize::new(0));
    let proxy = forward_udp(
        bind_udp(loopback()).expect("bind"),
        udp_to(udp_echo(), opened.clone()),
        Duration::from_secs(30),
    );
    let addr = proxy.local_addr();
    let (a, b) = (udp_client(), udp_client());
    let a1 = ask(&a, addr, "from a");
    let b1 = ask(&b, addr, "from b");
    let a2 = ask(&a, addr, "again a");
    let (pa, ma) = a1.split_once(':').expect("prefix");
    let (pb, mb) = b1.split_once(':').expect("prefix");
    assert_eq!((ma, mb), ("from a", "from b"));
    assert_ne!(pa, pb, "each client has its own upstream socket");
    assert_eq!(a2, format!("{pa}:again a"), "a flow keeps its upstream socket");
    assert_eq!(opened.load(Ordering::SeqCst), 2);
    let t = Instant::now();
    proxy.stop();
    assert!(t.elapsed() < Duration::from_secs(1), "stop took {:?}", t.elapsed());
}

#[test]
fn udp_idle_flows_expire() {
    let opened = Arc::new(AtomicUsize::new(0));
    let idle = Duration::from_millis(200);
    let proxy = forward_udp(
        bind_udp(loopback()).expect("bind"),
        udp_to(udp_echo(), opened.clone()),
        idle,
    );
    let addr = proxy.local_addr();
    let c = udp_client();
    let first = ask(&c, addr, "one");
    std::thread::sleep(Duration::from_millis(50));
    let second = ask(&c, addr, "two");
    assert_eq!(opened.load(Ordering::SeqCst), 1, "activity keeps the flow");
    std::thread::sleep(idle * 3);
    let third = ask(&c, addr, "three");
    assert_eq!(
        opened.load(Ordering::SeqCst),
        2,
        "an idle flow is dropped and a new one opened"
    );
    let port = |s: &str| s.split_once(':').map(|(p, _)| p.to_string());
    assert_eq!(port(&first), port(&second));
    assert_ne!(port(&first), port(&third));
}

/// Fails the test unless it runs as root.
fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the egress test needs root (CI runs as root): run it with sudo"
    );
}

/// Runs a shell command in the calling thread's network namespace (children inherit it).
fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("run sh");
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Joins a thread, passing its panic on.
fn join<T>(t: std::thread::JoinHandle<T>) -> T {
    t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Accepts one connection within `limit`, or panics.
fn accept_within(l: &TcpListener, limit: Duration) -> (TcpStream, SocketAddr) {
    l.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + limit;
    loop {
        match l.accept() {
            Ok((s, peer)) => {
                s.set_nonblocking(false).expect("blocking");
                return (s, peer);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("no relayed connection: {e}"),
        }
    }
}

/// Two fresh namespaces, each living as long as its thread (so nothing is left behind, even on
/// failure): "infra", where a client's TCP to 10.99.0.2:PORT is redirected by nftables to the
/// egress listener, and "host", where 10.99.0.2 is a real address with a server and from where
/// the proxy connects. The server must see the proxy's connection come from the host side and
/// the bytes must flow both ways.
#[test]
fn egress_connects_to_the_original_destination_from_the_callers_namespace() {
    require_root();
    let (listener_tx, listener_rx) = mpsc::channel::<(TcpListener, u16)>();
    let (target_tx, target_rx) = mpsc::channel::<u16>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let host = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare the host namespace");
        sh("ip link set lo up && ip addr add 10.99.0.2/32 dev lo");
        let server = TcpListener::bind("10.99.0.2:0").expect("bind target");
        let port = server.local_addr().expect("addr").port();
        target_tx.send(port).expect("send target port");
        let (listener, _) = listener_rx.recv().expect("egress listener");
        let egress = egress_tcp(listener);
        let (mut s, peer) = accept_within(&server, Duration::from_secs(20));
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut hello = [0u8; 5];
        s.read_exact(&mut hello).expect("read hello");
        s.write_all(b"from the target").expect("answer");
        drop(s);
        done_rx.recv().expect("client done");
        egress.stop();
        (peer, hello)
    });
    let infra = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare the infra namespace");
        let target = target_rx.recv().expect("target port");
        let listener = TcpListener::bind("0.0.0.0:0").expect("bind egress listener");
        let port = listener.local_addr().expect("addr").port();
        sh(&format!(
            "ip link set lo up && ip addr add 10.99.0.1/24 dev lo \
            && nft add table ip t \
            && nft add chain ip t out '{{ type nat hook output priority -100; }}' \
            && nft add rule ip t out ip daddr 10.99.0.2 tcp dport {target} redirect to :{port}"
        ));
        listener_tx.send((listener, port)).expect("send listener");
        let to = SocketAddr::from(([10, 99, 0, 2], target));
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(10)).expect("connect 10.99.0.2");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        s.write_all(b"hello").expect("write");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read");
        // A connection made straight to the egress port (not redirected) is refused.
        let mut direct = TcpStream::connect(("127.0.0.1", port)).expect("connect egress port");
        direct.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let direct = direct.read(&mut [0u8; 1]).map_err(|e| e.kind());
        done_tx.send(()).expect("done");
        (answer, direct)
    });
    let (answer, direct) = join(infra);
    let (peer, hello) = join(host);
    assert_eq!(&hello, b"hello");
    assert_eq!(answer, "from the target");
    assert_eq!(
        peer.ip(),
        Ipv4Addr::new(10, 99, 0, 2),
        "the host side's address, not the client's"
    );
    assert_eq!(direct, Err(ErrorKind::ConnectionReset));
}
