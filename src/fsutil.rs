//! Small file-system helpers shared by the layers that keep state on disk (runtime, image store, network):
//! atomic replacement, advisory locks, random names, closing inherited descriptors. They return plain
//! `std::io` errors; each layer wraps them in its own error type with the path.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Writes `bytes` to a temporary file beside `path`, then renames it into place, so readers see the old
/// or the new content and never a part. With `sync`, the data reaches the disk before the rename.
pub fn write_atomic(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let tmp = sibling_temp(path);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_data()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A unique temporary name beside `path`.
pub fn sibling_temp(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", random_hex(8)));
    PathBuf::from(tmp)
}

/// `bytes` random bytes as lower-case hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // getrandom(2) only fails for bad arguments; a short read leaves zeros, still a usable name.
    // SAFETY: the buffer is valid for its whole length.
    unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Closes every descriptor numbered `first` or above (`close_range`), for a process that must keep nothing its
/// starter left open. Errors are ignored: on a kernel without `close_range` nothing is closed.
///
/// # Safety
/// No live object of this process (an `OwnedFd`, a `File`, a socket) may own a descriptor from `first` up.
pub unsafe fn close_from(first: u32) {
    // SAFETY: the caller guarantees that nothing owns the descriptors closed.
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
}

/// Which advisory lock to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders at once.
    Shared,
    /// One holder.
    Exclusive,
}

/// An advisory `flock` on a file (created if missing), released when dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Blocks until the lock is held.
    pub fn take(path: &Path, mode: LockMode) -> std::io::Result<Lock> {
        Lock::flock(path, mode, false).map(|l| l.expect("a blocking flock either succeeds or fails"))
    }

    /// Takes the lock without waiting; `None` when someone else holds it.
    pub fn try_take(path: &Path, mode: LockMode) -> std::io::Result<Option<Lock>> {
        Lock::flock(path, mode, true)
    }

    fn flock(path: &Path, mode: LockMode, nonblocking: bool) -> std::io::Result<Option<Lock>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        let mut op = match mode {
            LockMode::Shared => libc::LOCK_SH,
            LockMode::Exclusive => libc::LOCK_EX,
        };
        if nonblocking {
            op |= libc::LOCK_NB;
        }
        loop {
            // SAFETY: flock on a valid, owned fd.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(Some(Lock { _file: file }));
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) if nonblocking => return Ok(None),
                _ => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_locks_exclude() {
        let dir = std::env::temp_dir().join(format!("berth-fsutil-{}", random_hex(8)));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x");
        write_atomic(&f, b"one", false).unwrap();
        write_atomic(&f, b"two", true).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file is left");
        let lock = dir.join("lock");
        let a = Lock::take(&lock, LockMode::Shared).unwrap();
        let b = Lock::try_take(&lock, LockMode::Shared).unwrap();
        assert!(b.is_some());
        assert!(Lock::try_take(&lock, LockMode::Exclusive).unwrap().is_none());
        drop((a, b));
        assert!(Lock::try_take(&lock, LockMode::Exclusive).unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
