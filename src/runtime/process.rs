//! The container process as Docker defines it: ENTRYPOINT/CMD combination, the default environment, user
//! and group lookup in the image's /etc/passwd and /etc/group, capability sets, and `PATH` lookup. Pure
//! functions, so each rule is unit-tested without a container.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use caps::Capability;

use super::error::{Result, RuntimeError};

/// `PATH` Docker puts in the environment when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set for unprivileged containers.
pub const DOCKER_DEFAULT_CAPS: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Combines the image's ENTRYPOINT and CMD with the caller's overrides, as Docker does: an entrypoint
/// override discards the image's CMD unless a command is also given; an empty override clears it.
pub fn combine_command(
    image_entrypoint: &[String],
    image_cmd: &[String],
    entrypoint: Option<&[String]>,
    cmd: Option<&[String]>,
) -> Vec<String> {
    let ep: Vec<String> = match entrypoint {
        // `--entrypoint ""` resets it.
        Some(e) if e.len() == 1 && e[0].is_empty() => Vec::new(),
        Some(e) => e.to_vec(),
        None => image_entrypoint.to_vec(),
    };
    let cmd: Vec<String> = match (cmd, entrypoint) {
        (Some(c), _) => c.to_vec(),
        (None, Some(_)) => Vec::new(),
        (None, None) => image_cmd.to_vec(),
    };
    ep.into_iter().chain(cmd).collect()
}

/// Sets a `KEY=value` entry, replacing an earlier one of the same key (a later setting wins).
pub fn set_env(env: &mut Vec<String>, entry: String) {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let k = key(&entry);
    env.retain(|e| key(e) != k);
    env.push(entry);
}

/// Adds what Docker always sets when the caller did not: PATH, HOSTNAME, HOME, and TERM for a tty.
pub fn default_env(env: &[String], hostname: &str, home: &str, tty: bool) -> Vec<String> {
    let has = |k: &str| {
        env.iter()
            .any(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == k)
    };
    let mut out = Vec::with_capacity(env.len() + 4);
    if !has("PATH") {
        out.push(format!("PATH={DEFAULT_PATH}"));
    }
    out.push(format!("HOSTNAME={hostname}"));
    out.extend(env.iter().filter(|e| !e.starts_with("HOSTNAME=")).cloned());
    if tty && !has("TERM") {
        out.push("TERM=xterm".into());
    }
    if !has("HOME") {
        out.push(format!("HOME={home}"));
    }
    out
}

/// The identity the process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Home directory, for `HOME`.
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || l.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

/// The command name and the fields after it in a `/proc/PID/stat` line: `fields[0]` is the state (field 3).
/// The name is in parentheses and may hold spaces and parentheses, so the fields start after the last `)`.
pub fn stat_fields(stat: &str) -> Option<(&str, Vec<&str>)> {
    let close = stat.rfind(')')?;
    let comm = stat.get(stat.find('(')? + 1..close)?;
    Some((comm, stat.get(close + 2..)?.split(' ').collect()))
}

/// When process `pid` started, in clock ticks after boot (field 22 of `/proc/PID/stat`). With the pid it
/// names one process: a pid the kernel has given to another process since has another start time.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&stat)?.1.get(19)?.parse().ok()
}

