//! Network benchmark (root; `scripts/bench-network.sh` runs it): endpoint setup time, DNS query
//! latency from inside a container's namespace, and TCP throughput and connection rate through
//! a published port, against a direct loopback connection and against Docker's `docker-proxy`
//! in the same run. Prints one Markdown table.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth::network::{AttachConfig, EndpointConfig, NetworkConfig, Networks, PortConfig, Proto};

const THROUGHPUT_BYTES: u64 = 2 << 30;
const CONNECTIONS: usize = 2000;
const ENDPOINTS: usize = 20;
const QUERIES: usize = 2000;

fn main() {
    // `cargo test --all-targets` runs this binary too, without `--bench`: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    assert!(nix::unistd::geteuid().is_root(), "the network benchmark needs root");
    let root = std::env::temp_dir().join(format!("berth-bench-net-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let nets = Networks::new(&root)
        .unwrap()
        .with_daemon(PathBuf::from(env!("CARGO_BIN_EXE_berth")));
    let net = nets
        .create_network(&NetworkConfig {
            name: "bench".into(),
            domain: "bench".into(),
            ..Default::default()
        })
        .unwrap();
    let attach = |key: &str, names: &[&str], ports: Vec<PortConfig>| EndpointConfig {
        key: key.into(),
        names: names.iter().map(|s| s.to_string()).collect(),
        networks: vec![AttachConfig {
            network: "bench".into(),
            ..Default::default()
        }],
        ports,
    };

    // Endpoint setup: namespace, veth pair, address, route, daemon reload; all up, then all down,
    // as `up` and `down` do (a namespace's destruction is deferred in the kernel and slows the
    // next creation, so interleaving them would measure that instead).
    let mut setup = Vec::new();
    let mut teardown = Vec::new();
    for i in 0..ENDPOINTS {
        let t = Instant::now();
        nets.connect(&attach(&format!("e{i}"), &[], Vec::new())).unwrap();
        setup.push(t.elapsed());
    }
    for i in 0..ENDPOINTS {
        let t = Instant::now();
        nets.disconnect(&format!("e{i}")).unwrap();
        teardown.push(t.elapsed());
    }

    // A "container": an endpoint whose namespace the benchmark enters to serve and to ask.
    let server = nets
        .connect(&attach(
            "srv",
            &["svc"],
            vec![PortConfig {
                proto: Proto::Tcp,
                host_ip: Ipv4Addr::LOCALHOST.into(),
                host_port: 0,
                container_port: 5001,
            }],
        ))
        .unwrap();
    let ns = server.netns.clone();
    let published = SocketAddr::from((Ipv4Addr::LOCALHOST, server.ports[0].bound));
    in_netns(&ns, || serve(TcpListener::bind("0.0.0.0:5001").unwrap()));
    let direct = TcpListener::bind("127.0.0.1:0").unwrap();
    let direct_addr = direct.local_addr().unwrap();
    std::thread::spawn(move || serve(direct));

    // DNS: a local answer from inside the container's namespace.
    let gateway = net.gateway;
    let dns = in_netns(&ns, move || dns_latency(gateway, "svc")).join().unwrap();

    let mut rows = vec![
        row("endpoint setup (median)", median(&mut setup), "ms"),
        row("endpoint teardown (median)", median(&mut teardown), "ms"),
        format!(
            "| DNS query, local name (median / p99) | {:.0} / {:.0} µs | | |",
            dns.0, dns.1
        ),
    ];

    let mut peers: Vec<(&str, SocketAddr)> =
        vec![("direct loopback", direct_addr), ("berth published port", published)];
    let proxy = docker_proxy(direct_addr);
    if let Some((_, addr)) = &proxy {
        peers.push(("docker-proxy", *addr));
    }
    let mut results = Vec::new();
    for (name, addr) in &peers {
        wait_ready(*addr);
        let mbps = throughput(*addr);
        let rate = connection_rate(*addr);
        results.push((name.to_string(), mbps, rate));
    }
    if let Some((mut child, _)) = proxy {
        let _ = child.kill();
        let _ = child.wait();
    }
    let berth = results.iter().find(|r| r.0 == "berth published port").cloned().unwrap();
    for (name, mbps, rate) in &results {
        rows.push(format!(
            "| TCP via {name} | {mbps:.0} MB/s ({:.2}× berth) | {rate:.0} conn/s ({:.2}× berth) | |",
            mbps / berth.1,
            rate / berth.2
        ));
    }
    println!("| measure | value | | |\n|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    let _ = nets.teardown_domain("bench");
    let _ = std::fs::remove_dir_all(&root);
}

fn row(what: &str, d: Duration, unit: &str) -> String {
    format!("| {what} | {:.2} {unit} | | |", d.as_secs_f64() * 1000.0)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `f` on a thread inside the namespace at `path`.
fn in_netns<T: Send + 'static>(
    path: &std::path::Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let fd = std::fs::File::open(path).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// Each connection: if the first byte is 'e', echo one byte per request; else sink everything
/// and answer the byte count.
fn serve(l: TcpListener) {
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut first = [0u8; 1];
            if s.read_exact(&mut first).is_err() {
                return;
            }
            if first[0] == b'e' {
                let _ = s.write_all(b"e");
                return;
            }
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 1u64;
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            let _ = s.write_all(&total.to_le_bytes());
        });
    }
}

fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let mut b = [0u8; 1];
            if s.write_all(b"e").is_ok() && s.read_exact(&mut b).is_ok() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{addr} not ready");
}

