//! Copying files in and out of a running container (`cp`). A helper process (this binary
//! re-executed as `berth __cp`, single-threaded, so it may `setns`) joins the container's mount
//! namespace, which makes the container's root its own root: every path it opens resolves inside
//! the container, symlinks included, so nothing in the image can redirect a copy to the host.
//! Files travel as a tar stream over the helper's stdin or stdout. The helper stays outside the
//! container's pid namespace and cgroup, so no process of the container can see it, nor reach its
//! executable through /proc (the runc exec escape, CVE-2019-5736).

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::{Result, RuntimeError};
use super::lifecycle::{Container, Runtime};

/// The hidden subcommand of the helper.
pub const SUBCOMMAND: &str = "__cp";

impl Runtime {
    /// Streams `path` in the container as a tar whose top entry is named `name` to `consume`.
    pub fn copy_out(
        &self,
        c: &Container,
        path: &str,
        name: &str,
        consume: &mut dyn FnMut(&mut dyn Read) -> std::io::Result<()>,
    ) -> Result<()> {
        let mut child = helper(c, &["out", path, name])?
            .stdout(Stdio::piped())
            .spawn()
            .map_err(RuntimeError::io("run", "/proc/self/exe"))?;
        let mut stdout = child.stdout.take().ok_or_else(|| RuntimeError::Copy {
            path: path.to_string(),
            reason: "the helper has no output".into(),
        })?;
        let copied = consume(&mut stdout).map_err(RuntimeError::io("copy from", path));
        drop(stdout);
        finish(child, path)?;
        copied
    }

    /// Unpacks the tar stream `produce` writes, whose top entry is the copied file or directory,
    /// at `dest` in the container: into `dest` when it is a directory there, else as `dest` itself.
    pub fn copy_in(
        &self,
        c: &Container,
        dest: &str,
        produce: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let mut child = helper(c, &["in", dest])?
            .stdin(Stdio::piped())
            .spawn()
            .map_err(RuntimeError::io("run", "/proc/self/exe"))?;
        let mut stdin = child.stdin.take().ok_or_else(|| RuntimeError::Copy {
            path: dest.to_string(),
            reason: "the helper has no input".into(),
        })?;
        let copied = produce(&mut stdin).map_err(RuntimeError::io("copy to", dest));
        drop(stdin);
        finish(child, dest)?;
        copied.map(|_| ())
    }
}

/// The helper command for container `c`, which must be running.
fn helper(c: &Container, args: &[&str]) -> Result<Command> {
    let pid = match c.state.pid {
        Some(pid) if c.is_running() => pid,
        _ => {
            return Err(RuntimeError::State {
                id: c.name().to_string(),
                state: c.state.status.to_string(),
                hint: "copying needs a running container; start it first".into(),
            });
        }
    };
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(SUBCOMMAND)
        .arg(pid.to_string())
        .args(args)
        .stderr(Stdio::piped());
    Ok(cmd)
}

/// Waits for the helper; its stderr line is the error.
fn finish(child: std::process::Child, path: &str) -> Result<()> {
    let out = child
        .wait_with_output()
        .map_err(RuntimeError::io("wait for", "/proc/self/exe"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(RuntimeError::Copy {
        path: path.to_string(),
        reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// The helper: `__cp PID out PATH NAME` or `__cp PID in DEST`. Returns the exit code.
pub fn main(args: &[String]) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn run(args: &[String]) -> std::result::Result<(), String> {
    let (pid, rest) = args
        .split_first()
        .ok_or("usage: berth __cp PID out PATH NAME | in DEST")?;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).map_err(|e| format!("container process {pid}: {e}"))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| format!("join the container: {e}"))?;
    match rest {
        [dir, path, name] if dir == "out" => {
            let path = PathBuf::from(path);
            write_tar(&mut std::io::stdout().lock(), &path, name).map_err(|e| format!("{}: {e}", path.display()))
        }
        [dir, dest] if dir == "in" => unpack(std::io::stdin().lock(), Path::new(dest)),
        _ => Err("usage: berth __cp PID out PATH NAME | in DEST".into()),
    }
}

/// Writes `path` (a file, or a directory with everything under it; symlinks as links) as a tar
/// whose top entry is named `name`.
pub fn write_tar(sink: &mut dyn Write, path: &Path, name: &str) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(sink);
    tar.follow_symlinks(false);
    if std::fs::symlink_metadata(path)?.is_dir() {
        tar.append_dir_all(name, path)?;
    } else {
        tar.append_path_with_name(path, name)?;
    }
    tar.finish()
}

/// Unpacks into `dest` (an existing directory), or as `dest` (the top entry renamed).
fn unpack(input: impl Read, dest: &Path) -> std::result::Result<(), String> {
    let into_dir = dest.is_dir();
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(format!("refusing archive entry {}", path.display()));
        }
        let target = if into_dir {
            dest.join(&path)
        } else {
            // The top entry becomes `dest`; what is under it follows.
            let mut parts = path.components().filter(|c| matches!(c, Component::Normal(_)));
            parts.next();
            let rest: PathBuf = parts.collect();
            if rest.as_os_str().is_empty() {
                dest.to_path_buf()
            } else {
                dest.join(rest)
            }
        };
        entry.unpack(&target).map_err(|e| e.to_string())?;
    }
    Ok(())
}
