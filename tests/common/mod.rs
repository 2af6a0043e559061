//! Shared helpers of the root integration tests: the root check and a busybox root file system.

#![allow(dead_code)]

pub mod berth;
pub mod registry;

use std::path::PathBuf;

/// Fails the test (never skips it) when not running as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CI runs as root); run the suite with sudo"
    );
}

/// Writes a tarball of [`busybox_rootfs`] to `path`, for `image import`.
pub fn write_busybox_tarball(path: &std::path::Path) {
    use std::io::Write as _;
    let mut t = tar::Builder::new(std::fs::File::create(path).unwrap());
    t.follow_symlinks(false);
    t.append_dir_all(".", busybox_rootfs()).unwrap();
    t.into_inner().unwrap().flush().unwrap();
}

/// A busybox root file system made from Debian's busybox-static, built once per machine and shared
/// read-only by every test (containers write to their own overlay upper dirs).
pub fn busybox_rootfs() -> PathBuf {
    let dir = std::env::temp_dir().join("berth-test-busybox-rootfs-v1");
    if dir.join(".complete").exists() {
        return dir;
    }
    let busybox = PathBuf::from("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox is missing: install Debian's busybox-static (apt-get install busybox-static)"
    );
    // A name per thread: tests of one binary may build it at the same time.
    let tmp = std::env::temp_dir().join(format!(
        "berth-test-busybox-rootfs-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    for d in [
        "bin", "etc", "tmp", "proc", "sys", "dev", "root", "var", "usr/bin", "usr/sbin", "sbin",
    ] {
        std::fs::create_dir_all(tmp.join(d)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy(&busybox, tmp.join("bin/busybox")).unwrap();
    let list = std::process::Command::new(&busybox).arg("--list").output().unwrap();
    assert!(list.status.success(), "busybox --list failed");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", tmp.join("bin").join(applet));
        }
    }
    std::fs::write(
        tmp.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(tmp.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(tmp.join(".complete"), "").unwrap();
    // Another test binary may have won the race; either copy is complete.
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    dir
}

/// The cgroup directories of a container that exist, on v1 (hybrid) and v2 hosts.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let Ok(rd) = std::fs::read_dir(base) else { continue };
        for e in rd.flatten() {
            let p = e.path().join("berth").join(id);
            if p.exists() {
                out.push(p);
            }
        }
        let p = std::path::Path::new(base).join("berth").join(id);
        if p.exists() {
            out.push(p);
        }
    }
    out
}

/// Processes whose command line mentions `needle` (a state root, say).
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// A TCP port on 127.0.0.1 that is free now and that the kernel will not hand out on its own.
///
/// A port from `bind(…:0)` comes from the ephemeral range (`ip_local_port_range`, 32768–60999
/// by default), where a parallel test that publishes `127.0.0.1::80` or connects anywhere can be
/// given the same port between our check and our use. Ports here come from below that range,
/// each one once per test process, starting at an offset drawn from the pid.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % COUNT;
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + n) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT);
}
