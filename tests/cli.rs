//! The `berth` binary as a user runs it: `config` flags, output files, exit codes, and the
//! dependency graph of a loaded project.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth::compose::{LoadOptions, load};
use berth::graph::ServiceGraph;

fn quickstart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart")
}

/// A fresh, empty directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("berth-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn berth(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/root")
        .output()
        .expect("run berth")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "berth failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn yaml_output_loads_back_to_the_same_project() {
    let tmp = TempDir::new("roundtrip");
    let json = stdout(&berth(
        &quickstart(),
        &["--profile", "debug", "config", "--format", "json"],
    ));
    let yaml = stdout(&berth(&quickstart(), &["--profile", "debug", "config"]));
    std::fs::write(tmp.0.join("compose.yaml"), &yaml).expect("write yaml");
    // The canonical form must be a fixed point: loading it again gives the same document.
    let again = stdout(&berth(&tmp.0, &["--profile", "debug", "config", "--format", "json"]));
    let a: serde_json::Value = serde_json::from_str(&json).expect("json");
    let b: serde_json::Value = serde_json::from_str(&again).expect("json");
    assert_eq!(a, b);
}

#[test]
fn list_flags() {
    let dir = quickstart();
    assert_eq!(stdout(&berth(&dir, &["config", "--services"])), "cache\ndb\napi\nweb\n");
    assert_eq!(stdout(&berth(&dir, &["config", "--volumes"])), "dbdata\n");
    assert_eq!(stdout(&berth(&dir, &["config", "--profiles"])), "debug\n");
    let images = stdout(&berth(&dir, &["config", "--images"]));
    assert_eq!(images.lines().count(), 4, "{images}");
    assert!(images.lines().all(|l| l == "localhost/busybox:latest"), "{images}");
}

#[test]
fn quiet_prints_nothing_and_output_goes_to_a_file() {
    let tmp = TempDir::new("output");
    let dir = quickstart();
    assert_eq!(stdout(&berth(&dir, &["config", "-q"])), "");
    let target = tmp.0.join("out.json");
    let target_arg = target.to_string_lossy().into_owned();
    assert_eq!(
        stdout(&berth(&dir, &["config", "--format", "json", "-o", &target_arg])),
        ""
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&target).expect("written")).expect("json");
    assert_eq!(written["name"], "quickstart");
}

#[test]
fn no_interpolate_keeps_variables() {
    let tmp = TempDir::new("nointerp");
    std::fs::write(
        tmp.0.join("compose.yaml"),
        "services:\n  a:\n    image: \"x:${TAG:-1}\"\n",
    )
    .expect("write");
    let out = stdout(&berth(&tmp.0, &["config", "--no-interpolate", "--format", "json"]));
    assert!(out.contains("\"image\": \"x:${TAG:-1}\""), "{out}");
    let out = stdout(&berth(&tmp.0, &["config", "--format", "json"]));
    assert!(out.contains("\"image\": \"x:1\""), "{out}");
}

