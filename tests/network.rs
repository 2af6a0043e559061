//! Root integration tests of the network layer through `berth network` and `berth container run
//! --network`, against the real kernel. Each test has its own state root (so its own infra
//! namespaces, daemons and address allocations); host-like and remote machines are network
//! namespaces the test makes, and the only addresses contacted are loopback ones and those the
//! tests create. Not being root is a failure, never a skip.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use common::berth::{Berth, TestNs, text, until};

/// The addresses of `network`'s endpoints, from `network inspect`.
fn addresses(b: &Berth, network: &str) -> Vec<Ipv4Addr> {
    let v: serde_json::Value = serde_json::from_str(&b.ok(&["network", "inspect", network])).unwrap();
    let mut out: Vec<Ipv4Addr> = v[0]["Containers"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| {
            c["IPv4Address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    out.sort();
    out
}

/// `berth port C`: (container port/proto → host port).
fn ports(b: &Berth, c: &str) -> Vec<(String, String)> {
    b.ok(&["port", c])
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(" -> ").unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Makes `ns` look like a Docker host: FORWARD policy DROP, bridge traffic through iptables.
fn docker_host_firewall(ns: &TestNs) {
    ns.sh("iptables -P FORWARD DROP");
    let policy = ns.sh("iptables -S FORWARD");
    assert!(policy.contains("-P FORWARD DROP"), "{policy}");
    let nf = std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
        .expect("br_netfilter must be loaded to simulate a Docker host (modprobe br_netfilter)");
    assert_eq!(
        nf.trim(),
        "1",
        "bridge-nf-call-iptables must be 1 to simulate a Docker host"
    );
}

/// Runs a one-off container on `network` and returns its output, failing on a non-zero exit.
fn client(b: &Berth, network: &str, script: &str) -> String {
    let out = b.run(&["--rm", "--network", network], &["sh", "-c", script]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "client {script:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn containers_reach_each_other_by_name_and_alias_under_a_docker_host_firewall() {
    let host = TestNs::new("berth-fwhost");
    docker_host_firewall(&host);
    let mut b = Berth::new("net-names");
    b.netns = Some(host.name.clone());
    b.ok(&["network", "create", "app"]);
    b.run_d(
        &[
            "--name",
            "web",
            "--hostname",
            "webhost",
            "--network",
            "app",
            "--network-alias",
            "api",
        ],
        &["httpd", "-f", "-p", "80", "-h", "/etc"],
    );
    let out = client(
        &b,
        "app",
        "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://web/hostname && break; sleep 0.2; done; \
         wget -qO- http://api/hostname; wget -qO- http://webhost/hostname",
    );
    assert_eq!(out.matches("webhost").count(), 3, "{out}");
    // The same traffic by address, and the forward policy is still DROP.
    let ip = addresses(&b, "app")[0];
    // Like Docker, a container's own address maps to its hostname in /etc/hosts.
    let out = b.run(
        &["--rm", "--network", "app", "--hostname", "me"],
        &["cat", "/etc/hosts"],
    );
    let hosts = text(&out.stdout);
    assert!(
        hosts.lines().any(|l| l.starts_with("10.") && l.ends_with("\tme")),
        "{hosts}"
    );
    let out = client(&b, "app", &format!("wget -qO- http://{ip}/hostname"));
    assert!(out.contains("webhost"), "{out}");
    assert!(host.sh("iptables -S FORWARD").contains("-P FORWARD DROP"));
}

#[test]
fn a_container_shares_another_containers_namespace() {
    let b = Berth::new("net-shared");
    b.ok(&["network", "create", "shared"]);
    b.run_d(
        &["--name", "main", "--hostname", "mainhost", "--network", "shared"],
        &["httpd", "-f", "-p", "80", "-h", "/etc"],
    );
    let out = b.run(
        &["--rm", "--network", "container:main"],
        &["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://127.0.0.1/hostname && break; sleep 0.2; done; ip -4 addr show eth0"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("mainhost"), "{stdout}");
    assert!(
        stdout.contains(&addresses(&b, "shared")[0].to_string()),
        "same eth0 as main: {stdout}"
    );
}

#[test]
fn a_scaled_service_resolves_to_every_replica_and_names_are_scoped_to_shared_networks() {
    let b = Berth::new("net-scale");
    b.ok(&["network", "create", "front"]);
    b.ok(&["network", "create", "back"]);
    for _ in 0..3 {
        b.run_d(&["--network", "front", "--network-alias", "worker"], &["sleep", "300"]);
    }
    b.run_d(&["--name", "hidden", "--network", "back"], &["sleep", "300"]);
    let want = addresses(&b, "front");
    assert_eq!(want.len(), 3);
    let out = client(&b, "front", "nslookup worker");
    for ip in &want {
        assert!(out.contains(&ip.to_string()), "{ip} missing from {out}");
    }
    // A container on another network is not visible.
    let out = b.run(&["--rm", "--network", "front"], &["nslookup", "hidden"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "hidden resolved from another network: {}",
        text(&out.stdout)
    );
}

/// A DNS server on 127.0.0.1 that answers every A query with `answer`, counting queries.
fn fake_upstream(answer: Ipv4Addr) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use hickory_proto::op::{Message, Metadata};
    use hickory_proto::rr::{RData, Record, rdata::A};
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut r = q.clone();
            r.metadata = Metadata::response_from_request(&q.metadata);
            if let Some(question) = q.queries.first()
                && question.query_type() == hickory_proto::rr::RecordType::A
            {
                r.add_answer(Record::from_rdata(question.name().clone(), 60, RData::A(A(answer))));
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), from);
        }
    });
    (addr, count)
}

#[test]
fn unknown_names_are_forwarded_to_the_upstream_resolver() {
    let mut b = Berth::new("net-upstream");
    let (upstream, count) = fake_upstream(Ipv4Addr::new(192, 0, 2, 77));
    b.env.push(("BERTH_DNS_UPSTREAMS".into(), upstream.to_string()));
    b.ok(&["network", "create", "fwd"]);
    let out = client(&b, "fwd", "nslookup -type=a remote.example.test");
    assert!(out.contains("192.0.2.77"), "{out}");
    assert!(count.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

#[test]
fn published_tcp_and_udp_ports_work_on_loopback_only() {
    let b = Berth::new("net-ports");
    b.ok(&["network", "create", "pub"]);
    let id = b.run_d(
        &[
            "--name",
            "srv",
            "--hostname",
            "srvhost",
            "--network",
            "pub",
            "-p",
            "127.0.0.1::80",
            "-p",
            "[::1]::80",
            "-p",
            "127.0.0.1::9000/udp",
        ],
        &["httpd", "-f", "-p", "80", "-h", "/etc"],
    );
    let p = ports(&b, "srv");
    let tcp = p
        .iter()
        .find(|(k, v)| k == "80/tcp" && v.starts_with("127."))
        .expect("80/tcp published")
        .1
        .clone();
    let tcp6: SocketAddr = p
        .iter()
        .find(|(k, v)| k == "80/tcp" && v.starts_with('['))
        .expect("[::1] published")
        .1
        .parse()
        .unwrap();
    let udp = p
        .iter()
        .find(|(k, _)| k == "9000/udp")
        .expect("9000/udp published")
        .1
        .clone();
    let tcp: SocketAddr = tcp.parse().unwrap();
    let udp: SocketAddr = udp.parse().unwrap();
    assert_eq!(tcp.ip().to_string(), "127.0.0.1");
    assert_ne!(tcp.port(), 0, "a random port is reported");
    assert_eq!(b.ok(&["port", "srv", "80"]).lines().next().unwrap(), tcp.to_string());

    // TCP from the host through the proxy to httpd.
    let mut body = String::new();
    until(10, "httpd through the published port", || {
        body.clear();
        let Ok(mut s) = TcpStream::connect_timeout(&tcp, Duration::from_secs(2)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /hostname HTTP/1.0\r\n\r\n").unwrap();
        s.read_to_string(&mut body).is_ok() && body.contains("srvhost")
    });
    // The same server over IPv6 loopback.
    let mut s = TcpStream::connect_timeout(&tcp6, Duration::from_secs(2)).unwrap();
    s.write_all(b"GET /hostname HTTP/1.0\r\n\r\n").unwrap();
    let mut body6 = String::new();
    s.read_to_string(&mut body6).unwrap();
    assert!(body6.contains("srvhost"), "{body6}");
    // Bound to 127.0.0.1 only: another loopback address of the host does not answer.
    let other = SocketAddr::from(([127, 0, 0, 2], tcp.port()));
    assert!(
        TcpStream::connect_timeout(&other, Duration::from_secs(2)).is_err(),
        "{other} answered"
    );

    // UDP: an echo server inside the container's namespace, reached through the proxy.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.root.join("networks/state.json")).unwrap()).unwrap();
    let key = b.ok(&["container", "inspect", &id]);
    let key: serde_json::Value = serde_json::from_str(&key).unwrap();
    let key = key[0]["Config"]["Labels"]["berth.network.endpoint"]
        .as_str()
        .expect("endpoint label")
        .to_string();
    let netns = state["endpoints"][&key]["netns"].as_str().unwrap().to_string();
    let ns = std::fs::File::open(&netns).unwrap();
    let echo = std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = UdpSocket::bind("0.0.0.0:9000").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        for _ in 0..2 {
            let mut buf = [0u8; 64];
            let Ok((n, from)) = s.recv_from(&mut buf) else { return };
            s.send_to(&buf[..n], from).unwrap();
        }
    });
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut got = Vec::new();
    until(10, "udp echo through the published port", || {
        c.send_to(b"ping-udp", udp).unwrap();
        let mut buf = [0u8; 64];
        match c.recv_from(&mut buf) {
            Ok((n, _)) => {
                got = buf[..n].to_vec();
                true
            }
            Err(_) => false,
        }
    });
    assert_eq!(got, b"ping-udp");
    c.send_to(b"bye", udp).unwrap();
    echo.join().unwrap();
}

#[test]
fn a_port_conflict_names_the_port_and_its_holder_and_leaves_nothing() {
    let b = Berth::new("net-conflict");
    b.ok(&["network", "create", "busy"]);
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let out = b.run(
        &["-d", "--network", "busy", "-p", &format!("127.0.0.1:{port}:80")],
        &["sleep", "60"],
    );
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(
        err.contains(&std::process::id().to_string()),
        "the holder (this test, pid {}) is named: {err}",
        std::process::id()
    );
    assert_eq!(
        b.ok(&["container", "ps", "-aq"]).trim(),
        "",
        "the failed container is removed"
    );
    let state = std::fs::read_to_string(b.root.join("networks/state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["endpoints"].as_object().unwrap().len(), 0, "{state}");
    assert_eq!(std::fs::read_dir(b.root.join("networks/endpoints")).unwrap().count(), 0);
}

#[test]
fn internal_networks_have_no_egress_and_normal_ones_do_under_forward_drop() {
    let host = TestNs::new("berth-eghost");
    let remote = TestNs::new("berth-egremote");
    docker_host_firewall(&host);
    // host 10.250.0.1/30 <-> remote 10.250.0.2/30
    host.sh(&format!(
        "ip link add vh0 type veth peer name vr0 && ip link set vr0 netns {} && \
         ip addr add 10.250.0.1/30 dev vh0 && ip link set vh0 up",
        remote.name
    ));
    remote.sh("ip addr add 10.250.0.2/30 dev vr0 && ip link set vr0 up");
    let server = remote.spawn(|| {
        let l = TcpListener::bind("10.250.0.2:8080").unwrap();
        let mut peers = Vec::new();
        l.set_nonblocking(false).unwrap();
        // One connection from the normal network; the internal one never arrives.
        let (mut s, peer) = l.accept().unwrap();
        s.write_all(b"remote-ok\n").unwrap();
        peers.push(peer.ip());
        peers
    });
    let mut b = Berth::new("net-egress");
    b.netns = Some(host.name.clone());
    b.ok(&["network", "create", "out"]);
    b.ok(&["network", "create", "--internal", "sealed"]);
    let out = client(&b, "out", "nc 10.250.0.2 8080");
    assert!(out.contains("remote-ok"), "{out}");
    let peers = server.join().unwrap();
    assert_eq!(
        peers,
        [std::net::IpAddr::from([10, 250, 0, 1])],
        "egress leaves from the host's address"
    );
    let out = b.run(
        &["--rm", "--network", "sealed"],
        &["nc", "-w", "2", "10.250.0.2", "8080"],
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "internal network reached the remote: {}",
        text(&out.stdout)
    );
}

#[test]
fn teardown_removes_links_namespaces_daemons_and_allocations() {
    let b = Berth::new("net-teardown");
    b.ok(&["network", "create", "gone1"]);
    b.ok(&["network", "create", "--internal", "gone2"]);
    let a = b.run_d(
        &["--network", "gone1", "--network", "gone2", "-p", "127.0.0.1::80"],
        &["sleep", "300"],
    );
    let c = b.run_d(&["--network", "gone1"], &["sleep", "300"]);
    let root = b.root.to_string_lossy().into_owned();
    let mounts = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&root))
            .count()
    };
    let daemons = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .filter(|c| text(c).contains("__netd") && text(c).contains(&root))
            .count()
    };
    assert_eq!(mounts(), 4, "two infra and two endpoint namespaces");
    assert_eq!(daemons(), 2);
    let published: SocketAddr = ports(&b, &a)[0].1.parse().unwrap();
    for id in [&a, &c] {
        b.ok(&["container", "rm", "-f", id]);
    }
    b.ok(&["network", "rm", "gone1", "gone2"]);
    assert_eq!(mounts(), 0);
    until(5, "daemons to exit", || daemons() == 0);
    assert!(TcpStream::connect_timeout(&published, Duration::from_secs(1)).is_err());
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.root.join("networks/state.json")).unwrap()).unwrap();
    assert_eq!(state["networks"].as_object().unwrap().len(), 0, "{state}");
    assert_eq!(state["endpoints"].as_object().unwrap().len(), 0, "{state}");
    assert_eq!(std::fs::read_dir(b.root.join("networks/domains")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(b.root.join("networks/endpoints")).unwrap().count(), 0);
}

