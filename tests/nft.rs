//! Root integration tests of the nf_tables client (`berth::network::nft`) against the real kernel.
//! Each test works in fresh network namespaces of its own, entered by dedicated threads, and reads
//! the result back with the `nft` tool run from those threads. The only addresses used are ones
//! the tests create. Not being root is a failure, never a skip.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth::network::NetworkError;
use berth::network::nft::{EgressBridge, apply_egress, delete_table};
use nix::sched::{CloneFlags, unshare};
use serde_json::{Value, json};

/// Fails the test unless it runs as root.
fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the nf_tables tests need root: run them as root"
    );
}

/// Runs `f` on a new thread that first enters a fresh network namespace; the namespace goes away
/// with the thread.
fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    require_root();
    let t = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare a network namespace");
        f()
    });
    match t.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs a shell command in the calling thread's network namespace (children inherit it).
fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("run sh");
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nft -j list ruleset` in the calling thread's namespace: the list under `"nftables"`.
fn ruleset() -> Vec<Value> {
    let v: Value = serde_json::from_str(&sh("nft -j list ruleset")).expect("nft json");
    v["nftables"].as_array().cloned().unwrap_or_default()
}

/// The objects of `kind` ("table", "chain", "rule") in `table` of the ruleset.
fn objects(rs: &[Value], kind: &str, table: &str) -> Vec<Value> {
    rs.iter()
        .filter_map(|o| o.get(kind))
        .filter(|o| {
            let t = if kind == "table" { &o["name"] } else { &o["table"] };
            t == table
        })
        .cloned()
        .collect()
}

/// The expressions nft shows for the egress rule of one bridge.
fn egress_exprs(ifname: &str, net: &str, len: u8, port: u16) -> Value {
    json!([
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": ifname}},
        {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                   "right": {"prefix": {"addr": net, "len": len}}}},
        {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
        {"redirect": {"port": port}}
    ])
}

/// A bridge entry.
fn bridge(ifname: &str, subnet: [u8; 4], prefix_len: u8) -> EgressBridge {
    EgressBridge {
        ifname: ifname.to_string(),
        subnet: Ipv4Addr::from(subnet),
        prefix_len,
    }
}

#[test]
fn apply_egress_creates_the_nat_chain_and_one_rule_per_bridge() {
    let rs = in_fresh_netns(|| {
        let bridges = [
            bridge("br-aaaa", [10, 1, 0, 0], 16),
            bridge("br-bbbb", [10, 2, 16, 0], 20),
        ];
        apply_egress("berth-egress", 15001, &bridges).expect("apply egress");
        ruleset()
    });
    assert_eq!(objects(&rs, "table", "berth-egress").len(), 1, "{rs:#?}");
    assert_eq!(objects(&rs, "table", "berth-egress")[0]["family"], "ip");
    let chains = objects(&rs, "chain", "berth-egress");
    assert_eq!(chains.len(), 1, "{rs:#?}");
    let c = &chains[0];
    assert_eq!(
        (&c["name"], &c["type"], &c["hook"], &c["prio"], &c["policy"]),
        (
            &json!("prerouting"),
            &json!("nat"),
            &json!("prerouting"),
            &json!(-100),
            &json!("accept")
        )
    );
    let rules = objects(&rs, "rule", "berth-egress");
    assert_eq!(rules.len(), 2, "{rs:#?}");
    assert!(rules.iter().all(|r| r["chain"] == "prerouting" && r["family"] == "ip"));
    assert_eq!(rules[0]["expr"], egress_exprs("br-aaaa", "10.1.0.0", 16, 15001));
    assert_eq!(rules[1]["expr"], egress_exprs("br-bbbb", "10.2.16.0", 20, 15001));
}

#[test]
fn apply_egress_again_replaces_the_rules_and_leaves_other_tables_alone() {
    let (once, empty, other) = in_fresh_netns(|| {
        sh("nft add table ip other && nft add chain ip other c");
        let two = [
            bridge("br-aaaa", [10, 1, 0, 0], 16),
            bridge("br-bbbb", [10, 2, 0, 0], 24),
        ];
        apply_egress("berth-egress", 15001, &two).expect("first apply");
        apply_egress("berth-egress", 16000, &[bridge("br-cccc", [10, 3, 0, 0], 24)]).expect("second apply");
        let once = ruleset();
        apply_egress("berth-egress", 16000, &[]).expect("apply with no bridges");
        let empty = ruleset();
        (once, empty, objects(&ruleset(), "chain", "other"))
    });
    let rules = objects(&once, "rule", "berth-egress");
    assert_eq!(rules.len(), 1, "{once:#?}");
    assert_eq!(rules[0]["expr"], egress_exprs("br-cccc", "10.3.0.0", 24, 16000));
    assert_eq!(objects(&once, "chain", "berth-egress").len(), 1);

    assert_eq!(objects(&empty, "chain", "berth-egress").len(), 1, "{empty:#?}");
    assert!(objects(&empty, "rule", "berth-egress").is_empty(), "{empty:#?}");
    assert_eq!(other.len(), 1, "table ip other was touched");
}

#[test]
fn delete_table_removes_it_and_an_absent_table_is_fine() {
    let (before, after, again) = in_fresh_netns(|| {
        sh("nft add table ip other");
        apply_egress("berth-egress", 15001, &[bridge("br-aaaa", [10, 1, 0, 0], 16)]).expect("apply egress");
        let before = ruleset();
        delete_table("berth-egress").expect("delete existing table");
        let after = ruleset();
        let again = delete_table("berth-egress");
        (before, after, again.map_err(|e| e.to_string()))
    });
    assert_eq!(objects(&before, "table", "berth-egress").len(), 1);
    assert!(objects(&after, "table", "berth-egress").is_empty(), "{after:#?}");
    assert_eq!(objects(&after, "table", "other").len(), 1, "table ip other was deleted");
    assert_eq!(again, Ok(()));
}

#[test]
fn a_batch_of_many_bridges_is_applied_and_acknowledged() {
    let rs = in_fresh_netns(|| {
        let bridges: Vec<_> = (0..600u16)
            .map(|i| bridge(&format!("br-{i:04x}"), [10, 64, 0, 0], 16))
            .collect();
        apply_egress("berth-egress", 15001, &bridges).expect("apply egress");
        ruleset()
    });
    let rules = objects(&rs, "rule", "berth-egress");
    assert_eq!(rules.len(), 600);
    assert_eq!(rules[599]["expr"], egress_exprs("br-0257", "10.64.0.0", 16, 15001));
}

#[test]
fn invalid_input_is_refused_without_touching_the_ruleset() {
    let (err, rs) = in_fresh_netns(|| {
        let err = apply_egress("berth-egress", 1, &[bridge("a-name-far-too-long", [10, 0, 0, 0], 8)]);
        (err, ruleset())
    });
    assert!(matches!(err, Err(NetworkError::Invalid(_))), "{err:?}");
    assert!(objects(&rs, "table", "berth-egress").is_empty(), "{rs:#?}");
}

/// The original destination of a redirected connection (`SO_ORIGINAL_DST`), as a proxy reads it.
fn original_dst(s: &TcpStream) -> SocketAddrV4 {
    // SAFETY: zeroes are a valid `sockaddr_in`.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: the fd is open for the duration of the call, and `sin`/`len` describe a writable
    // buffer of the size the kernel is told.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            (&raw mut sin).cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0, "SO_ORIGINAL_DST: {}", std::io::Error::last_os_error());
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
        u16::from_be(sin.sin_port),
    )
}

/// A real packet path: a "container" namespace joined by a veth to the namespace holding the
/// rule. TCP to an outside address is redirected to the local listener; TCP to the bridge's own
/// subnet is not.
#[test]
fn outbound_tcp_is_redirected_to_the_local_port_and_the_subnet_is_not() {
    require_root();
    let (tid_tx, tid_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare the client namespace");
        tid_tx.send(nix::unistd::gettid().as_raw()).expect("send tid");
        go_rx.recv().expect("wait for the router");
        sh(
            "ip link set lo up && ip addr add 10.200.0.2/24 dev veth-c && ip link set veth-c up \
            && ip route add default via 10.200.0.1",
        );
        let outside = SocketAddr::from(([192, 0, 2, 10], 80));
        let mut s = TcpStream::connect_timeout(&outside, Duration::from_secs(10)).expect("connect 192.0.2.10:80");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        s.write_all(b"hello").expect("write");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read");
        // Inside the subnet: not redirected, and nothing listens on port 80 there.
        let inside = SocketAddr::from(([10, 200, 0, 1], 80));
        let direct = TcpStream::connect_timeout(&inside, Duration::from_secs(5))
            .map(|_| ())
            .map_err(|e| e.kind());
        (answer, direct)
    });
    let router = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare the router namespace");
        let tid = tid_rx.recv().expect("client tid");
        sh(&format!("ip link add veth-r type veth peer name veth-c netns {tid}"));
        sh("ip link set lo up && ip addr add 10.200.0.1/24 dev veth-r && ip link set veth-r up");
        let listener = TcpListener::bind("0.0.0.0:0").expect("bind the proxy port");
        let port = listener.local_addr().expect("local addr").port();
        apply_egress("berth-egress", port, &[bridge("veth-r", [10, 200, 0, 0], 24)]).expect("apply egress");
        go_tx.send(()).expect("start the client");
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut s, peer) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("no redirected connection: {e}"),
            }
        };
        s.set_nonblocking(false).expect("blocking");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let orig = original_dst(&s);
        let mut hello = [0u8; 5];
        s.read_exact(&mut hello).expect("read hello");
        s.write_all(b"from the proxy").expect("answer");
        (peer, orig, hello, port)
    });
    let (peer, orig, hello, port) = match router.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let (answer, direct) = match client.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    assert_eq!(peer.ip(), Ipv4Addr::new(10, 200, 0, 2), "listener on port {port}");
    assert_eq!(orig, SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10), 80));
    assert_eq!(&hello, b"hello");
    assert_eq!(answer, "from the proxy");
    assert_eq!(direct, Err(std::io::ErrorKind::ConnectionRefused));
}