#[test]
fn errors_exit_non_zero_with_location() {
    let tmp = TempDir::new("errors");
    std::fs::write(
        tmp.0.join("compose.yaml"),
        "services:\n  web:\n    image: x\n    ports: [\"80\", \"nope\"]\n",
    )
    .expect("write");
    let out = berth(&tmp.0, &["config"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("compose.yaml:4:19: services.web.ports[1]: invalid containerPort: nope"),
        "{err}"
    );
}

#[test]
fn binary_and_odd_input_is_an_error_not_a_panic() {
    let tmp = TempDir::new("binary");
    let cases: &[&[u8]] = &[
        b"\xff\xfe\x00garbage",
        b"- a\n- b\n",
        b"services: 5\n",
        b"[",
        b"&a [*a]",
    ];
    for input in cases {
        std::fs::write(tmp.0.join("compose.yaml"), input).expect("write");
        let out = berth(&tmp.0, &["config"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "input {input:?}: {err}");
        assert!(!err.contains("panicked"), "input {input:?}: {err}");
        assert!(err.starts_with("error: "), "input {input:?}: {err}");
    }
}

#[test]
fn version_short_is_semver() {
    let v = stdout(&berth(Path::new("/"), &["version", "--short"]));
    let parts: Vec<&str> = v.trim().split('.').collect();
    assert_eq!(parts.len(), 3, "{v}");
    assert!(parts.iter().all(|p| p.parse::<u32>().is_ok()), "{v}");
}

#[test]
fn project_graph_orders_start_and_stop() {
    let opts = LoadOptions {
        working_dir: quickstart(),
        interpolate: true,
        profiles: vec!["debug".into()],
        ..LoadOptions::default()
    };
    let project = load(&opts).expect("quickstart loads");
    let graph = ServiceGraph::new(&project).expect("acyclic");
    let start = graph.start_levels();
    assert_eq!(start, vec![vec!["cache", "db"], vec!["api"], vec!["shell", "web"]]);
    let mut stop = start.clone();
    stop.reverse();
    assert_eq!(graph.stop_levels(), stop);
    assert_eq!(project.services["shell"].dependencies(), vec!["api"]);
}

#[test]
fn compose_file_from_stdin() {
    use std::io::Write;
    let tmp = TempDir::new("stdin");
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["-f", "-", "config", "--format", "json"])
        .current_dir(&tmp.0)
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn berth");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(b"services:\n  a:\n    image: x\n    volumes: ['./d:/d']\n")
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let dir = tmp.0.to_string_lossy().into_owned();
    assert_eq!(doc["services"]["a"]["volumes"][0]["source"], format!("{dir}/d"));
    let name = tmp
        .0
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert_eq!(doc["name"], berth::compose::normalize_project_name(&name));
}

/// Regression (found by fuzzing): extends chains that hop between two files used to recurse once
/// per hop and re-read the other file each time. 10 000 hops must load, without exhausting the stack.
#[test]
fn extends_ping_pong_between_files_does_not_recurse() {
    let tmp = TempDir::new("pingpong");
    let n = 10_000;
    let (mut a, mut b) = (String::from("services:\n"), String::from("services:\n"));
    for i in (0..n).step_by(2) {
        a.push_str(&format!("  s{i}: {{extends: {{file: b.yaml, service: s{}}}}}\n", i + 1));
        b.push_str(&format!(
            "  s{}: {{extends: {{file: compose.yaml, service: s{}}}}}\n",
            i + 1,
            i + 2
        ));
    }
    a.push_str(&format!("  s{n}: {{image: x}}\n"));
    std::fs::write(tmp.0.join("compose.yaml"), a).expect("write");
    std::fs::write(tmp.0.join("b.yaml"), b).expect("write");
    let images = stdout(&berth(&tmp.0, &["config", "--images"]));
    assert_eq!(images.lines().count(), n / 2 + 1);
    assert!(images.lines().all(|l| l == "x"), "every service inherits image x");
}

#[test]
fn up_dry_run_prints_the_plan_for_an_empty_state() {
    let dir = TempDir::new("updry");
    std::fs::write(
        dir.0.join("compose.yaml"),
        "name: shop\nservices:\n  web:\n    image: nginx\n    depends_on: [db]\n    deploy: {replicas: 2}\n  \
         db:\n    image: postgres\n    volumes: [data:/var/lib/postgresql/data]\n  \
         tool:\n    image: busybox\n    network_mode: none\nvolumes:\n  data: {}\n  ext: {external: true}\n",
    )
    .unwrap();
    let root = dir.0.join("state").to_string_lossy().into_owned();
    let out = berth(&dir.0, &["--root", &root, "up", "--dry-run"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1. create network shop_default (missing)\n\
         2. create volume shop_data (missing)\n\
         3. create container shop-db-1 (missing) after 1, 2\n\
         4. start container shop-db-1 (created) after 3\n\
         5. create container shop-tool-1 (missing)\n\
         6. start container shop-tool-1 (created) after 5\n\
         7. create container shop-web-1 (missing) after 1, 4\n\
         8. start container shop-web-1 (created) after 7\n\
         9. create container shop-web-2 (missing) after 1, 4\n\
         10. start container shop-web-2 (created) after 9\n"
    );
    let out = berth(&dir.0, &["--root", &root, "up", "--dry-run", "--scale", "web=x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --scale"));
    assert!(!dir.0.join("state").exists(), "a dry run changed the state root");
}

#[test]
fn a_project_named_on_the_command_line_alone_must_be_a_valid_name() {
    let dir = TempDir::new("badname");
    let root = dir.0.join("state").to_string_lossy().into_owned();
    for args in [
        vec!["--root", &root, "-p", "../../etc", "ps"],
        vec!["--root", &root, "-p", "Upper", "logs"],
    ] {
        let out = berth(&dir.0, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("invalid project name"), "{err}");
    }
    // Without a compose file and without -p there is nothing to act on.
    let out = berth(&dir.0, &["--root", &root, "ps"]);
    assert!(!out.status.success());
    assert!(!dir.0.join("state/projects").exists(), "a refused command wrote a lock");
}

/// The binary calls no function of the C library's name service switch (a static glibc serves
/// them by `dlopen`ing modules that must be of its own version; berth reads /etc/hosts,
/// /etc/resolv.conf and /etc/passwd itself), and when build.rs linked it statically it has no
/// program interpreter, so nothing is loaded before `main`.
#[test]
fn the_binary_needs_no_name_service_modules_or_loader() {
    let bin = env!("CARGO_BIN_EXE_berth");
    let out = Command::new("nm")
        .arg(bin)
        .output()
        .expect("run nm (binutils, installed with gcc)");
    assert!(
        out.status.success(),
        "nm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let symbols = String::from_utf8_lossy(&out.stdout);
    let nss = [
        "getaddrinfo",
        "getnameinfo",
        "gethostbyname",
        "gethostbyname_r",
        "gethostbyname2_r",
        "getservbyname_r",
        "getpwnam_r",
        "getpwuid_r",
        "getgrnam_r",
        "getgrgid_r",
        "getgrouplist",
        "initgroups",
    ];
    let mut seen = 0;
    let mut found = Vec::new();
    for line in symbols.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(kind), Some(name)) = (fields.iter().rev().nth(1), fields.last()) else {
            continue;
        };
        seen += 1;
        let name = name.split('@').next().unwrap_or_default();
        // `n`/`N` entries are notes and debug symbols (glibc's link-warning sections), not code.
        if nss.contains(&name) && !matches!(*kind, "n" | "N") {
            found.push(line.to_string());
        }
    }
    assert!(seen > 1000, "nm listed only {seen} symbols: is the binary stripped?");
    assert!(found.is_empty(), "the binary refers to NSS functions: {found:?}");

    let elf = std::fs::read(bin).expect("read the binary");
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([elf[at], elf[at + 1]]));
    let phoff = usize::try_from(u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap())).unwrap();
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    let interp = (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
    });
    match env!("BERTH_LINKAGE") {
        "static" => assert!(
            !interp,
            "build.rs linked berth statically, but it has a program interpreter"
        ),
        other => assert_eq!(other, "dynamic", "unknown linkage"),
    }
}
