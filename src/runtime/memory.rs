//! The resident memory of long-lived helper processes. The supervisor is the whole berth binary
//! re-executed: starting a container touches code and constants all over it and libc, and the
//! kernel maps neighbouring pages too (fault-around), yet once the container runs only the poll
//! loop is used. `shed_file_pages` drops those pages from the process's page tables (they stay in
//! the page cache, shared, and come back one page at a time when used again), so a supervisor
//! keeps resident only what its loop needs.

/// Drops this process's clean, read-only, file-backed pages and turns off fault-around for them.
/// A mapping is touched only when it is not writable, is backed by a file, and has no dirty or
/// anonymous page (relocated data made read-only afterwards, RELRO, has them, also when shared
/// with a forked child, and is left alone), so nothing is lost: every dropped page is read back
/// from the file on its next use.
pub fn shed_file_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for m in mappings(&smaps) {
        let Some(addr) = std::ptr::NonNull::new(m.start as *mut std::ffi::c_void) else {
            continue;
        };
        for advice in [
            nix::sys::mman::MmapAdvise::MADV_RANDOM,
            nix::sys::mman::MmapAdvise::MADV_DONTNEED,
        ] {
            // SAFETY: the range is one whole mapping of this process's, not writable, backed by
            // a file and without private changes: dropping its pages loses no data, and they are
            // read back from the file when next used (this function's own code included).
            let _ = unsafe { nix::sys::mman::madvise(addr, m.end - m.start, advice) };
        }
    }
}

/// A mapping that may be shed.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
}

/// The sheddable mappings in the text of /proc/self/smaps.
fn mappings(smaps: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    let mut current: Option<Mapping> = None;
    let mut clean = false;
    let flush = |m: Option<Mapping>, clean: bool, out: &mut Vec<Mapping>| {
        if let Some(m) = m.filter(|_| clean) {
            out.push(m);
        }
    };
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some(size) = first.strip_suffix(':') {
            // A copied-on-write page (relocated data, RELRO) is anonymous, and dirty whether this
            // process alone maps it or shares it with a child it forked.
            if matches!(size, "Private_Dirty" | "Shared_Dirty" | "Anonymous") {
                clean &= fields.next() == Some("0");
            }
            continue;
        }
        // A mapping header: "start-end perms offset dev inode [path]".
        flush(current.take(), clean, &mut out);
        let perms = fields.next().unwrap_or_default();
        let path = fields.nth(3);
        let parsed = first
            .split_once('-')
            .and_then(|(s, e)| Some((usize::from_str_radix(s, 16).ok()?, usize::from_str_radix(e, 16).ok()?)));
        clean = perms.starts_with('r') && !perms.contains('w') && path.is_some_and(|p| p.starts_with('/'));
        current = parsed.filter(|(s, e)| e > s).map(|(start, end)| Mapping { start, end });
    }
    flush(current, clean, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings_are_shed() {
        let smaps = "\
00400000-00600000 r-xp 00000000 08:01 12 /usr/bin/berth
Rss:                 800 kB
Private_Dirty:         0 kB
00600000-00610000 r--p 00200000 08:01 12 /usr/bin/berth
Private_Dirty:        16 kB
00620000-00630000 r--p 00220000 08:01 12 /usr/bin/berth
Shared_Dirty:          8 kB
Private_Dirty:         0 kB
Anonymous:             8 kB
00610000-00620000 rw-p 00210000 08:01 12 /usr/bin/berth
Private_Dirty:        64 kB
00700000-00800000 r--p 00000000 08:01 40 /usr/lib/libc.so.6
Private_Dirty:         0 kB
7ffd000-7fff000 r-xp 00000000 00:00 0 [vdso]
Private_Dirty:         0 kB
01000000-02000000 rw-p 00000000 00:00 0
Private_Dirty:       512 kB
";
        assert_eq!(
            mappings(smaps),
            [
                Mapping {
                    start: 0x400000,
                    end: 0x600000
                },
                Mapping {
                    start: 0x700000,
                    end: 0x800000
                }
            ]
        );
    }
}
