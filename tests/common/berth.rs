//! A `berth` runner with a state root of its own, optionally inside a network namespace the test
//! made, that force-removes its containers and networks and deletes the root when dropped.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One test's berth: its state root, the busybox root file system, extra environment.
pub struct Berth {
    /// The state root.
    pub root: PathBuf,
    /// The busybox root file system.
    pub rootfs: PathBuf,
    /// Run every command inside this network namespace (`/run/netns/NAME`) with nsenter.
    pub netns: Option<String>,
    /// Extra environment for every command.
    pub env: Vec<(String, String)>,
}

impl Berth {
    /// A fresh state root named after the test.
    pub fn new(name: &str) -> Berth {
        super::require_root();
        let root = std::env::temp_dir().join(format!("berth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        Berth {
            root,
            rootfs: super::busybox_rootfs(),
            netns: None,
            env: Vec::new(),
        }
    }

    /// Runs `berth --root ROOT ARGS`.
    pub fn berth(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run berth")
    }

    /// The command `berth --root ROOT ARGS`, to spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        let exe = env!("CARGO_BIN_EXE_berth");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.arg("--root").arg(&self.root).args(args).stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs berth and returns stdout, failing the test on a non-zero exit.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(args, &self.berth(args))
    }

    /// `container run --rootfs <busybox> FLAGS CMD`.
    pub fn run(&self, flags: &[&str], cmd: &[&str]) -> Output {
        let rootfs = self.rootfs.to_string_lossy().into_owned();
        let mut args = vec!["container", "run", "--rootfs", rootfs.as_str()];
        args.extend_from_slice(flags);
        args.extend_from_slice(cmd);
        self.berth(&args)
    }

    /// `run`, failing the test on a non-zero exit; returns stdout.
    pub fn run_ok(&self, flags: &[&str], cmd: &[&str]) -> String {
        let out = self.run(flags, cmd);
        assert!(out.status.success(), "run {cmd:?} failed: {}", text(&out.stderr));
        text(&out.stdout)
    }

    /// Runs detached and returns the id.
    pub fn run_d(&self, flags: &[&str], cmd: &[&str]) -> String {
        let mut f = vec!["-d"];
        f.extend_from_slice(flags);
        let out = self.run(&f, cmd);
        assert_eq!(out.status.code(), Some(0), "run -d failed: {}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    }
}

impl Berth {
    /// `container inspect ID`, the first document.
    pub fn inspect(&self, id: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["container", "inspect", id])).unwrap();
        v[0].clone()
    }

    /// A container's state directory.
    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// Imports the busybox root file system as image `reference`, with `changes` (Dockerfile
    /// instructions such as `CMD ["sh"]`, each passed as `-c`, in order). Returns the image id.
    pub fn import_busybox(&self, reference: &str, changes: &[&str]) -> String {
        let tarball = self.root.join("busybox.tar");
        super::write_busybox_tarball(&tarball);
        let mut args = vec!["image", "import"];
        for change in changes {
            args.extend(["-c", change]);
        }
        args.extend([tarball.to_str().unwrap(), reference]);
        let id = self.ok(&args);
        std::fs::remove_file(&tarball).unwrap();
        id.trim().to_string()
    }

    /// A container's `state.json`, parsed.
    pub fn state_json(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.state_dir(id).join("state.json")).unwrap()).unwrap()
    }

    /// Waits until `f` holds, failing after `secs` with `what`.
    pub fn until(&self, secs: u64, what: &str, f: impl FnMut() -> bool) {
        until(secs, what, f)
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let ids = text(&self.berth(&["container", "ps", "-aq", "--no-trunc"]).stdout);
        for id in ids.split_whitespace() {
            let _ = self.berth(&["container", "rm", "-f", id]);
        }
        if let Ok(state) = std::fs::read_to_string(self.root.join("networks/state.json"))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&state)
            && let Some(nets) = v["networks"].as_object()
        {
            for name in nets.keys() {
                let _ = self.berth(&["network", "rm", name]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The stdout of a berth run with `args`, failing the test (with its stderr) when it failed.
pub fn succeeded(args: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "berth {args:?} failed ({:?}): {}",
        out.status.code(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Lossy UTF-8.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Waits until `f` holds, failing after `secs` with `what`.
pub fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A network namespace made with `ip netns add`, deleted on drop.
pub struct TestNs {
    /// Its name under /run/netns.
    pub name: String,
}

impl TestNs {
    /// A new namespace with loopback up.
    pub fn new(name: &str) -> TestNs {
        let name = format!("{name}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        sh(&format!("ip netns add {name} && ip -n {name} link set lo up"));
        TestNs { name }
    }

    /// The namespace's path.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs a shell command inside the namespace, failing the test if it fails.
    pub fn sh(&self, script: &str) -> String {
        sh(&format!(
            "ip netns exec {} sh -ec '{}'",
            self.name,
            script.replace('\'', r"'\''")
        ))
    }

    /// Runs `f` on a thread inside the namespace (sockets it makes stay there).
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let fd = std::fs::File::open(self.path()).expect("open test namespace");
        std::thread::spawn(move || {
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter test namespace");
            f()
        })
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Runs a shell script, failing the test if it fails; returns its stdout.
pub fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-ec").arg(script).output().expect("run sh");
    assert!(out.status.success(), "{script}: {}", text(&out.stderr));
    text(&out.stdout)
}
