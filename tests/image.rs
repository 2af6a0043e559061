//! Root integration tests of the image store through the `berth image` CLI: import, push and pull
//! against Debian's docker-registry on 127.0.0.1 (anonymous, htpasswd and token auth), load and save,
//! dangling images and prune, digest verification, and that a bad layer leaves nothing behind. Each test
//! has its own state root, Docker config and registry.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::registry::Registry;
use common::require_root;

struct Env {
    root: PathBuf,
    docker_config: PathBuf,
}

impl Env {
    fn new(name: &str) -> Env {
        require_root();
        let root = std::env::temp_dir().join(format!("berth-img-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let docker_config = root.join("docker-config");
        Env { root, docker_config }
    }

    fn berth_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .env("DOCKER_CONFIG", &self.docker_config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run berth");
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            input.write_all(bytes).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn berth(&self, args: &[&str]) -> Output {
        self.berth_with_stdin(args, None)
    }

    fn ok(&self, args: &[&str]) -> String {
        common::berth::succeeded(args, &self.berth(args))
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            !out.status.success(),
            "berth {args:?} should fail: {}",
            text(&out.stdout)
        );
        text(&out.stderr)
    }

    /// Imports the busybox root file system as `name` with CMD sh.
    fn import_busybox(&self, name: &str) -> String {
        let tarball = busybox_tarball();
        let tarball = tarball.to_str().unwrap();
        self.ok(&[
            "image",
            "import",
            "-c",
            r#"CMD ["sh"]"#,
            "-c",
            "ENV GREETING=hello",
            tarball,
            name,
        ])
        .trim()
        .to_string()
    }

    fn images(&self) -> String {
        self.ok(&["image", "ls"])
    }

    fn store(&self) -> PathBuf {
        self.root.join("images")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let containers = self.root.join("containers");
        if let Ok(entries) = std::fs::read_dir(&containers) {
            for e in entries.flatten() {
                let _ = self.berth(&["container", "rm", "-f", &e.file_name().to_string_lossy()]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A tarball of the shared busybox root file system, made once per test binary.
fn busybox_tarball() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("berth-img-busybox-{}.tar", std::process::id()));
        common::write_busybox_tarball(&path);
        path
    })
    .clone()
}

/// Everything under a directory, as relative paths (to show a store holds nothing half-written).
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() && !p.starts_with(dir.join("layers")) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn import_push_remove_pull_run_round_trip() {
    let env = Env::new("roundtrip");
    let registry = Registry::start();
    let name = format!("{}/roundtrip/busybox:v1", registry.addr);
    let id = env.import_busybox(&name);
    assert!(id.starts_with("sha256:"), "{id}");
    let push = env.ok(&["image", "push", &name]);
    assert!(push.contains("v1: digest: sha256:"), "{push}");
    env.ok(&["image", "rm", &name]);
    assert!(!env.images().contains("roundtrip/busybox"));
    assert!(
        listing(&env.store().join("blobs/sha256")).is_empty(),
        "rm left blobs behind"
    );
    let pull = env.ok(&["image", "pull", &name]);
    assert!(pull.contains("Status: Downloaded newer image"), "{pull}");
    let inspect: serde_json::Value = serde_json::from_str(&env.ok(&["image", "inspect", &name])).unwrap();
    assert_eq!(inspect[0]["Id"], id.as_str(), "the pulled image has the pushed config");
    let again = env.ok(&["image", "pull", &name]);
    assert!(again.contains("Image is up to date"), "{again}");
    // Pull stores verified blobs and sizes; the first container unpacks the layer.
    let unpacked = || {
        listing(&env.store().join("layers"))
            .into_iter()
            .filter(|p| !p.ends_with(".size"))
            .count()
    };
    assert_eq!(unpacked(), 0, "pull unpacked eagerly");
    assert!(
        !env.images().contains(" 0B"),
        "the size is known before unpacking: {}",
        env.images()
    );
    let run = env.ok(&[
        "container",
        "run",
        "--rm",
        &name,
        "sh",
        "-c",
        "echo $GREETING from $(hostname -s | wc -c)",
    ]);
    assert!(run.starts_with("hello from"), "{run}");
    assert!(unpacked() > 0, "the first run unpacked the layer");
    // The pulled image runs its own CMD.
    let run = env.ok(&["container", "run", "--rm", "--entrypoint", "", &name, "echo", "entry"]);
    assert_eq!(run.trim(), "entry");
}

#[test]
fn pull_of_a_missing_image_runs_it() {
    let env = Env::new("runpull");
    let registry = Registry::start();
    // Named by host name: berth looks `localhost` up in /etc/hosts itself (no NSS, static binary).
    let addr = registry.addr.replace("127.0.0.1:", "localhost:");
    let name = format!("{addr}/runpull/busybox:v1");
    env.import_busybox(&name);
    env.ok(&["image", "push", &name]);
    env.ok(&["image", "rm", &name]);
    let out = env.berth(&["container", "run", "--rm", &name, "echo", "pulled"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Unable to find image"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).trim(), "pulled");
    let missing = format!("{addr}/runpull/nothing:v1");
    let err = env.fails(&["container", "run", "--rm", "--pull", "never", &missing, "true"]);
    assert!(err.contains("no such image"), "{err}");
}

fn auth_round_trip(env: &Env, registry: &Registry) {
    let name = format!("{}/private/busybox:v1", registry.addr);
    env.import_busybox(&name);
    let err = env.fails(&["image", "push", &name]);
    assert!(err.contains("unauthorized") && err.contains("berth login"), "{err}");
    let err = env.fails(&["login", "-u", "alice", "-p", "wrong", &registry.addr]);
    assert!(err.contains("unauthorized"), "{err}");
    assert!(
        !env.docker_config.join("config.json").exists(),
        "a failed login stored credentials"
    );
    let out = env.berth_with_stdin(
        &["login", "-u", "alice", "--password-stdin", &registry.addr],
        Some(b"s3cret\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Login Succeeded"));
    let config = std::fs::read_to_string(env.docker_config.join("config.json")).unwrap();
    assert!(config.contains(&registry.addr), "{config}");
    env.ok(&["image", "push", &name]);
    env.ok(&["image", "rm", &name]);
    env.ok(&["image", "pull", &name]);
    env.ok(&["logout", &registry.addr]);
    env.ok(&["image", "rm", &name]);
    let err = env.fails(&["image", "pull", &name]);
    assert!(err.contains("unauthorized"), "{err}");
}

#[test]
fn basic_auth_success_and_failure() {
    let env = Env::new("basic");
    let registry = Registry::start_htpasswd("alice", "s3cret");
    auth_round_trip(&env, &registry);
}

#[test]
fn token_auth_success_and_failure() {
    let env = Env::new("token");
    let registry = Registry::start_token("alice", "s3cret");
    auth_round_trip(&env, &registry);
}

#[test]
fn cross_repository_push_mounts_blobs() {
    let env = Env::new("mount");
    let registry = Registry::start();
    let first = format!("{}/team/one:v1", registry.addr);
    let second = format!("{}/team/two:v1", registry.addr);
    env.import_busybox(&first);
    env.ok(&["image", "push", &first]);
    env.ok(&["image", "tag", &first, &second]);
    let out = env.berth(&["image", "push", &second]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Mounted from team/one"),
        "{}",
        text(&out.stderr)
    );
}

/// A registry that serves one image whose layer does not match its digest.
fn lying_registry() -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // A valid (empty) tar, but not the layer the manifest promises.
    let layer = vec![0u8; 1024];
    let promised = format!("sha256:{}", "ab".repeat(32));
    let config =
        format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{promised}"]}}}}"#);
    let config_digest = sha256(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{promised}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(6) {
            let Ok(mut s) = stream else { return };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let (ctype, body): (&str, Vec<u8>) = if path.contains("/manifests/") {
                (
                    "application/vnd.oci.image.manifest.v1+json",
                    manifest.clone().into_bytes(),
                )
            } else if path.contains(&config_digest) {
                ("application/octet-stream", config.clone().into_bytes())
            } else if path.contains("/blobs/") {
                ("application/octet-stream", layer.clone())
            } else {
                ("application/json", b"{}".to_vec())
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    (addr, handle)
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(bytes);
    format!("sha256:{}", h.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[test]
fn digest_mismatch_is_detected_and_nothing_is_kept() {
    let env = Env::new("mismatch");
    let (addr, _server) = lying_registry();
    let err = env.fails(&["image", "pull", &format!("{addr}/liar:v1")]);
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(!env.images().contains("liar"));
    let layers = listing(&env.store().join("layers"));
    assert!(layers.is_empty(), "a failed pull left layers: {layers:?}");
    let ingest = listing(&env.store().join("ingest"));
    assert!(ingest.is_empty(), "a failed pull left partial blobs: {ingest:?}");
}

#[test]
fn unsafe_layer_is_rejected_and_nothing_is_kept() {
    let env = Env::new("unsafe");
    let evil = env.root.join("evil.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&evil).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "escape", "/tmp").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "escape/berth-owned", &b"evil"[..]).unwrap();
    b.into_inner().unwrap().flush().unwrap();
    let before = listing(&env.store_or_empty());
    let err = env.fails(&["image", "import", evil.to_str().unwrap(), "evil:v1"]);
    assert!(err.contains("escape") && err.contains("symlink"), "{err}");
    assert!(!Path::new("/tmp/berth-owned").exists());
    assert!(!env.images().contains("evil"));
    // Lock files are not content.
    let after: Vec<String> = listing(&env.store())
        .into_iter()
        .filter(|p| !p.ends_with(".lock"))
        .collect();
    assert_eq!(after, before, "a rejected import changed the store");
}

impl Env {
    fn store_or_empty(&self) -> PathBuf {
        // Opening the store (any image command) creates its skeleton; compare against that.
        self.ok(&["image", "ls", "-q"]);
        self.store()
    }
}

#[test]
fn dangling_images_rm_and_prune() {
    let env = Env::new("prune");
    let first = env.import_busybox("app:v1");
    // A second import under the same tag leaves the first dangling.
    let tarball = busybox_tarball();
    let second = env
        .ok(&[
            "image",
            "import",
            "-c",
            "CMD [\"true\"]",
            tarball.to_str().unwrap(),
            "app:v1",
        ])
        .trim()
        .to_string();
    assert_ne!(first, second);
    let dangling = env.ok(&["image", "ls", "-q", "--no-trunc", "-f", "dangling=true"]);
    assert_eq!(dangling.trim(), first);
    let listing = env.images();
    assert!(listing.contains("<none>"), "{listing}");
    // An image a container uses cannot be removed; -f untags it and keeps it.
    let cid = env.ok(&["container", "create", "app:v1", "true"]).trim().to_string();
    let err = env.fails(&["image", "rm", "app:v1"]);
    assert!(err.contains("used by container"), "{err}");
    let out = env.ok(&["image", "rm", "-f", "app:v1"]);
    assert!(out.contains("Untagged: app:v1"), "{out}");
    assert!(!out.contains("Deleted"), "{out}");
    let dangling = env.ok(&["image", "ls", "-q", "--no-trunc", "-f", "dangling=true"]);
    assert_eq!(dangling.lines().count(), 2, "{dangling}");
    let prune = env.ok(&["image", "prune", "-f"]);
    assert!(prune.contains(&format!("deleted: {first}")), "{prune}");
    assert!(
        !prune.contains(&second),
        "prune removed an image a container uses: {prune}"
    );
    assert!(prune.contains("Total reclaimed space:"), "{prune}");
    env.ok(&["container", "rm", &cid]);
    env.import_busybox("keep:v1");
    let prune = env.ok(&["image", "prune", "-a", "-f"]);
    assert!(prune.contains(&second), "{prune}");
    assert_eq!(env.ok(&["image", "ls", "-q"]).trim(), "");
    assert!(listing_is_empty(&env.store().join("layers")));
}

fn listing_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[test]
fn save_and_load_as_tar_and_directory() {
    let env = Env::new("saveload");
    let id = env.import_busybox("saved:v1");
    let tar = env.root.join("saved.tar");
    env.ok(&["image", "save", "-o", tar.to_str().unwrap(), "saved:v1"]);
    let dir = env.root.join("layout/");
    std::fs::create_dir_all(&dir).unwrap();
    env.ok(&["image", "save", "-o", dir.to_str().unwrap(), "saved:v1"]);
    assert!(dir.join("oci-layout").exists() && dir.join("index.json").exists() && dir.join("manifest.json").exists());
    env.ok(&["image", "rm", "saved:v1"]);
    let out = env.ok(&["image", "load", "-i", tar.to_str().unwrap()]);
    assert!(out.contains("Loaded image: saved:v1"), "{out}");
    assert!(env.ok(&["image", "ls", "-q", "--no-trunc"]).contains(&id));
    env.ok(&["image", "rm", "saved:v1"]);
    // The OCI layout alone (without Docker's manifest.json) loads too.
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    let out = env.ok(&["image", "load", "-i", dir.to_str().unwrap()]);
    assert!(out.contains("Loaded image: saved:v1"), "{out}");
    let run = env.ok(&["container", "run", "--rm", "saved:v1", "cat", "/etc/group"]);
    assert!(run.contains("root:x:0:"), "{run}");
    // From stdin.
    env.ok(&["image", "rm", "saved:v1"]);
    let out = env.berth_with_stdin(&["image", "load"], Some(&std::fs::read(&tar).unwrap()));
    assert!(
        text(&out.stdout).contains("Loaded image: saved:v1"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn docker_made_save_archive_loads_and_runs() {
    let env = Env::new("dockersave");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/docker-save-import.tar");
    assert!(fixture.exists(), "missing fixture {}", fixture.display());
    let out = env.ok(&["image", "load", "-i", fixture.to_str().unwrap()]);
    assert!(out.contains("Loaded image: berth-fixture:v1"), "{out}");
    let history = env.ok(&["image", "history", "berth-fixture:v1"]);
    assert!(history.contains("IMAGE") && history.lines().count() >= 2, "{history}");
    let inspect: serde_json::Value = serde_json::from_str(&env.ok(&["image", "inspect", "berth-fixture:v1"])).unwrap();
    assert_eq!(inspect[0]["Os"], "linux");
    assert_eq!(
        inspect[0]["Id"],
        "sha256:d10e24ce42773a22eea19556760dd210ba9e94df3aa02b8bba2eb1abe86b6888"
    );
    assert_eq!(inspect[0]["Config"]["Cmd"][0], "/hello.txt");
    let layer = PathBuf::from(inspect[0]["GraphDriver"]["Data"]["LowerDirs"][0].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(layer.join("hello.txt")).unwrap(),
        "hello from a docker-made archive\n"
    );
    assert_eq!(
        std::fs::read_link(layer.join("greeting")).unwrap(),
        PathBuf::from("hello.txt")
    );
    assert_eq!(
        std::fs::read_to_string(layer.join("etc/motd")).unwrap(),
        "berth fixture\n"
    );
}

#[test]
fn script_made_busybox_image_loads_and_runs() {
    let env = Env::new("script");
    let out_dir = env.root.join("made");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-images.sh");
    let made = std::process::Command::new("bash")
        .arg(&script)
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(made.status.success(), "make-images.sh: {}", text(&made.stderr));
    let out = env.ok(&["image", "load", "-i", out_dir.join("busybox.tar").to_str().unwrap()]);
    assert!(out.contains("Loaded image: busybox:latest"), "{out}");
    let run = env.ok(&["container", "run", "--rm", "busybox", "sh", "-c", "echo ok; id -u"]);
    assert_eq!(run, "ok\n0\n");
    let ls = env.ok(&["images", "--format", "json"]);
    let row: serde_json::Value = serde_json::from_str(ls.lines().next().unwrap()).unwrap();
    assert_eq!(row["Repository"], "busybox");
    assert_eq!(row["Tag"], "latest");
}
