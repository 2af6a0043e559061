//! End-to-end tests of the Compose verbs (`up`, `ps`, `logs`, `down`) on the real kernel, as root,
//! with a busybox image imported into each test's own state root.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Output;

use common::berth::{Berth, text};
use common::registry::Registry;

/// A project in a directory of its own, with its own state root; taken down when dropped.
struct Project {
    b: Berth,
    dir: PathBuf,
    /// The compose file (`dir/compose.yaml` unless a test points elsewhere).
    file: PathBuf,
    name: String,
}

impl Project {
    /// A project named after the test, with `compose.yaml` holding `yaml` (`IMAGE` stands for
    /// the busybox image).
    fn new(name: &str, yaml: &str) -> Project {
        let b = Berth::new(&format!("compose-{name}"));
        let dir = b.root.join("project");
        std::fs::create_dir_all(&dir).unwrap();
        let p = Project {
            b,
            file: dir.join("compose.yaml"),
            dir,
            name: format!("t{name}"),
        };
        p.write(yaml);
        p.b.import_busybox("busybox:test", &[r#"CMD ["sh"]"#]);
        p
    }

    /// Replaces the compose file.
    fn write(&self, yaml: &str) {
        std::fs::write(self.dir.join("compose.yaml"), yaml.replace("IMAGE", "busybox:test")).unwrap();
    }

    /// Runs `berth -f FILE -p NAME ARGS`.
    fn berth(&self, args: &[&str]) -> Output {
        let mut all = vec!["-f", self.file.to_str().unwrap(), "-p", &self.name];
        all.extend_from_slice(args);
        self.b.berth(&all)
    }

    /// `berth -f FILE -p NAME ARGS` as a command to spawn, for tests that signal it.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("--root")
            .arg(&self.b.root)
            .arg("-f")
            .arg(&self.file)
            .args(["-p", &self.name]);
        cmd.args(args);
        cmd
    }

    /// Runs it and returns stdout, failing the test on a non-zero exit.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed ({:?}):\n{}{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `ps -a --format json`, one document per container.
    fn ps(&self) -> Vec<serde_json::Value> {
        self.ok(&["ps", "-a", "--format", "json"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The ps document of one container.
    fn container(&self, name: &str) -> serde_json::Value {
        let full = format!("{}-{name}", self.name);
        self.ps()
            .into_iter()
            .find(|c| c["Name"] == full.as_str())
            .unwrap_or_else(|| panic!("no container {full}"))
    }

    /// `container exec` in a service's first container.
    fn exec(&self, service: &str, cmd: &[&str]) -> Output {
        let name = format!("{}-{service}-1", self.name);
        let mut args = vec!["container", "exec", name.as_str()];
        args.extend_from_slice(cmd);
        self.b.berth(&args)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.berth(&["down", "-v", "-t", "0", "--remove-orphans"]);
    }
}

/// An HTTP GET on loopback, the body.
fn http_get(port: u16) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    write!(s, "GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

#[test]
fn up_runs_the_stack_and_down_removes_it() {
    let port = common::free_port();
    let p = Project::new(
        "stack",
        &format!(
            r#"
services:
  web:
    image: IMAGE
    command: sh -c 'mkdir -p /www && echo "hello from $$HOSTNAME" > /www/index.html && httpd -f -p 8080 -h /www'
    ports: ["127.0.0.1:{port}:8080"]
    depends_on: [db]
  worker:
    image: IMAGE
    command: sh -c 'echo worker says $$GREETING; sleep 1000'
    env_file: worker.env
    environment:
      GREETING: hi
    depends_on: [db]
  db:
    image: IMAGE
    command: sleep 1000
    volumes: [data:/data]
volumes:
  data: {{}}
"#
        ),
    );
    std::fs::write(p.dir.join("worker.env"), "FROM_FILE=yes\nGREETING=overridden\n").unwrap();
    let up = p.berth(&["up", "-d"]);
    assert!(up.status.success(), "up failed: {}", text(&up.stderr));
    let err = text(&up.stderr);
    let db_started = err.find(&format!("Container {}-db-1  Started", p.name)).unwrap();
    let web_created = err.find(&format!("Container {}-web-1  Created", p.name)).unwrap();
    assert!(db_started < web_created, "web was created before db started:\n{err}");

    let ps = p.ps();
    assert_eq!(ps.len(), 3, "{ps:?}");
    for c in &ps {
        assert_eq!(c["State"], "running", "{c}");
        assert_eq!(c["Project"], p.name.as_str());
    }
    let web = p.container("web-1");
    assert_eq!(web["Service"], "web");
    assert_eq!(web["Publishers"][0]["PublishedPort"], port);
    assert_eq!(web["Publishers"][0]["TargetPort"], 8080);
    assert!(
        web["Labels"]
            .as_str()
            .unwrap()
            .contains("com.docker.compose.container-number=1")
    );

    // Published port, and service names resolve between containers.
    let mut body = String::new();
    common::berth::until(10, "web to answer", || {
        body = http_get(port);
        body.contains("hello from")
    });
    let inside = p.exec("worker", &["wget", "-qO-", "http://web:8080/"]);
    assert!(text(&inside.stdout).contains("hello from"), "{}", text(&inside.stderr));

    // Environment: `environment` wins over env_file.
    let env = text(&p.exec("worker", &["env"]).stdout);
    assert!(env.contains("GREETING=hi\n"), "{env}");
    assert!(env.contains("FROM_FILE=yes\n"), "{env}");

    // Logs are prefixed with the container's short name.
    let logs = p.ok(&["logs", "worker"]);
    assert!(logs.contains("worker-1  | worker says hi"), "{logs}");

    // A second up changes nothing.
    let again = p.berth(&["up", "-d", "--dry-run"]);
    assert_eq!(text(&again.stdout), "nothing to do: the project is up to date\n");

    let ids: Vec<String> = p.ps().iter().map(|c| c["ID"].as_str().unwrap().to_string()).collect();
    let down = p.berth(&["down", "-t", "1"]);
    assert!(down.status.success(), "down failed: {}", text(&down.stderr));
    assert!(p.ps().is_empty());
    // Nothing leaks: cgroups, processes (supervisors, the network daemon), state files.
    for id in &ids {
        assert!(common::cgroup_dirs(id).is_empty(), "cgroup of {id} left");
    }
    let procs = common::processes_mentioning(p.b.root.to_str().unwrap());
    assert!(procs.is_empty(), "processes left: {procs:?}");
    let left: Vec<_> = std::fs::read_dir(p.b.root.join("containers"))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "container state left: {left:?}");
    assert!(
        std::fs::read_dir(p.b.root.join("networks/endpoints")).map_or(true, |mut d| d.next().is_none()),
        "endpoint namespaces left"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.b.root.join("networks/state.json")).unwrap()).unwrap();
    assert_eq!(state["networks"], serde_json::json!({}), "{state}");
    assert_eq!(state["endpoints"], serde_json::json!({}), "{state}");
    assert!(!p.b.root.join("networks/domains").join(&p.name).exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(p.b.root.to_str().unwrap()),
        "mounts left under the state root"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port still open"
    );
}

#[test]
fn named_volumes_survive_down_and_go_with_down_v() {
    let p = Project::new(
        "volumes",
        r#"
services:
  db:
    image: IMAGE
    command: sh -c 'test -f /data/first || date > /data/first; sleep 1000'
    volumes: [data:/data]
  reader:
    image: IMAGE
    command: sleep 1000
    volumes_from: ["db:ro"]
    volumes: [etc:/etc]
volumes:
  data: {}
  etc: {}
"#,
    );
    p.ok(&["up", "-d"]);
    common::berth::until(5, "the file", || {
        text(&p.exec("db", &["cat", "/data/first"]).stdout).len() > 5
    });
    // volumes_from shares the volume, read-only as asked.
    let shared = p.exec("reader", &["cat", "/data/first"]);
    assert_eq!(
        text(&shared.stdout),
        text(&p.exec("db", &["cat", "/data/first"]).stdout)
    );
    assert!(
        !p.exec("reader", &["touch", "/data/x"]).status.success(),
        "the shared volume is writable"
    );
    // A new named volume starts with the image's content at its mount point.
    let passwd = p.exec("reader", &["cat", "/etc/passwd"]);
    assert!(text(&passwd.stdout).starts_with("root:"), "{}", text(&passwd.stderr));
    let first = text(&p.exec("db", &["cat", "/data/first"]).stdout);
    p.ok(&["down", "-t", "0"]);
    assert!(p.b.root.join(format!("volumes/{}_data", p.name)).exists());
    p.ok(&["up", "-d"]);
    let again = text(&p.exec("db", &["cat", "/data/first"]).stdout);
    assert_eq!(first, again, "the volume lost its data");
    p.ok(&["down", "-v", "-t", "0"]);
    assert!(!p.b.root.join(format!("volumes/{}_data", p.name)).exists());
}

#[test]
fn a_changed_service_alone_is_recreated_and_scale_adds_and_removes() {
    let yaml = |greeting: &str| {
        format!(
            r#"
services:
  a:
    image: IMAGE
    command: sleep 1000
    environment: {{GREETING: {greeting}}}
  b:
    image: IMAGE
    command: sleep 1000
"#
        )
    };
    let p = Project::new("recreate", &yaml("one"));
    p.ok(&["up", "-d"]);
    let a1 = p.container("a-1")["ID"].clone();
    let b1 = p.container("b-1")["ID"].clone();
    p.write(&yaml("two"));
    let plan = p.ok(&["up", "--dry-run"]);
    assert_eq!(
        plan,
        format!("1. recreate container {}-a-1 (configuration changed)\n", p.name)
    );
    p.ok(&["up", "-d", "-t", "0"]);
    assert_ne!(p.container("a-1")["ID"], a1, "a was not recreated");
    assert_eq!(p.container("b-1")["ID"], b1, "b was recreated");
    let env = text(&p.exec("a", &["env"]).stdout);
    assert!(env.contains("GREETING=two"), "{env}");

    p.ok(&["up", "-d", "--scale", "b=3"]);
    assert_eq!(p.ps().iter().filter(|c| c["Service"] == "b").count(), 3);
    assert_eq!(p.container("b-3")["State"], "running");
    p.ok(&["up", "-d", "-t", "0", "--scale", "b=1"]);
    let names: Vec<String> = p.ps().iter().map(|c| c["Name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, vec![format!("{}-a-1", p.name), format!("{}-b-1", p.name)]);
}

#[test]
fn a_failed_dependency_stops_its_dependants_and_says_why() {
    let p = Project::new(
        "deps",
        r#"
services:
  migrate:
    image: IMAGE
    command: sh -c 'echo migrating; exit 3'
  app:
    image: IMAGE
    command: sleep 1000
    depends_on:
      migrate: {condition: service_completed_successfully}
  ok:
    image: IMAGE
    command: sh -c 'exit 0'
  after_ok:
    image: IMAGE
    command: sleep 1000
    depends_on:
      ok: {condition: service_completed_successfully}
"#,
    );
    let up = p.berth(&["up", "-d"]);
    assert!(!up.status.success(), "up should fail");
    let err = text(&up.stderr);
    assert!(
        err.contains("service migrate didn't complete successfully: exit 3"),
        "{err}"
    );
    assert_eq!(p.container("app-1")["State"], "created", "app must not start");
    assert_eq!(
        p.container("after_ok-1")["State"],
        "running",
        "an independent branch goes on"
    );
}

#[test]
fn concurrent_ups_do_not_corrupt_the_project() {
    let p = Project::new(
        "concurrent",
        r#"
services:
  a: {image: IMAGE, command: sleep 1000}
  b: {image: IMAGE, command: sleep 1000}
  c: {image: IMAGE, command: sleep 1000, depends_on: [a, b]}
"#,
    );
    let (x, y) = std::thread::scope(|s| {
        let x = s.spawn(|| p.berth(&["up", "-d"]));
        let y = s.spawn(|| p.berth(&["up", "-d"]));
        (x.join().unwrap(), y.join().unwrap())
    });
    assert!(x.status.success(), "{}", text(&x.stderr));
    assert!(y.status.success(), "{}", text(&y.stderr));
    let ps = p.ps();
    assert_eq!(ps.len(), 3, "{ps:?}");
    assert!(ps.iter().all(|c| c["State"] == "running"), "{ps:?}");
    assert_eq!(p.ok(&["up", "--dry-run"]), "nothing to do: the project is up to date\n");
}

#[test]
fn an_up_killed_halfway_converges_on_the_next_one() {
    let yaml = (0..8)
        .map(|i| format!("  s{i}: {{image: IMAGE, command: sleep 1000}}\n"))
        .collect::<String>();
    let p = Project::new("killed", &format!("services:\n{yaml}"));
    let mut child = p
        .command(&["up", "-d"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as the first container exists.
    common::berth::until(20, "a first container", || {
        std::fs::read_dir(p.b.root.join("containers")).is_ok_and(|mut d| d.next().is_some())
    });
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGKILL);
    let _ = child.wait();
    p.ok(&["up", "-d"]);
    let ps = p.ps();
    assert_eq!(ps.len(), 8, "{ps:?}");
    assert!(ps.iter().all(|c| c["State"] == "running"), "{ps:?}");
}

#[test]
fn attached_up_streams_logs_and_returns_the_exit_code_asked_for() {
    let p = Project::new(
        "attached",
        r#"
services:
  server:
    image: IMAGE
    command: sh -c 'echo serving; sleep 1000'
  tests:
    image: IMAGE
    command: sh -c 'sleep 0.3; echo testing; exit 7'
    depends_on: [server]
"#,
    );
    let out = p.berth(&["up", "--exit-code-from", "tests", "-t", "1"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("server-1  | serving"), "{stdout}");
    assert!(stdout.contains("tests-1   | testing"), "{stdout}");
    assert!(stdout.contains("tests-1 exited with code 7"), "{stdout}");
    // The abort stopped the server too.
    assert_eq!(p.container("server-1")["State"], "exited");

    // Without --exit-code-from, the first container to stop decides.
    p.ok(&["rm", "-f"]);
    let out = p.berth(&["up", "--abort-on-container-exit", "-t", "1"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));

    // Plain attached mode ends when every container has stopped, with 0.
    p.write(
        r#"
services:
  one: {image: IMAGE, command: sh -c 'echo one; exit 3'}
  two: {image: IMAGE, command: sh -c 'echo two'}
"#,
    );
    let out = p.berth(&["up", "--remove-orphans"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("one-1 exited with code 3"), "{stdout}");
}

#[test]
fn lifecycle_verbs_act_on_services() {
    let p = Project::new(
        "verbs",
        r#"
services:
  db: {image: IMAGE, command: sleep 1000}
  app: {image: IMAGE, command: sleep 1000, depends_on: [db]}
"#,
    );
    p.ok(&["up", "-d"]);
    p.ok(&["stop", "-t", "0", "app"]);
    assert_eq!(p.container("app-1")["State"], "exited");
    assert_eq!(p.container("db-1")["State"], "running");
    p.ok(&["start"]);
    assert_eq!(p.container("app-1")["State"], "running");
    p.ok(&["pause", "db"]);
    assert_eq!(p.container("db-1")["State"], "paused");
    p.ok(&["unpause", "db"]);
    assert_eq!(p.container("db-1")["State"], "running");
    let before = p.container("db-1")["ID"].clone();
    p.ok(&["restart", "-t", "0", "db"]);
    assert_eq!(p.container("db-1")["State"], "running");
    assert_eq!(p.container("db-1")["ID"], before, "restart must keep the container");
    let top = p.ok(&["top", "app"]);
    assert!(top.contains("sleep 1000"), "{top}");
    p.ok(&["kill", "app"]);
    assert_eq!(p.container("app-1")["State"], "exited");
    assert_eq!(p.container("app-1")["ExitCode"], 137);
    p.ok(&["rm", "-f"]);
    assert!(p.ps().iter().all(|c| c["Service"] != "app"), "app was not removed");
    let ls = p.ok(&["ls", "--format", "json"]);
    assert!(ls.contains(&format!("\"Name\":\"{}\"", p.name)), "{ls}");
    assert!(ls.contains("running(1)"), "{ls}");
}

#[test]
fn the_quickstart_example_comes_up_healthy_and_serves() {
    let port = common::free_port();
    let mut p = Project::new("quickstart", "services: {}\n");
    p.file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/compose.yaml");
    p.b.env.push(("WEB_PORT".into(), port.to_string()));
    p.b.ok(&["image", "tag", "busybox:test", "localhost/busybox:latest"]);
    p.ok(&["up", "-d"]);
    // web waits for api to be healthy, so everything is up once `up` returns.
    let ps = p.ps();
    assert_eq!(ps.len(), 4, "{ps:?}");
    let api = p.container("api-1");
    assert_eq!(api["Health"], "healthy", "{api}");
    assert!(api["Status"].as_str().unwrap().ends_with("(healthy)"), "{api}");
    assert!(http_get(port).contains("berth quickstart"));
    p.ok(&["down", "-v"]);
    assert!(p.ps().is_empty());
}

#[test]
fn an_unhealthy_dependency_fails_its_dependants() {
    let p = Project::new(
        "unhealthy",
        r#"
services:
  db:
    image: IMAGE
    command: sleep 1000
    healthcheck: {test: ["CMD", "false"], interval: 100ms, retries: 2}
  app:
    image: IMAGE
    command: sleep 1000
    depends_on: {db: {condition: service_healthy}}
  nocheck:
    image: IMAGE
    command: sleep 1000
  needs_check:
    image: IMAGE
    command: sleep 1000
    depends_on: {nocheck: {condition: service_healthy}}
"#,
    );
    let up = p.berth(&["up", "-d"]);
    assert!(!up.status.success());
    let err = text(&up.stderr);
    assert!(
        err.contains(&format!("container {}-db-1 is unhealthy", p.name)),
        "{err}"
    );
    assert!(
        err.contains(&format!("container {}-nocheck-1 has no healthcheck configured", p.name)),
        "{err}"
    );
    assert_eq!(p.container("app-1")["State"], "created");
    assert_eq!(p.container("db-1")["Health"], "unhealthy");
}

#[test]
fn exec_and_run_work_on_services() {
    let p = Project::new(
        "exec",
        r#"
services:
  db:
    image: IMAGE
    command: sleep 1000
    environment: {ROLE: db}
  tool:
    image: IMAGE
    command: echo default
    depends_on: [db]
    environment: {ROLE: tool}
"#,
    );
    p.ok(&["up", "-d", "db"]);
    let out = p.ok(&["exec", "-T", "-e", "EXTRA=1", "db", "sh", "-c", "echo $ROLE $EXTRA"]);
    assert_eq!(out, "db 1\n");
    let failed = p.berth(&["exec", "-T", "db", "sh", "-c", "exit 4"]);
    assert_eq!(failed.status.code(), Some(4));

    // A one-off container: the service's environment, its own command, removed with --rm.
    let out = p.berth(&[
        "run",
        "--rm",
        "-T",
        "tool",
        "sh",
        "-c",
        "echo $ROLE; ping -c1 -W2 db >/dev/null && echo reached db",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "tool\nreached db\n");
    let code = p.berth(&["run", "--rm", "-T", "tool", "sh", "-c", "exit 9"]);
    assert_eq!(code.status.code(), Some(9));
    assert!(
        p.ps().iter().all(|c| !c["Name"].as_str().unwrap().contains("-run-")),
        "--rm left a container"
    );
    // A detached one-off is labelled as one and ignored by the planner.
    let name = p.ok(&["run", "-d", "tool", "sleep", "1000"]).trim().to_string();
    assert!(name.starts_with(&format!("{}-tool-run-", p.name)), "{name}");
    let plan = p.ok(&["up", "--dry-run"]);
    assert!(!plan.contains("-run-"), "{plan}");
}

#[test]
fn up_wait_returns_once_healthy_and_no_deps_starts_only_the_named() {
    let p = Project::new(
        "wait",
        r#"
services:
  db:
    image: IMAGE
    command: sh -c 'sleep 0.5; touch /tmp/ready; sleep 1000'
    healthcheck: {test: ["CMD", "test", "-f", "/tmp/ready"], interval: 100ms, start_period: 5s, start_interval: 100ms}
  app:
    image: IMAGE
    command: sleep 1000
  broken:
    image: IMAGE
    command: sleep 1000
    healthcheck: {test: ["CMD", "false"], interval: 100ms, retries: 1}
"#,
    );
    p.ok(&["up", "--wait", "db", "app"]);
    assert_eq!(p.container("db-1")["Health"], "healthy");
    assert_eq!(p.container("app-1")["State"], "running");
    let out = p.berth(&["up", "--wait", "--wait-timeout", "20", "broken"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("broken-1 is unhealthy"),
        "{}",
        text(&out.stderr)
    );

    p.write(
        r#"
services:
  db: {image: IMAGE, command: sleep 1000}
  app: {image: IMAGE, command: sleep 1000, depends_on: [db]}
"#,
    );
    p.ok(&["down", "-t", "0", "--remove-orphans"]);
    p.ok(&["up", "-d", "--no-deps", "app"]);
    let names: Vec<String> = p
        .ps()
        .iter()
        .map(|c| c["Service"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["app"]);
}

#[test]
fn create_filters_push_pull_and_down_rmi() {
    let registry = Registry::start();
    let image = format!("{}/compose/busybox:v1", registry.addr);
    let p = Project::new(
        "images",
        &format!(
            r#"
services:
  a:
    image: {image}
    command: sh -c 'echo early; sleep 1.2; echo late; sleep 1000'
  b:
    image: {image}
    command: sleep 1000
"#
        ),
    );
    p.b.ok(&["image", "tag", "busybox:test", &image]);
    let pushed = p.ok(&["push", "a"]);
    assert!(pushed.contains("v1: digest: sha256:"), "{pushed}");
    p.b.ok(&["image", "rm", &image]);
    p.ok(&["pull", "-q"]);
    assert!(p.b.ok(&["image", "ls"]).contains("compose/busybox"));

    // create makes the containers without starting them.
    p.ok(&["create"]);
    assert!(p.ps().iter().all(|c| c["State"] == "created"), "{:?}", p.ps());
    p.ok(&["start"]);
    let filtered = p.ok(&["ps", "-q", "--filter", "status=running"]);
    assert_eq!(filtered.lines().count(), 2, "{filtered}");
    assert!(p.berth(&["ps", "--filter", "name=x"]).status.code() != Some(0));

    // logs --since leaves out what came before.
    common::berth::until(10, "the late line", || p.ok(&["logs", "a"]).contains("late"));
    let all = p.ok(&["logs", "--index", "1", "-t", "a"]);
    let late_at = all
        .lines()
        .find(|l| l.contains("late"))
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    let since = p.ok(&["logs", "--since", &late_at, "a"]);
    assert!(since.contains("late") && !since.contains("early"), "{since}");
    let until = p.ok(&["logs", "--until", &late_at, "a"]);
    assert!(until.contains("early") && !until.contains("late"), "{until}");
    assert!(p.ok(&["logs", "--since", "1h", "a"]).contains("early"));

    // down --rmi all removes the services' image once no container uses it.
    p.ok(&["down", "-t", "0", "--rmi", "all"]);
    assert!(!p.b.ok(&["image", "ls"]).contains("compose/busybox"));
}

#[test]
fn ctrl_c_stops_an_attached_up_and_no_attach_hides_a_service() {
    let p = Project::new(
        "ctrlc",
        r#"
services:
  loud: {image: IMAGE, command: sh -c 'echo loud; sleep 1000'}
  quiet:
    image: IMAGE
    command: sh -c 'echo hidden; trap "exit 0" TERM; sleep 1000 & wait'
"#,
    );
    let child = p
        .command(&["up", "--no-attach", "quiet", "--no-color"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::berth::until(20, "both running", || {
        p.ps().iter().filter(|c| c["State"] == "running").count() == 2
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Gracefully stopping"),
        "{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("loud-1  | loud"), "{stdout}");
    assert!(!stdout.contains("hidden"), "a --no-attach service was shown: {stdout}");
    // Every container was stopped, attached or not; the one with a TERM trap exited cleanly.
    assert!(p.ps().iter().all(|c| c["State"] == "exited"), "{:?}", p.ps());
    assert_eq!(p.container("quiet-1")["ExitCode"], 0);

    // An external volume must exist.
    p.write(
        r#"
services:
  a: {image: IMAGE, command: sleep 1000, volumes: [missing:/data]}
volumes:
  missing: {external: true}
"#,
    );
    let up = p.berth(&["up", "-d", "--remove-orphans"]);
    assert!(!up.status.success());
    assert!(
        text(&up.stderr).contains("external volume missing not found"),
        "{}",
        text(&up.stderr)
    );
}

#[test]
fn depends_on_restart_follows_the_dependency() {
    let yaml = |v: &str| {
        format!(
            r#"
services:
  db: {{image: IMAGE, command: sleep 1000, environment: {{V: "{v}"}}}}
  app:
    image: IMAGE
    command: sleep 1000
    depends_on: {{db: {{condition: service_started, restart: true}}}}
"#
        )
    };
    let p = Project::new("restartdep", &yaml("1"));
    p.ok(&["up", "-d"]);
    let started = |p: &Project| p.b.inspect(&format!("{}-app-1", p.name))["State"]["StartedAt"].clone();
    let app_id = p.container("app-1")["ID"].clone();
    let first = started(&p);
    p.write(&yaml("2"));
    assert_eq!(
        p.ok(&["up", "--dry-run"]),
        format!(
            "1. recreate container {0}-db-1 (configuration changed)\n\
             2. restart container {0}-app-1 (dependency db was recreated) after 1\n",
            p.name
        )
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    p.ok(&["up", "-d", "-t", "0"]);
    assert_eq!(p.container("app-1")["ID"], app_id, "app was recreated, not restarted");
    let second = started(&p);
    assert_ne!(first, second, "app was not restarted");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    p.ok(&["restart", "-t", "0", "db"]);
    assert_ne!(started(&p), second, "restarting db did not restart app");
}

#[test]
fn cp_copies_both_ways_and_stays_inside_the_container() {
    let p = Project::new("cp", "services:\n  app: {image: IMAGE, command: sleep 1000}\n");
    p.ok(&["up", "-d"]);
    // Host to container: a file, then a directory.
    let host = p.dir.join("hello.txt");
    std::fs::write(&host, "hello\n").unwrap();
    p.ok(&["cp", host.to_str().unwrap(), "app:/tmp/"]);
    assert_eq!(text(&p.exec("app", &["cat", "/tmp/hello.txt"]).stdout), "hello\n");
    let tree = p.dir.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/f"), "deep\n").unwrap();
    p.ok(&["cp", tree.to_str().unwrap(), "app:/tmp/copied"]);
    assert_eq!(text(&p.exec("app", &["cat", "/tmp/copied/sub/f"]).stdout), "deep\n");
    // As Docker, the destination's parent must exist.
    let out = p.berth(&["cp", tree.to_str().unwrap(), "app:/nowhere/copied"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot copy /nowhere/copied"),
        "{}",
        text(&out.stderr)
    );
    // Container to host, renamed.
    let back = p.dir.join("back.txt");
    p.ok(&["cp", "app:/etc/passwd", back.to_str().unwrap()]);
    assert!(std::fs::read_to_string(&back).unwrap().starts_with("root:"));
    // A symlink in the container that points at /etc is followed inside the container only.
    assert!(p.exec("app", &["ln", "-s", "/etc", "/tmp/link"]).status.success());
    let marker = format!("berth-cp-escape-{}", std::process::id());
    let evil = p.dir.join(&marker);
    std::fs::write(&evil, "x").unwrap();
    p.ok(&["cp", evil.to_str().unwrap(), "app:/tmp/link/"]);
    assert!(
        !std::path::Path::new("/etc").join(&marker).exists(),
        "cp wrote to the host's /etc"
    );
    assert!(
        p.exec("app", &["test", "-f", &format!("/etc/{marker}")])
            .status
            .success()
    );
    // A stopped container is refused with a clear error.
    p.ok(&["stop", "-t", "0"]);
    let out = p.berth(&["cp", "app:/etc/passwd", back.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("running container"), "{}", text(&out.stderr));
}

#[test]
fn events_reports_container_changes_as_json_lines() {
    let p = Project::new("events", "services:\n  app: {image: IMAGE, command: sleep 1000}\n");
    let child = p
        .command(&["events", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    p.ok(&["up", "-d"]);
    std::thread::sleep(std::time::Duration::from_millis(400));
    p.ok(&["stop", "-t", "0"]);
    std::thread::sleep(std::time::Duration::from_millis(400));
    p.ok(&["rm", "-f"]);
    std::thread::sleep(std::time::Duration::from_millis(400));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGKILL).unwrap();
    let out = child.wait_with_output().unwrap();
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["create", "start", "die", "destroy"], "{events:?}");
    assert!(events.iter().all(|e| e["service"] == "app" && e["type"] == "container"));
    assert_eq!(events[0]["attributes"]["name"], format!("{}-app-1", p.name).as_str());
}
