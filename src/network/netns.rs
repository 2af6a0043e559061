//! Network namespaces that outlive the process making them: created by `unshare` on a throwaway
//! thread and kept by a bind mount of its `/proc/thread-self/ns/net` on a file (as `ip netns`
//! does), entered per thread with `setns`.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::netlink::Netlink;
use super::{NetworkError, Result};

/// Creates a network namespace kept at `path` (a new empty file), with loopback up.
pub fn create(path: &Path) -> Result<()> {
    File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| NetworkError::io("create namespace file", path, e))?;
    let made = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetworkError::sys("unshare network namespace", e))?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| NetworkError::io("bind-mount namespace on", path, e.into()))?;
            let mut nl = Netlink::open()?;
            let lo = nl.require_link("lo")?;
            nl.set_up(lo, None)
        })
        .join()
        .unwrap_or_else(|_| Err(NetworkError::Invalid("namespace thread panicked".into())))
    });
    if made.is_err() {
        let _ = remove(path);
    }
    made
}

/// Opens a kept namespace.
pub fn open(path: &Path) -> Result<OwnedFd> {
    File::open(path)
        .map(OwnedFd::from)
        .map_err(|e| NetworkError::io("open network namespace", path, e))
}

/// Removes a kept namespace: its mount and its file. Absent is fine.
pub fn remove(path: &Path) -> Result<()> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(NetworkError::io("unmount namespace", path, e.into())),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetworkError::io("remove namespace file", path, e)),
    }
}

/// Runs `f` on a thread inside the namespace `ns` and returns its result. Sockets `f` creates
/// belong to that namespace for their whole life, whichever thread uses them later.
pub fn run_in<T: Send>(ns: &impl AsFd, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let fd = ns.as_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            enter(fd)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(NetworkError::Invalid("namespace thread panicked".into())))
    })
}

/// Moves the calling thread into the network namespace `ns`.
pub fn enter(ns: impl AsFd) -> Result<()> {
    let raw = ns.as_fd().as_raw_fd();
    nix::sched::setns(ns, CloneFlags::CLONE_NEWNET)
        .map_err(|e| NetworkError::sys(format!("enter network namespace (fd {raw})"), e))
}
