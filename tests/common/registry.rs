//! A private registry per test: Debian's `docker-registry` (distribution 2.8) on a free port of
//! 127.0.0.1, with its own storage, anonymous, with htpasswd basic auth, or with bearer tokens from
//! `tests/fixtures/registry/token_server.py`. Missing programs fail the test, never skip it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A running registry, stopped and removed on drop.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The registry's storage and config directory.
    pub dir: PathBuf,
    children: Vec<Child>,
}

enum Auth<'a> {
    None,
    Htpasswd(&'a str, &'a str),
    Token(&'a str, &'a str),
}

impl Registry {
    /// An anonymous registry.
    pub fn start() -> Registry {
        Registry::launch(Auth::None)
    }

    /// A registry with basic auth for one user.
    pub fn start_htpasswd(user: &str, pass: &str) -> Registry {
        Registry::launch(Auth::Htpasswd(user, pass))
    }

    /// A registry that wants bearer tokens from a token server that knows one user.
    pub fn start_token(user: &str, pass: &str) -> Registry {
        Registry::launch(Auth::Token(user, pass))
    }

    fn launch(auth: Auth) -> Registry {
        let program = Path::new("/usr/bin/docker-registry");
        assert!(
            program.exists(),
            "docker-registry is missing: apt-get install docker-registry (CI installs it)"
        );
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("berth-registry-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut registry = Registry {
            addr: String::new(),
            dir: dir.clone(),
            children: Vec::new(),
        };
        let auth_config = match auth {
            Auth::None => String::new(),
            Auth::Htpasswd(user, pass) => {
                let out = Command::new("htpasswd").args(["-Bbn", user, pass]).output();
                let out = out.expect("htpasswd is missing: apt-get install apache2-utils (CI installs it)");
                assert!(out.status.success(), "htpasswd failed");
                std::fs::write(dir.join("htpasswd"), &out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                    dir.join("htpasswd").display()
                )
            }
            Auth::Token(user, pass) => {
                let key = dir.join("key.pem");
                let cert = dir.join("cert.pem");
                let status = Command::new("openssl")
                    .args([
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-days",
                        "2",
                        "-subj",
                        "/CN=berth-test-issuer",
                    ])
                    .arg("-keyout")
                    .arg(&key)
                    .arg("-out")
                    .arg(&cert)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("openssl is missing: apt-get install openssl");
                assert!(status.success(), "openssl req failed");
                let port = free_port();
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/registry/token_server.py");
                let child = Command::new("python3")
                    .arg(script)
                    .args(["--port", &port.to_string(), "--user", user, "--password", pass])
                    .arg("--key")
                    .arg(&key)
                    .arg("--cert")
                    .arg(&cert)
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.join("token.log")).unwrap())
                    .spawn()
                    .expect("python3 is missing");
                registry.children.push(child);
                wait_for(&format!("http://127.0.0.1:{port}/health"), &dir.join("token.log"));
                format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{port}/token\n    service: berth-test-registry\n    issuer: berth-test-issuer\n    rootcertbundle: {}\n",
                    cert.display()
                )
            }
        };
        // The port is free when checked; if another process takes it first, the registry fails to
        // bind and the next attempt uses another.
        for _ in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let config = format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth_config}",
                dir.join("data").display()
            );
            std::fs::write(dir.join("config.yml"), config).unwrap();
            let log = dir.join("registry.log");
            let child = Command::new(program)
                .arg("serve")
                .arg(dir.join("config.yml"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            registry.children.push(child);
            if ready(
                &format!("http://{addr}/v2/"),
                Duration::from_secs(10),
                registry.children.last_mut().unwrap(),
            ) {
                registry.addr = addr;
                return registry;
            }
        }
        panic!(
            "docker-registry did not start: {}",
            std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether `url` answers (any status) before the timeout and while the child lives.
fn ready(url: &str, timeout: Duration, child: &mut Child) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let start = Instant::now();
    while start.elapsed() < timeout {
        if agent.get(url).call().is_ok() {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn wait_for(url: &str, log: &Path) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if agent.get(url).call().is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "the token server did not start: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}
