//! A private registry per test: Debian's `docker-registry` (distribution 2.8) on a free port of
//! 127.0.0.1 with its own config and storage in a temp dir, anonymous, with htpasswd basic auth, or
//! with bearer tokens from `tests/fixtures/registry/token_server.py`. Never a system-wide instance.
//! Missing programs fail the test (a panic saying what to install), never skip it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const PROGRAM: &str = "/usr/bin/docker-registry";
/// The `service` (token audience) and `issuer` of token mode.
pub const TOKEN_SERVICE: &str = "berth-test-registry";
pub const TOKEN_ISSUER: &str = "berth-test-issuer";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const ATTEMPTS: usize = 5;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A running registry; stopped (with its token server) and its directory removed on drop.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The registry's config, storage (`data/`), logs and keys.
    pub dir: PathBuf,
    /// Token mode: the token server's `http://127.0.0.1:PORT/token`.
    pub realm: Option<String>,
    children: Vec<Child>,
}

enum Auth<'a> {
    None,
    Htpasswd(&'a str, &'a str),
    Token(&'a str, &'a str),
}

impl Registry {
    /// An anonymous registry over plain HTTP.
    pub fn start() -> Registry {
        Registry::launch(Auth::None)
    }

    /// A registry with HTTP basic auth for one user (an `htpasswd -Bbn` file).
    pub fn start_htpasswd(user: &str, pass: &str) -> Registry {
        Registry::launch(Auth::Htpasswd(user, pass))
    }

    /// A registry that wants bearer tokens (RS256 JWTs) from its own token server, which knows one
    /// user: it grants that user whatever scope is asked, anonymous callers nothing.
    pub fn start_token(user: &str, pass: &str) -> Registry {
        Registry::launch(Auth::Token(user, pass))
    }

    fn launch(auth: Auth) -> Registry {
        assert!(
            Path::new(PROGRAM).exists(),
            "{PROGRAM} is missing: apt-get install docker-registry (CI's .ci/run installs it)"
        );
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("berth-registry-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // From here on a panic drops `registry`, which stops what was started.
        let mut registry = Registry {
            addr: String::new(),
            dir: dir.clone(),
            realm: None,
            children: Vec::new(),
        };
        let auth_config = match auth {
            Auth::None => String::new(),
            Auth::Htpasswd(user, pass) => {
                let out = Command::new("htpasswd").args(["-Bbn", user, pass]).output();
                let out = out.expect("htpasswd is missing: apt-get install apache2-utils (CI's .ci/run installs it)");
                assert!(
                    out.status.success(),
                    "htpasswd failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::fs::write(dir.join("htpasswd"), &out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                    dir.join("htpasswd").display()
                )
            }
            Auth::Token(user, pass) => {
                let cert = dir.join("cert.pem");
                make_key_and_cert(&dir.join("key.pem"), &cert);
                let realm = registry.start_token_server(user, pass);
                let config = format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    cert.display()
                );
                registry.realm = Some(realm);
                config
            }
        };
        // A port is free when checked, but another process may take it before the registry binds
        // it: then the registry exits and the next attempt takes another port.
        let log = dir.join("registry.log");
        for _ in 0..ATTEMPTS {
            let addr = format!("127.0.0.1:{}", super::free_port());
            let config = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth_config}",
                dir.join("data").display()
            );
            std::fs::write(dir.join("config.yml"), config).unwrap();
            let mut child = registry_command()
                .arg("serve")
                .arg(dir.join("config.yml"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {PROGRAM}: {e}"));
            if wait_ready(&format!("http://{addr}/v2/"), &mut child, true) {
                registry.children.push(child);
                registry.addr = addr;
                return registry;
            }
            stop(&mut child);
        }
        panic!(
            "docker-registry did not answer GET /v2/ within {START_TIMEOUT:?} in {ATTEMPTS} attempts; its stderr:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Starts the token server on a free port and answers its realm URL.
    fn start_token_server(&mut self, user: &str, pass: &str) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/registry/token_server.py");
        let log = self.dir.join("token-server.log");
        for _ in 0..ATTEMPTS {
            let port = super::free_port();
            let mut child = Command::new("python3")
                .arg(&script)
                .args(["--port", &port.to_string(), "--user", user, "--password", pass])
                .args(["--issuer", TOKEN_ISSUER])
                .arg("--key")
                .arg(self.dir.join("key.pem"))
                .arg("--cert")
                .arg(self.dir.join("cert.pem"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run python3 (the token server): {e}"));
            if wait_ready(&format!("http://127.0.0.1:{port}/health"), &mut child, false) {
                self.children.push(child);
                return format!("http://127.0.0.1:{port}/token");
            }
            stop(&mut child);
        }
        panic!(
            "the token server did not start; its stderr:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for child in &mut self.children {
            stop(child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The registry's command, without `REGISTRY_*` variables of the environment (distribution reads
/// them as config overrides).
fn registry_command() -> Command {
    let mut command = Command::new(PROGRAM);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("REGISTRY_") {
            command.env_remove(key);
        }
    }
    command
}

/// An RSA key and a self-signed certificate for it (the token signer and the registry's
/// `rootcertbundle`).
fn make_key_and_cert(key: &Path, cert: &Path) {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={TOKEN_ISSUER}")])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .expect("openssl is missing: apt-get install openssl (CI's .ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls `url` until it answers as expected (a registry: 200 or 401 with distribution's API version
/// header, so not some other server that took the port; else: 200) while `child` lives, for up to
/// START_TIMEOUT. False when the child exits or time runs out.
fn wait_ready(url: &str, child: &mut Child, registry: bool) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let start = Instant::now();
    while start.elapsed() < START_TIMEOUT {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(response) = agent.get(url).call() {
            let status = response.status().as_u16();
            let ours = if registry {
                (status == 200 || status == 401) && response.headers().get("docker-distribution-api-version").is_some()
            } else {
                status == 200
            };
            // The child must still be the one answering.
            return ours && matches!(child.try_wait(), Ok(None));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}