/// The name `passwd` (text of an /etc/passwd) gives `uid`, if any.
pub fn user_name(passwd: &str, uid: u32) -> Option<&str> {
    passwd_entries(passwd).find(|e| e.uid == uid).map(|e| e.name)
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || l.starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f[3].split(',').filter(|m| !m.is_empty()).collect(),
        })
    })
}

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`, empty for root) and extra groups against
/// the image's /etc/passwd and /etc/group text (either may be missing), the way runc does for Docker.
pub fn resolve_user(user: &str, group_add: &[String], passwd: Option<&str>, group: Option<&str>) -> Result<ExecUser> {
    let passwd = passwd.unwrap_or("");
    let group = group.unwrap_or("");
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entry = passwd_entries(passwd).find(|e| e.name == u || (u.parse::<u32>().ok() == Some(e.uid)));
    let (uid, mut gid, home, name) = match (&entry, u.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, e.home.to_string(), Some(e.name)),
        (None, Ok(n)) => (n, 0, "/".to_string(), None),
        (None, Err(_)) => {
            return Err(RuntimeError::Spec(format!(
                "unable to find user {u}: no matching entries in passwd file"
            )));
        }
    };
    let lookup_group = |g: &str| -> Result<u32> {
        if let Some(e) = group_entries(group).find(|e| e.name == g) {
            return Ok(e.gid);
        }
        g.parse::<u32>()
            .map_err(|_| RuntimeError::Spec(format!("unable to find group {g}: no matching entries in group file")))
    };
    if let Some(g) = g {
        gid = lookup_group(g)?;
    }
    let mut groups = BTreeSet::new();
    // A user's supplementary groups come from /etc/group membership, unless a group was named.
    if g.is_none()
        && let Some(name) = name
    {
        groups.extend(
            group_entries(group)
                .filter(|e| e.members.contains(&name))
                .map(|e| e.gid),
        );
    }
    for extra in group_add {
        groups.insert(lookup_group(extra)?);
    }
    let mut groups: Vec<u32> = groups.into_iter().collect();
    if !groups.contains(&gid) {
        groups.insert(0, gid);
    }
    Ok(ExecUser { uid, gid, groups, home })
}

/// Parses a capability name as Docker accepts it: `NET_ADMIN`, `CAP_NET_ADMIN`, any case.
pub fn parse_capability(name: &str) -> Result<Capability> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    full.parse()
        .map_err(|_| RuntimeError::Spec(format!("unknown capability {name:?}")))
}

/// The capability set of a container: Docker's defaults with `cap_add`/`cap_drop` applied (`ALL` works in
/// both), or every capability the host knows and berth holds when privileged.
pub fn capabilities(privileged: bool, cap_add: &[String], cap_drop: &[String]) -> Result<Vec<Capability>> {
    // "All" is what the kernel knows and we hold: a sandbox may lack some (here CAP_SYS_RESOURCE).
    let mut all: caps::CapsHashSet = caps::runtime::procfs_all_supported(None).unwrap_or_else(|_| caps::all());
    if let Ok(held) = caps::read(None, caps::CapSet::Permitted) {
        all.retain(|c| held.contains(c));
    }
    let sorted = |set: caps::CapsHashSet| {
        let mut v: Vec<Capability> = set.into_iter().collect();
        v.sort_by_key(|c| c.index());
        v
    };
    if privileged {
        return Ok(sorted(all));
    }
    let is_all = |s: &String| s.eq_ignore_ascii_case("ALL");
    let mut set: caps::CapsHashSet = if cap_add.iter().any(is_all) {
        all.clone()
    } else {
        DOCKER_DEFAULT_CAPS.iter().copied().collect()
    };
    if cap_drop.iter().any(is_all) {
        set.clear();
    } else {
        for d in cap_drop {
            set.remove(&parse_capability(d)?);
        }
    }
    for a in cap_add.iter().filter(|a| !is_all(a)) {
        set.insert(parse_capability(a)?);
    }
    set.retain(|c| all.contains(c));
    Ok(sorted(set))
}

/// Parses a signal given as a name (`TERM`, `SIGTERM`, any case) or a number.
pub fn parse_signal(s: &str) -> std::result::Result<nix::sys::signal::Signal, String> {
    use nix::sys::signal::Signal;
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("invalid signal {s:?}"));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    name.parse::<Signal>().map_err(|_| format!("invalid signal {s:?}"))
}

/// Why a command could not be executed, with Docker's exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecFailure {
    /// 127 when not found, 126 when found but not executable.
    pub code: i32,
    /// The message Docker prints.
    pub message: String,
}

/// Finds the program to execute like Docker: a name with `/` is used as is, anything else is looked up in
/// the container's `PATH`. Runs inside the container's root.
pub fn lookup_program(arg0: &str, path_env: Option<&str>, cwd: &Path) -> Result<PathBuf, ExecFailure> {
    let not_found = || ExecFailure {
        code: 127,
        message: format!("exec: \"{arg0}\": executable file not found in $PATH"),
    };
    if arg0.is_empty() {
        return Err(ExecFailure {
            code: 127,
            message: "exec: no command specified".into(),
        });
    }
    let check = |p: &Path| -> Result<bool, ExecFailure> {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => Err(ExecFailure {
                code: 126,
                message: format!("exec: \"{arg0}\": is a directory"),
            }),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => Err(ExecFailure {
                code: 126,
                message: format!("exec: \"{arg0}\": permission denied"),
            }),
            Ok(_) => Ok(true),
            Err(_) => Ok(false),
        }
    };
    if arg0.contains('/') {
        let p = cwd.join(arg0);
        return match check(&p)? {
            true => Ok(p),
            false => Err(ExecFailure {
                code: 127,
                message: format!("exec: \"{arg0}\": stat {arg0}: no such file or directory"),
            }),
        };
    }
    for dir in path_env.unwrap_or(DEFAULT_PATH).split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let p = cwd.join(dir).join(arg0);
        // A non-executable match is skipped, like execvp, as long as a later one works.
        match check(&p) {
            Ok(true) => return Ok(p),
            Ok(false) | Err(_) => continue,
        }
    }
    Err(not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn entrypoint_and_cmd_combine_as_in_docker() {
        let ep = v(&["/entry"]);
        let cmd = v(&["serve"]);
        assert_eq!(combine_command(&ep, &cmd, None, None), v(&["/entry", "serve"]));
        assert_eq!(combine_command(&ep, &cmd, None, Some(&v(&["x"]))), v(&["/entry", "x"]));
        // An entrypoint override drops the image's CMD.
        assert_eq!(combine_command(&ep, &cmd, Some(&v(&["sh"])), None), v(&["sh"]));
        assert_eq!(
            combine_command(&ep, &cmd, Some(&v(&["sh"])), Some(&v(&["-c", "x"]))),
            v(&["sh", "-c", "x"])
        );
        // An empty entrypoint resets it.
        assert_eq!(
            combine_command(&ep, &cmd, Some(&v(&[""])), Some(&v(&["ls"]))),
            v(&["ls"])
        );
        assert_eq!(combine_command(&[], &cmd, None, None), v(&["serve"]));
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\nstaff:x:50:www,other\naudio:x:29:www\nnogroup:x:65534:\n";

    #[test]
    fn stat_fields_start_after_the_last_parenthesis() {
        let (comm, f) = stat_fields("42 (a) b (c)) S 1 42 42 0").unwrap();
        assert_eq!(comm, "a) b (c)");
        assert_eq!(f, ["S", "1", "42", "42", "0"]);
        assert_eq!(stat_fields("no parentheses"), None);
        let own = start_ticks(std::process::id()).expect("our own start time");
        assert!(own > 0);
        assert_eq!(start_ticks(std::process::id()), Some(own));
    }

    #[test]
    fn user_names_come_from_the_first_matching_line() {
        assert_eq!(user_name(PASSWD, 33), Some("www"));
        assert_eq!(
            user_name(&format!("#comment\n{PASSWD}www2:x:33:33::/:/bin/sh\n"), 33),
            Some("www")
        );
        assert_eq!(user_name(PASSWD, 1000), None);
        assert_eq!(user_name("broken line\n", 0), None);
    }

    #[test]
    fn users_resolve_by_name_and_number() {
        let r = resolve_user("", &[], Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (0, 0, "/root"));
        let w = resolve_user("www", &[], Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((w.uid, w.gid), (33, 33));
        assert_eq!(w.groups, vec![33, 29, 50]);
        let n = resolve_user("33", &[], Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!(n.home, "/var/www");
        let g = resolve_user("www:staff", &v(&["audio"]), Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((g.uid, g.gid), (33, 50));
        assert_eq!(g.groups, vec![50, 29]);
        let unknown = resolve_user("1234:5678", &[], None, None).unwrap();
        assert_eq!((unknown.uid, unknown.gid, unknown.home.as_str()), (1234, 5678, "/"));
        let e = resolve_user("ghost", &[], Some(PASSWD), Some(GROUP)).unwrap_err();
        assert!(e.to_string().contains("unable to find user ghost"), "{e}");
        assert!(resolve_user("www:nogroupnamed", &[], Some(PASSWD), Some(GROUP)).is_err());
    }

    #[test]
    fn default_env_fills_in_like_docker() {
        let env = default_env(&v(&["A=1"]), "abc", "/root", true);
        assert_eq!(
            env,
            v(&[
                &format!("PATH={DEFAULT_PATH}"),
                "HOSTNAME=abc",
                "A=1",
                "TERM=xterm",
                "HOME=/root"
            ])
        );
        let env = default_env(&v(&["PATH=/x", "HOME=/h"]), "abc", "/root", false);
        assert_eq!(env, v(&["HOSTNAME=abc", "PATH=/x", "HOME=/h"]));
    }

    #[test]
    fn capability_sets_follow_add_and_drop() {
        let d = capabilities(false, &[], &[]).unwrap();
        assert_eq!(d.len(), DOCKER_DEFAULT_CAPS.len());
        let s = capabilities(false, &v(&["net_admin"]), &v(&["CAP_CHOWN"])).unwrap();
        assert!(s.contains(&Capability::CAP_NET_ADMIN) && !s.contains(&Capability::CAP_CHOWN));
        let only = capabilities(false, &v(&["KILL"]), &v(&["ALL"])).unwrap();
        assert_eq!(only, vec![Capability::CAP_KILL]);
        let all = capabilities(false, &v(&["ALL"]), &v(&["SYS_ADMIN"])).unwrap();
        assert!(all.contains(&Capability::CAP_SYS_MODULE) && !all.contains(&Capability::CAP_SYS_ADMIN));
        assert!(capabilities(false, &v(&["NOPE"]), &[]).is_err());
    }

    #[test]
    fn signals_parse_by_name_and_number() {
        use nix::sys::signal::Signal;
        assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("sigkill"), Ok(Signal::SIGKILL));
        assert_eq!(parse_signal("2"), Ok(Signal::SIGINT));
        assert!(parse_signal("BOGUS").is_err() && parse_signal("99").is_err());
    }

    #[test]
    fn programs_are_found_in_path() {
        let dir = std::env::temp_dir().join(format!("berth-lookup-{}", std::process::id()));
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(bin.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(bin.join("data"), "").unwrap();
        let path = format!("{}", bin.display());
        assert_eq!(
            lookup_program("tool", Some(&path), Path::new("/")).unwrap(),
            bin.join("tool")
        );
        assert_eq!(
            lookup_program("nope", Some(&path), Path::new("/")).unwrap_err().code,
            127
        );
        let direct = format!("{}/data", bin.display());
        assert_eq!(lookup_program(&direct, None, Path::new("/")).unwrap_err().code, 126);
        assert_eq!(lookup_program(&path, None, Path::new("/")).unwrap_err().code, 126);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Whether the process `pid`, the first process of a container's pid namespace, can receive
/// `signal` sent from outside: SIGKILL and SIGSTOP always; others only when it catches them
/// or block them (`SigCgt`, `SigBlk` in /proc/PID/status) and do not ignore them. Unreadable status counts
/// as receiving, so the caller keeps its grace period.
pub fn receives(pid: i32, signal: i32) -> bool {
    if signal == libc::SIGKILL || signal == libc::SIGSTOP {
        return true;
    }
    // A process waiting in sigwait/sigtimedwait (tini, berth's own init) has its waited signals
    // unblocked in SigBlk for the wait, yet receives them: the kernel checks the mask it saved.
    let waiting = std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<i64>().ok())
        .is_some_and(|nr| nr == libc::SYS_rt_sigtimedwait);
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => waiting || catches(&status, signal),
        Err(_) => true,
    }
}

/// `receives` on the text of /proc/PID/status.
fn catches(status: &str, signal: i32) -> bool {
    let mask = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        u64::from_str_radix(line[key.len()..].trim(), 16).ok()
    };
    if !(1..=64).contains(&signal) {
        return true;
    }
    let bit = 1u64 << (signal - 1);
    // A blocked signal stays pending (it is how a signalfd reads them), so it counts as received.
    match (mask("SigCgt:"), mask("SigIgn:"), mask("SigBlk:")) {
        (Some(caught), Some(ignored), blocked) => (caught | blocked.unwrap_or(0)) & bit != 0 && ignored & bit == 0,
        _ => true,
    }
}

#[cfg(test)]
mod receive_tests {
    use super::catches;

    #[test]
    fn a_pid_one_without_a_handler_does_not_receive_sigterm() {
        let sleep = "Name:\tsleep\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000000000\n";
        assert!(!catches(sleep, libc::SIGTERM));
        // A shell with a TERM trap catches bit 15.
        let trapped = "SigIgn:\t0000000000000000\nSigCgt:\t0000000000004000\n";
        assert!(catches(trapped, libc::SIGTERM));
        assert!(!catches(trapped, libc::SIGINT));
        // A signalfd reader (berth's init) blocks it.
        let blocked = "SigBlk:\t0000000000004002\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000000000\n";
        assert!(catches(blocked, libc::SIGTERM));
        // `trap "" TERM` ignores it.
        let ignored = "SigIgn:\t0000000000004000\nSigCgt:\t0000000000000000\n";
        assert!(!catches(ignored, libc::SIGTERM));
        // Unknown layouts keep the grace period.
        assert!(catches("garbage", libc::SIGTERM));
    }
}