#[test]
fn the_endpoint_of_a_detached_rm_container_is_pruned() {
    let b = Berth::new("net-prune");
    b.ok(&["network", "create", "short"]);
    let port = common::free_port();
    let spec = format!("127.0.0.1:{port}:80");
    b.run_d(&["--rm", "--network", "short", "-p", &spec], &["true"]);
    until(10, "the --rm container to remove itself", || {
        b.ok(&["container", "ps", "-aq"]).trim().is_empty()
    });
    // Its endpoint outlived it; the next run on the network prunes it and can take the port.
    let state = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(b.root.join("networks/state.json")).unwrap()).unwrap()
    };
    assert_eq!(state()["endpoints"].as_object().unwrap().len(), 1);
    b.run_d(&["--name", "next", "--network", "short", "-p", &spec], &["sleep", "60"]);
    assert_eq!(
        state()["endpoints"].as_object().unwrap().len(),
        1,
        "only the new endpoint is left"
    );
    assert_eq!(b.ok(&["port", "next", "80"]).trim(), format!("127.0.0.1:{port}"));
    b.ok(&["container", "rm", "-f", "next"]);
    // `network rm` prunes too, so a network whose containers are all gone can be removed.
    b.run_d(&["--rm", "--network", "short"], &["true"]);
    until(10, "the --rm container to remove itself", || {
        b.ok(&["container", "ps", "-aq"]).trim().is_empty()
    });
    b.ok(&["network", "rm", "short"]);
}
