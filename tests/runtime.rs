//! Root integration tests of the embedded runtime, through the `berth container` CLI against the real
//! kernel. Each test has its own state root and unique names; a guard removes its containers even when the
//! test fails. Not being root is a failure, never a skip.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::berth::{Berth as Env, text};
use common::cgroup_dirs;

#[test]
fn exit_codes_and_output_follow_docker() {
    let env = Env::new("exit");
    let out = env.run(&["--rm"], &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
    let out = env.run(&["--rm"], &["no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("executable file not found"),
        "{}",
        text(&out.stderr)
    );
    let out = env.run(&["--rm"], &["/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    // --rm removed them all.
    assert_eq!(env.ok(&["container", "ps", "-aq"]), "");
}

#[test]
fn env_user_workdir_and_hostname() {
    let env = Env::new("identity");
    let out = env.run(
        &[
            "--rm",
            "-e",
            "GREETING=hi there",
            "-u",
            "nobody",
            "-w",
            "/work/dir",
            "--hostname",
            "box",
        ],
        &[
            "sh",
            "-c",
            "echo \"$GREETING\"; id -u; id -g; pwd; hostname; echo $HOME",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "hi there\n65534\n65534\n/work/dir\nbox\n/nonexistent\n"
    );
    // Default host name: the first 12 characters of the id.
    let id = env.run_d(&[], &["hostname"]);
    assert_eq!(env.ok(&["container", "wait", &id]).trim(), "0");
    assert_eq!(env.ok(&["container", "logs", &id]).trim(), &id[..12]);
}

#[test]
fn sees_only_its_own_processes() {
    let env = Env::new("pidns");
    let out = env.run(
        &["--rm"],
        &[
            "sh",
            "-c",
            "echo $$; ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let mut lines = s.lines();
    assert_eq!(lines.next(), Some("1"));
    let pids: Vec<u32> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    // Only the shell and its pipeline: small numbers from a fresh pid namespace, never the host's.
    assert!(
        pids.contains(&1) && pids.len() <= 6 && pids.iter().all(|p| *p < 50),
        "host processes visible: {pids:?}"
    );
}

#[test]
fn writes_land_in_the_upper_dir_and_read_only_refuses_them() {
    let env = Env::new("upper");
    let id = env.run_d(&[], &["sh", "-c", "echo data > /created.txt"]);
    assert_eq!(env.ok(&["container", "wait", &id]).trim(), "0");
    let upper = env.state_dir(&id).join("upper");
    assert_eq!(std::fs::read_to_string(upper.join("created.txt")).unwrap(), "data\n");
    assert!(!env.rootfs.join("created.txt").exists(), "the image was written to");
    // The image has no /etc/hosts, yet the mount point for it came from the shared layer, not the upper dir.
    assert!(!env.rootfs.join("etc/hosts").exists());
    let written: Vec<_> = std::fs::read_dir(&upper)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        written,
        ["created.txt"],
        "only what the container wrote is in its upper dir"
    );
    let out = env.run(&["--rm", "--read-only"], &["sh", "-c", "touch /x"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("Read-only file system"),
        "{}",
        text(&out.stderr)
    );
    // tmpfs and volumes stay writable under --read-only.
    let out = env.run(
        &["--rm", "--read-only", "--tmpfs", "/scratch", "-v", "vol1:/data"],
        &["sh", "-c", "touch /scratch/a /data/b && echo ok"],
    );
    assert_eq!(text(&out.stdout), "ok\n", "{}", text(&out.stderr));
    assert!(env.root.join("volumes/vol1/_data/b").exists());
}

#[test]
fn memory_limit_gets_the_process_oom_killed() {
    let env = Env::new("oom");
    let id = env.run_d(
        &["-m", "16m"],
        &["sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=1"],
    );
    let code = env.ok(&["container", "wait", &id]);
    assert_eq!(code.trim(), "137", "{}", env.ok(&["container", "logs", &id]));
    assert_eq!(env.inspect(&id)["State"]["OOMKilled"], true);
}

#[test]
fn pids_limit_stops_forks() {
    let env = Env::new("pids");
    let out = env.run(
        &["--rm", "--pids-limit", "4"],
        &["sh", "-c", "for i in 1 2 3 4 5 6; do sleep 2 & done 2>&1; wait"],
    );
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(
        all.contains("can't fork") || all.contains("Resource temporarily unavailable"),
        "{all}"
    );
}

#[test]
fn pause_freezes_and_unpause_thaws() {
    let env = Env::new("pause");
    let id = env.run_d(
        &[],
        &["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i; sleep 0.02; done"],
    );
    let lines = || env.ok(&["container", "logs", &id]).lines().count();
    env.until(5, "some output", || lines() > 2);
    env.ok(&["container", "pause", &id]);
    assert_eq!(env.inspect(&id)["State"]["Status"], "paused");
    let before = lines();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(lines(), before, "a paused container kept running");
    env.ok(&["container", "unpause", &id]);
    env.until(5, "output after unpause", || lines() > before);
    env.ok(&["container", "rm", "-f", &id]);
}

#[test]
fn stop_waits_the_grace_period_then_kills() {
    let env = Env::new("stop");
    // A process that catches SIGTERM and goes on gets the grace period, then SIGKILL.
    let id = env.run_d(
        &[],
        &[
            "sh",
            "-c",
            "trap 'echo ignoring TERM' TERM; while true; do sleep 0.1; done",
        ],
    );
    env.until(5, "the trap to be set", || {
        let pid = env.inspect(&id)["State"]["Pid"].as_i64().unwrap_or(0);
        std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("SigCgt:") && !l.ends_with("0000000000000000"))
        })
    });
    let t = Instant::now();
    env.ok(&["container", "stop", "-t", "1", &id]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let st = env.inspect(&id);
    assert_eq!(st["State"]["Status"], "exited");
    assert_eq!(st["State"]["ExitCode"], 137);
    // PID 1 without a handler can never receive SIGTERM: it is killed at once, no grace wasted.
    let id = env.run_d(&[], &["sleep", "100"]);
    let t = Instant::now();
    env.ok(&["container", "stop", "-t", "10", &id]);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(env.inspect(&id)["State"]["ExitCode"], 137);
    // A process that handles SIGTERM stops at once.
    let id = env.run_d(&["--init"], &["sleep", "100"]);
    let t = Instant::now();
    env.ok(&["container", "stop", "-t", "5", &id]);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(env.inspect(&id)["State"]["ExitCode"], 143);
}

/// Zombie children of a container's PID 1 (zombies leave their cgroup, so look at parents instead).
fn zombies(env: &Env, id: &str) -> usize {
    let pid1 = env.inspect(id)["State"]["Pid"].as_i64().unwrap().to_string();
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let f: Vec<&str> = rest.split(' ').collect();
        if f.first() == Some(&"Z") && f.get(1) == Some(&pid1.as_str()) {
            n += 1;
        }
    }
    n
}

#[test]
fn init_reaps_zombies() {
    let env = Env::new("init");
    // The orphaned `sleep 0.1` is re-parented to PID 1, which never waits when it is `sleep` itself.
    let cmd = ["sh", "-c", "(sleep 0.1 &); exec sleep 30"];
    let plain = env.run_d(&[], &cmd);
    let with_init = env.run_d(&["--init"], &cmd);
    env.until(5, "a zombie without init", || zombies(&env, &plain) == 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(zombies(&env, &with_init), 0, "init left a zombie");
    let top = env.ok(&["container", "top", &with_init]);
    assert!(top.contains("sleep 30"), "{top}");
}

#[test]
fn exec_runs_inside_the_container() {
    let env = Env::new("exec");
    let id = env.run_d(&["--hostname", "inside", "-e", "FROM_RUN=1"], &["sleep", "100"]);
    let out = env.berth(&[
        "container",
        "exec",
        &id,
        "sh",
        "-c",
        "hostname; echo $FROM_RUN; echo $$",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(&lines[..2], &["inside", "1"]);
    assert_ne!(lines[2], "1", "exec must not be PID 1");
    let out = env.berth(&[
        "container",
        "exec",
        "-u",
        "nobody",
        "-w",
        "/tmp",
        &id,
        "sh",
        "-c",
        "id -u; pwd; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(text(&out.stdout), "65534\n/tmp\n");
    let out = env.berth(&["container", "exec", &id, "nope"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    // stdin reaches an interactive exec.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--root")
        .arg(&env.root)
        .args(["container", "exec", "-i", &id, "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"piped through\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "piped through\n");
}

#[test]
fn restart_policies_restart() {
    let env = Env::new("restart");
    let id = env.run_d(&["--restart", "on-failure:2"], &["sh", "-c", "echo run; exit 1"]);
    assert_eq!(env.ok(&["container", "wait", &id]).trim(), "1");
    let st = env.inspect(&id);
    assert_eq!(st["RestartCount"], 2);
    assert_eq!(env.ok(&["container", "logs", &id]), "run\nrun\nrun\n");
    let id = env.run_d(&["--restart", "always"], &["sh", "-c", "sleep 0.1; exit 0"]);
    env.until(10, "two restarts", || {
        env.inspect(&id)["RestartCount"].as_u64().unwrap() >= 2
    });
    env.ok(&["container", "stop", "-t", "1", &id]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(env.inspect(&id)["State"]["Status"], "exited", "stop must end restarts");
}

#[test]
fn logs_survive_the_cli_and_keep_streams_apart() {
    let env = Env::new("logs");
    let id = env.run_d(&[], &["sh", "-c", "echo one; echo two >&2; sleep 0.1; echo three"]);
    env.ok(&["container", "wait", &id]);
    let out = env.berth(&["container", "logs", &id]);
    assert_eq!(text(&out.stdout), "one\nthree\n");
    assert_eq!(text(&out.stderr), "two\n");
    assert_eq!(env.ok(&["container", "logs", "--tail", "1", &id]), "three\n");
    let ts = env.ok(&["container", "logs", "-t", &id]);
    assert!(ts.lines().all(|l| l.contains('T') && l.contains('Z')), "{ts}");
    assert!(env.state_dir(&id).join("container.log").is_file());
    // A container that prints nothing gets no log file (it is made on the first line), and empty logs.
    let quiet = env.run_d(&[], &["true"]);
    env.ok(&["container", "wait", &quiet]);
    assert!(!env.state_dir(&quiet).join("container.log").exists());
    assert_eq!(env.ok(&["container", "logs", &quiet]), "");
    // -f ends when the container does, following a log that appears only after it began.
    let id = env.run_d(&[], &["sh", "-c", "sleep 0.3; echo late"]);
    assert_eq!(env.ok(&["container", "logs", "-f", &id]), "late\n");
}

#[test]
fn the_supervisor_runs_from_a_read_only_binary_and_leaves_the_caller() {
    let env = Env::new("supexe");
    let id = env.run_d(&[], &["sleep", "100"]);
    let st = env.state_json(&id);
    let sup = st["supervisor_pid"].as_i64().unwrap();
    // CVE-2019-5736: nothing may write the berth binary through a supervisor's /proc/PID/exe, not even root
    // once the file is no longer busy: it is on a read-only mount, unlike the binary itself.
    let read_only = |path: &str| {
        nix::sys::statvfs::statvfs(path)
            .unwrap()
            .flags()
            .contains(nix::sys::statvfs::FsFlags::ST_RDONLY)
    };
    assert!(
        read_only(&format!("/proc/{sup}/exe")),
        "the supervisor's binary is on a writable mount"
    );
    assert!(
        !read_only(env!("CARGO_BIN_EXE_berth")),
        "the test binary's own mount is read-only"
    );
    // It was adopted by init (the CLI has exited), in a session of its own, and named for ps.
    let stat = std::fs::read_to_string(format!("/proc/{sup}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    assert_ne!(fields[1], std::process::id().to_string(), "parent: {stat}");
    assert_eq!(fields[3], sup.to_string(), "session: {stat}");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{sup}/comm")).unwrap(),
        "berth-supervise\n"
    );
    env.ok(&["container", "rm", "-f", &id]);
}

#[test]
fn a_symlink_in_the_image_cannot_redirect_a_mount_target_to_the_host() {
    let mut env = Env::new("mnt-escape");
    // An image whose /link points at /tmp: inside the container that is the container's /tmp.
    let image = env.root.join("image");
    let copied = std::process::Command::new("cp")
        .args(["-a", &env.rootfs.display().to_string(), &image.display().to_string()])
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::create_dir_all(image.join("tmp")).unwrap();
    std::os::unix::fs::symlink("/tmp", image.join("link")).unwrap();
    env.rootfs = image;
    let name = format!("berth-escaped-mount-point-{}", std::process::id());
    let host_side = Path::new("/tmp").join(&name);
    let source = env.root.join("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("marker"), "inside\n").unwrap();
    let target = format!("/link/{name}/deeper");
    let volume = format!("{}:{target}", source.display());
    let out = env.run(
        &["--rm", "-v", &volume],
        &["cat", &format!("/tmp/{name}/deeper/marker")],
    );
    let leaked = host_side.exists();
    let _ = std::fs::remove_dir_all(&host_side);
    assert!(!leaked, "a mount point was made on the host at {}", host_side.display());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "inside\n");
    // Only the last component missing: the quick path.
    let target = format!("/link/{name}");
    let volume = format!("{}:{target}", source.display());
    let out = env.run(&["--rm", "-v", &volume], &["cat", &format!("/tmp/{name}/marker")]);
    let leaked = host_side.exists();
    let _ = std::fs::remove_dir_all(&host_side);
    assert!(!leaked, "a mount point was made on the host at {}", host_side.display());
    assert_eq!(text(&out.stdout), "inside\n", "{}", text(&out.stderr));
}

#[test]
fn a_detached_run_keeps_none_of_the_callers_descriptors() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let env = Env::new("strayfd");
    // A pipe whose write end the caller passes on without close-on-exec, as a shell's `7>&1` would: neither
    // the network daemon nor the supervisor, which outlive the CLI, may hold it, or whoever reads the pipe
    // never sees its end.
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let raw = write.as_raw_fd();
    let with_pipe = |args: &[&str]| {
        let mut cmd = env.command(args);
        // SAFETY: dup2 only, between fork and exec.
        unsafe {
            cmd.pre_exec(move || match libc::dup2(raw, 7) {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok(()),
            });
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    };
    let rootfs = env.rootfs.display().to_string();
    with_pipe(&["network", "create", "strays"]);
    let id = with_pipe(&[
        "container",
        "run",
        "-d",
        "--network",
        "strays",
        "-p",
        "127.0.0.1::80",
        "--rootfs",
        &rootfs,
        "sleep",
        "100",
    ]);
    drop(write);
    let mut fds = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(&read),
        nix::poll::PollFlags::POLLIN,
    )];
    let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16)).unwrap();
    let hung_up = fds[0]
        .revents()
        .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLHUP));
    env.ok(&["container", "rm", "-f", &id]);
    env.ok(&["network", "rm", "strays"]);
    assert!(ready == 1 && hung_up, "the pipe stayed open after the CLI exited");
}

#[test]
fn a_killed_supervisor_is_reported_and_cleaned_up() {
    let env = Env::new("supkill");
    let id = env.run_d(&[], &["sleep", "100"]);
    let st = env.state_json(&id);
    let sup = st["supervisor_pid"].as_i64().unwrap() as i32;
    let pid = st["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sup), nix::sys::signal::Signal::SIGKILL).unwrap();
    env.until(5, "the container process to die with its supervisor", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    let ps = env.ok(&["container", "ps", "-a"]);
    assert!(ps.contains("Dead"), "{ps}");
    env.ok(&["container", "rm", &id]);
    assert!(!env.state_dir(&id).exists());
    assert!(cgroup_dirs(&id).is_empty(), "cgroup left: {:?}", cgroup_dirs(&id));
}

#[test]
fn nothing_leaks_after_delete() {
    let env = Env::new("leak");
    let id = env.run_d(&["-m", "64m", "--tmpfs", "/t", "-v", "vol:/v"], &["sleep", "100"]);
    assert!(!cgroup_dirs(&id).is_empty(), "no cgroup while running");
    let pid = env.inspect(&id)["State"]["Pid"].as_i64().unwrap();
    // stats reads the cgroup: the 64 MiB limit shows, and one task.
    let stats = env.ok(&["container", "stats", "--no-stream", &id]);
    let row = stats.lines().nth(1).unwrap_or_default().to_string();
    assert!(
        row.starts_with(&id[..12]) && row.contains("/ 64.00MiB") && row.ends_with(" 1"),
        "{stats}"
    );
    env.ok(&["container", "rm", "-f", &id]);
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "process left");
    assert!(cgroup_dirs(&id).is_empty(), "cgroup left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&id), "mount left: {mounts}");
    assert!(!env.state_dir(&id).exists(), "state left");
}

#[test]
fn run_rm_is_gone_when_it_returns_and_leaves_nothing() {
    let env = Env::new("rmleak");
    let out = env.run(
        &["--rm", "-m", "32m"],
        &["sh", "-c", "echo data > /file; grep ' / ' /proc/mounts"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Gone the moment `run` returns.
    assert_eq!(env.ok(&["container", "ps", "-aq"]), "");
    let containers: Vec<_> = std::fs::read_dir(env.root.join("containers"))
        .unwrap()
        .flatten()
        .collect();
    assert!(containers.is_empty(), "state left: {containers:?}");
    // Its root was an overlay as Docker shows it and, being deleted on exit, a volatile one; a kept
    // container's is not.
    let root = text(&out.stdout);
    assert!(
        root.starts_with("overlay / overlay ") && root.contains("volatile"),
        "{root}"
    );
    let kept = env.run(&[], &["grep", " / ", "/proc/mounts"]);
    assert!(!text(&kept.stdout).contains("volatile"), "{}", text(&kept.stdout));
    let kept_id = env.ok(&["container", "ps", "-aq"]);
    env.ok(&["container", "rm", kept_id.trim()]);
    // A detached one, whose id we know: its supervisor deletes the retired directory after the container is
    // gone from listings, then nothing of it is left.
    let id = env.run_d(&["--rm", "-m", "32m"], &["sh", "-c", "echo data > /file"]);
    let removing = env.root.join("removing");
    env.until(10, "the container to be removed", || {
        !env.state_dir(&id).exists() && std::fs::read_dir(&removing).map_or(true, |mut d| d.next().is_none())
    });
    assert!(cgroup_dirs(&id).is_empty(), "cgroup left: {:?}", cgroup_dirs(&id));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&id), "mount left: {mounts}");
}

#[test]
fn confinement_matches_docker_defaults() {
    let env = Env::new("confine");
    let out = env.run(
        &["--rm"],
        &[
            "sh",
            "-c",
            "grep -E '^(CapEff|CapBnd|Seccomp|NoNewPrivs):' /proc/self/status",
        ],
    );
    let s = text(&out.stdout);
    // Docker's 14 default capabilities.
    assert!(s.contains("CapEff:\t00000000a80425fb"), "{s}");
    assert!(s.contains("CapBnd:\t00000000a80425fb"), "{s}");
    assert!(s.contains("Seccomp:\t2"), "{s}");
    assert!(s.contains("NoNewPrivs:\t0"), "{s}");
    let out = env.run(
        &["--rm", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"],
        &[
            "sh",
            "-c",
            "grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; cat /proc/kcore | wc -c; touch /proc/sys/kernel/x 2>&1",
        ],
    );
    let s = text(&out.stdout);
    assert!(
        s.contains("CapEff:\t0000000000000000") && s.contains("NoNewPrivs:\t1"),
        "{s}"
    );
    // Masked: /proc/kcore reads empty. Read-only: /proc/sys.
    assert!(s.contains("\n0\n"), "{s}");
    let out = env.run(
        &["--rm"],
        &[
            "sh",
            "-c",
            "mount -t tmpfs none /mnt 2>&1; unshare -U true 2>&1; echo done",
        ],
    );
    let s = text(&out.stdout);
    assert!(s.contains("denied") || s.contains("not permitted"), "{s}");
    let out = env.run(
        &["--rm", "--privileged"],
        &["sh", "-c", "grep -E '^(CapEff|Seccomp):' /proc/self/status"],
    );
    let s = text(&out.stdout);
    assert!(
        s.contains("Seccomp:\t0") && !s.contains("CapEff:\t00000000a80425fb"),
        "{s}"
    );
}

#[test]
fn no_host_fds_or_cwd_leak_into_the_container() {
    // CVE-2024-21626: a leaked fd or a host working directory lets a container reach the host's files.
    let env = Env::new("fds");
    let script = "ls /proc/self/fd | tr '\\n' ' '; readlink /proc/self/cwd";
    let out = env.run(&["--rm", "--init"], &["sh", "-c", script]);
    assert_eq!(text(&out.stdout), "0 1 2 3 /\n", "{}", text(&out.stderr));
    let id = env.run_d(&[], &["sleep", "100"]);
    let out = env.berth(&["container", "exec", &id, "sh", "-c", script]);
    assert_eq!(text(&out.stdout), "0 1 2 3 /\n", "{}", text(&out.stderr));
}

#[test]
fn the_berth_binary_cannot_be_overwritten_from_inside() {
    // CVE-2019-5736: PID 1 is berth's own init here; its /proc/1/exe must be out of reach.
    let env = Env::new("exe");
    let out = env.run(
        &["--rm", "--init"],
        &[
            "sh",
            "-c",
            "echo x > /proc/1/exe && echo wrote; cat /proc/1/exe | wc -c",
        ],
    );
    let s = text(&out.stdout) + &text(&out.stderr);
    assert!(!s.contains("wrote"), "{s}");
    // And the supervisor runs from a read-only clone of the binary, even for the host's root.
    let id = env.run_d(&[], &["sleep", "100"]);
    let st = env.state_json(&id);
    let sup = st["supervisor_pid"].as_i64().unwrap();
    let exe = std::fs::File::open(format!("/proc/{sup}/exe")).unwrap();
    let vfs = nix::sys::statvfs::fstatvfs(&exe).unwrap();
    assert!(
        vfs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY),
        "the supervisor's binary is on a writable mount"
    );
}

/// Runs berth under `script`, so it has a terminal, feeding `input` to it; returns output and exit code.
fn with_terminal(env: &Env, args: &str, input: &str) -> (String, Option<i32>) {
    use std::io::Write;
    let cmd = format!("{} --root {} {args}", env!("CARGO_BIN_EXE_berth"), env.root.display());
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (text(&out.stdout).replace('\r', ""), out.status.code())
}

#[test]
fn terminals_come_from_the_containers_own_devpts() {
    let env = Env::new("tty");
    let rootfs = env.rootfs.display().to_string();
    let (out, code) = with_terminal(
        &env,
        &format!("container run -it --rm --rootfs {rootfs} sh"),
        "tty; echo term=$TERM; exit 7\n",
    );
    assert_eq!(code, Some(7), "{out}");
    assert!(out.contains("/dev/pts/0") && out.contains("term=xterm"), "{out}");
    let id = env.run_d(&[], &["sleep", "100"]);
    let (out, code) = with_terminal(&env, &format!("container exec -it {id} sh"), "tty; exit 3\n");
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("/dev/pts/"), "{out}");
}

#[test]
fn signals_to_an_attached_run_reach_the_container() {
    use std::io::BufRead;
    let env = Env::new("sigproxy");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--root")
        .arg(&env.root)
        .args(["container", "run", "--rm", "--rootfs"])
        .arg(&env.rootfs)
        .args([
            "sh",
            "-c",
            "trap 'echo got-int; exit 5' INT; echo ready; while true; do sleep 0.1; done",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "got-int");
    assert_eq!(child.wait().unwrap().code(), Some(5));
}

#[test]
fn create_start_restart_and_berth_errors() {
    let env = Env::new("lifecycle");
    let rootfs = env.rootfs.display().to_string();
    let id = env.ok(&[
        "container",
        "create",
        "--name",
        "later",
        "--rootfs",
        &rootfs,
        "sh",
        "-c",
        "echo started",
    ]);
    assert_eq!(env.inspect("later")["State"]["Status"], "created");
    assert_eq!(env.ok(&["container", "start", "later"]), "later\n");
    assert_eq!(env.ok(&["container", "wait", "later"]), "0\n");
    env.ok(&["container", "restart", "later"]);
    env.ok(&["container", "wait", id.trim()]);
    assert_eq!(env.ok(&["container", "logs", "later"]), "started\nstarted\n");
    // The name is taken; a bad flag value is a berth error: exit code 125.
    let out = env.run(&["--name", "later"], &["true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("already in use"), "{}", text(&out.stderr));
    let out = env.run(&["-m", "lots"], &["true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    // `run` starts its supervisor before it creates the container; when the create fails, the
    // supervisor exits unused.
    let root = env.root.display().to_string();
    common::berth::until(5, "the unused supervisors to exit", || {
        common::processes_mentioning(&root).is_empty()
    });
    let out = env.berth(&["container", "rm", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no such container: nope"),
        "{}",
        text(&out.stderr)
    );
}

/// `--network none` (the default) gives a container a network namespace of its own with only `lo`,
/// up; the supervisor makes it ahead of the clone at the first start and the clone makes it at a
/// restart. `--network host` shares the host's.
#[test]
fn each_container_gets_its_own_network_namespace_with_loopback_up() {
    let env = Env::new("netns");
    let host = std::fs::read_link("/proc/self/ns/net").unwrap().display().to_string();
    let probe = "readlink /proc/self/ns/net; ls /sys/class/net; cat /sys/class/net/lo/flags";
    let own = |out: &str| {
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_ne!(lines[0], host, "the container is in the host's network namespace");
        assert_eq!(lines[1], "lo", "interfaces: {out}");
        let flags = u32::from_str_radix(lines[2].trim_start_matches("0x"), 16).unwrap();
        assert_eq!(flags & 1, 1, "lo is down: {out}");
    };
    // (Namespace numbers are not compared between containers: the kernel reuses a freed one.)
    own(&env.run_ok(&["--rm"], &["sh", "-c", probe]));
    // A restart gets a namespace of its own too, made by the clone this time.
    let id = env.run_d(
        &["--restart", "on-failure:1"],
        &["sh", "-c", &format!("{probe}; exit 1")],
    );
    assert_eq!(env.ok(&["container", "wait", &id]).trim(), "1");
    let logs = env.ok(&["container", "logs", &id]);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 6, "two runs of three lines: {logs}");
    own(&lines[..3].join("\n"));
    own(&lines[3..].join("\n"));
    let shared = env.run_ok(&["--rm", "--network", "host"], &["readlink", "/proc/self/ns/net"]);
    assert_eq!(shared.trim(), host);
}

/// A removed container's directory is emptied and kept for the next `create` (`<root>/spare/`): the next
/// container sees nothing the last one wrote, deleted or changed, since its upper and work directories are
/// always new.
#[test]
fn a_reused_container_directory_carries_nothing_over() {
    let env = Env::new("spare");
    let spares = || std::fs::read_dir(env.root.join("spare")).map_or(0, |d| d.count());
    let script = |s: &str| env.run_ok(&["--rm"], &["sh", "-c", s]);
    script("echo secret > /marker; mkdir -p /d/e; echo x > /d/e/f; rm /bin/true; chmod 700 /");
    // The supervisor recycles the directory after telling the client.
    env.until(10, "the directory to be kept", || spares() == 1);
    let seen = script("ls /marker /d 2>&1; ls /bin/true; stat -c %a /; cat /etc/hostname");
    let lines: Vec<&str> = seen.lines().collect();
    assert!(
        lines[0].contains("No such file") && lines[1].contains("No such file"),
        "{seen}"
    );
    assert_eq!(&lines[2..4], ["/bin/true", "755"], "{seen}");
    env.until(10, "the directory to be kept again", || spares() == 1);
    // `rm` keeps a directory too, and a container made from it has its own files.
    let id = env.run_d(&[], &["true"]);
    env.ok(&["container", "wait", &id]);
    env.ok(&["container", "rm", &id]);
    assert_eq!(spares(), 1);
    let id = env.run_d(&["--name", "second"], &["cat", "/etc/hostname"]);
    env.ok(&["container", "wait", &id]);
    assert_eq!(env.ok(&["container", "logs", &id]), format!("{}\n", &id[..12]));
    assert_eq!(spares(), 0);
    assert_eq!(env.inspect(&id)["Name"], "/second");
}
