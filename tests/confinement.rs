//! Differential confinement test: the same busybox container run by berth and by Debian's `crun`, the
//! latter from an OCI spec with Docker's defaults (capabilities, mounts, masked and read-only paths, a
//! seccomp filter, no_new_privs off). What the process sees of its own confinement must match.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{busybox_rootfs, require_root};

/// Docker's default capabilities, as OCI names.
const DOCKER_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Docker's default masked and read-only paths.
const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// What the container prints about itself.
const PROBE: &str = "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; \
    echo ---; cat /proc/self/mountinfo; echo ---; \
    for p in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do \
      [ -e $p ] && echo \"$p $(wc -c < $p)\"; done; \
    for p in /proc/acpi /proc/scsi /sys/firmware; do [ -d $p ] && echo \"$p $(ls $p | wc -l)\"; done; \
    for p in /proc/sys /proc/sysrq-trigger /proc/irq; do [ -e $p ] && (touch $p/x 2>/dev/null || echo $p > $p 2>/dev/null) \
      && echo \"$p writable\" || echo \"$p read-only\"; done";

fn oci_spec(bundle: &Path, rootfs: &Path) {
    let out = std::process::Command::new("crun")
        .arg("spec")
        .current_dir(bundle)
        .output()
        .expect("crun is missing: apt-get install crun");
    assert!(
        out.status.success(),
        "crun spec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = bundle.join("config.json");
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    c["root"] = serde_json::json!({ "path": rootfs, "readonly": true });
    c["hostname"] = "probe".into();
    c["process"]["terminal"] = false.into();
    c["process"]["args"] = serde_json::json!(["sh", "-c", PROBE]);
    c["process"]["noNewPrivileges"] = false.into();
    c["process"]["rlimits"] = serde_json::json!([]);
    let caps = serde_json::json!(DOCKER_CAPS);
    c["process"]["capabilities"] = serde_json::json!({
        "bounding": caps, "effective": caps, "permitted": caps
    });
    c["mounts"] = serde_json::json!([
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}
    ]);
    c["linux"]["maskedPaths"] = serde_json::json!(MASKED);
    c["linux"]["readonlyPaths"] = serde_json::json!(READONLY);
    c["linux"]["namespaces"] = serde_json::json!([
        {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}
    ]);
    c["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["keyctl", "add_key", "request_key"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    c["linux"].as_object_mut().unwrap().remove("resources");
    c["linux"].as_object_mut().unwrap().remove("cgroupsPath");
    std::fs::write(&path, serde_json::to_string_pretty(&c).unwrap()).unwrap();
}

struct Probe {
    status: BTreeSet<String>,
    mounts: BTreeSet<String>,
    masking: BTreeSet<String>,
}

/// Splits the probe's output; mounts are reduced to (mount point, fs type, ro/rw) for Docker's mounts.
fn parse(out: &str) -> Probe {
    let mut parts = out.split("---\n");
    let status = parts.next().unwrap_or("").lines().map(str::to_string).collect();
    // The root differs by design (crun gets the shared busybox directory read-only, berth an overlay).
    let docker_mounts = ["/proc", "/dev", "/dev/pts", "/sys", "/dev/mqueue", "/dev/shm"];
    let mounts = parts
        .next()
        .unwrap_or("")
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let point = *pre.get(4)?;
            let ro = if pre.get(5)?.split(',').any(|o| o == "ro") {
                "ro"
            } else {
                "rw"
            };
            let mut fstype = post.split(' ').next()?;
            // Masked files are bind mounts of /dev/null: the host's for crun (devtmpfs), the container's
            // for runc and berth (tmpfs). Either way the file reads empty and is read-only.
            if MASKED.contains(&point) && fstype == "devtmpfs" {
                fstype = "tmpfs";
            }
            let masked_or_ro = MASKED.contains(&point) || READONLY.contains(&point);
            (docker_mounts.contains(&point) || masked_or_ro).then(|| format!("{point} {fstype} {ro}"))
        })
        .collect();
    let masking = parts.next().unwrap_or("").lines().map(str::to_string).collect();
    Probe {
        status,
        mounts,
        masking,
    }
}

/// crun refuses a hybrid host whose cgroup2 still holds a controller (here hugetlb, which has no v1
/// hierarchy). Give hugetlb its v1 hierarchy, as `../shared/peers/setup-peers.sh` does.
fn let_crun_run_on_this_host() {
    let unified = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    let held = std::fs::read_to_string(unified).unwrap_or_default();
    let target = Path::new("/sys/fs/cgroup/hugetlb");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some("/sys/fs/cgroup/hugetlb"));
    if held.split_whitespace().any(|c| c == "hugetlb") && !mounted {
        std::fs::create_dir_all(target).unwrap();
        nix::mount::mount(
            Some("cgroup"),
            target,
            Some("cgroup"),
            nix::mount::MsFlags::empty(),
            Some("hugetlb"),
        )
        .expect("mount the v1 hugetlb hierarchy for crun");
    }
}

#[test]
fn berth_confines_like_crun_with_dockers_defaults() {
    require_root();
    let_crun_run_on_this_host();
    let rootfs = busybox_rootfs();
    let work = std::env::temp_dir().join(format!("berth-confine-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let bundle = work.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    oci_spec(&bundle, &rootfs);
    let name = format!("berth-confine-{}", std::process::id());
    // No cgroup manager: crun refuses this host's hybrid layout, and cgroups are not what is compared.
    let crun = std::process::Command::new("crun")
        .args(["--cgroup-manager=disabled", "run", "-b"])
        .arg(&bundle)
        .arg(&name)
        .output()
        .expect("run crun");
    let _ = std::process::Command::new("crun")
        .args(["delete", "-f", &name])
        .output();
    assert!(
        crun.status.success(),
        "crun failed: {}",
        String::from_utf8_lossy(&crun.stderr)
    );
    let state = work.join("state");
    let berth = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--root")
        .arg(&state)
        .args(["container", "run", "--rm", "--hostname", "probe", "--rootfs"])
        .arg(&rootfs)
        .args(["sh", "-c", PROBE])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&work);
    assert!(
        berth.status.success(),
        "berth failed: {}",
        String::from_utf8_lossy(&berth.stderr)
    );
    let c = parse(&String::from_utf8_lossy(&crun.stdout));
    let b = parse(&String::from_utf8_lossy(&berth.stdout));
    assert!(
        !c.status.is_empty() && !c.mounts.is_empty() && !c.masking.is_empty(),
        "empty crun probe"
    );
    assert_eq!(b.status, c.status, "capabilities / seccomp / no_new_privs differ");
    assert_eq!(b.mounts, c.mounts, "mounts differ");
    assert_eq!(b.masking, c.masking, "masked or read-only paths differ");
}