/// MB/s for THROUGHPUT_BYTES sent one way, confirmed by the server's count.
fn throughput(addr: SocketAddr) -> f64 {
    let mut s = TcpStream::connect(addr).unwrap();
    let chunk = vec![b's'; 256 * 1024];
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < THROUGHPUT_BYTES {
        s.write_all(&chunk).unwrap();
        sent += chunk.len() as u64;
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut count = [0u8; 8];
    s.read_exact(&mut count).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(u64::from_le_bytes(count), sent, "bytes lost through {addr}");
    sent as f64 / secs / 1e6
}

/// Sequential connections per second, each with a one-byte exchange.
fn connection_rate(addr: SocketAddr) -> f64 {
    let t = Instant::now();
    for _ in 0..CONNECTIONS {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(b"e").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
    }
    CONNECTIONS as f64 / t.elapsed().as_secs_f64()
}

/// (median, p99) in µs of A queries for `name` to the resolver on `gateway`.
fn dns_latency(gateway: Ipv4Addr, name: &str) -> (f64, f64) {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect((gateway, 53)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut times = Vec::with_capacity(QUERIES);
    let mut buf = [0u8; 1500];
    for i in 0..QUERIES {
        let mut m = Message::query();
        m.metadata.id = i as u16;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let q = m.to_vec().unwrap();
        let t = Instant::now();
        s.send(&q).unwrap();
        let n = s.recv(&mut buf).unwrap();
        times.push(t.elapsed());
        let r = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(r.answers.len(), 1, "{name} must resolve");
    }
    times.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(times[QUERIES / 2]), us(times[QUERIES * 99 / 100]))
}

/// Docker's userland proxy in front of `target`, if installed: (child, listen address). Like
/// dockerd, it hands docker-proxy a pipe as fd 3, on which the proxy reports that it listens.
fn docker_proxy(target: SocketAddr) -> Option<(std::process::Child, SocketAddr)> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let exe = [
        "/usr/sbin/docker-proxy",
        "/usr/bin/docker-proxy",
        "/usr/libexec/docker/docker-proxy",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())?;
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let fd = write.as_raw_fd();
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "-proto",
        "tcp",
        "-host-ip",
        "127.0.0.1",
        "-host-port",
        &port.to_string(),
    ])
    .args([
        "-container-ip",
        "127.0.0.1",
        "-container-port",
        &target.port().to_string(),
    ])
    .stdout(std::process::Stdio::null());
    // SAFETY: dup2 is async-signal-safe; it only places the pipe at fd 3 in the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
    }
    let child = cmd.spawn().ok()?;
    drop(write);
    let mut status = [0u8; 1];
    std::fs::File::from(read).read_exact(&mut status).ok()?;
    let status = String::from_utf8_lossy(&status).into_owned();
    assert!(status.starts_with('0'), "docker-proxy failed: {status}");
    Some((child, SocketAddr::from((Ipv4Addr::LOCALHOST, port))))
}
