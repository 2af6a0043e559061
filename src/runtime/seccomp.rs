//! The default seccomp filter: the system calls Docker's default profile documents as blocked for an
//! unprivileged container, each unblocked by the capability that Docker lets re-enable it, written directly
//! as a classic BPF program. Building it takes microseconds, so nothing is cached.
//!
//! Differences from Docker's profile, which is an allow-list: system calls that are unknown to Docker's
//! list but not in the blocked set below are allowed here, and only the native x86_64 ABI is allowed
//! (i386 and x32 calls fail with EPERM). System calls newer than any berth knows (above `mseal`) fail
//! with ENOSYS, so a future kernel's additions stay closed until they are reviewed, and C libraries
//! fall back to older calls as they do on older kernels.

use caps::Capability;

use super::error::{Result, RuntimeError};

/// Blocked system calls and the capability that unblocks each (`None`: always blocked).
const BLOCKED: &[(i64, Option<Capability>)] = {
    use Capability::*;
    &[
        (libc::SYS_acct, Some(CAP_SYS_PACCT)),
        (libc::SYS_add_key, None),
        (libc::SYS_keyctl, None),
        (libc::SYS_request_key, None),
        (libc::SYS_bpf, Some(CAP_BPF)),
        (libc::SYS_clock_adjtime, Some(CAP_SYS_TIME)),
        (libc::SYS_clock_settime, Some(CAP_SYS_TIME)),
        (libc::SYS_settimeofday, Some(CAP_SYS_TIME)),
        (libc::SYS_init_module, Some(CAP_SYS_MODULE)),
        (libc::SYS_finit_module, Some(CAP_SYS_MODULE)),
        (libc::SYS_delete_module, Some(CAP_SYS_MODULE)),
        (libc::SYS_get_mempolicy, Some(CAP_SYS_NICE)),
        (libc::SYS_set_mempolicy, Some(CAP_SYS_NICE)),
        (libc::SYS_mbind, Some(CAP_SYS_NICE)),
        (libc::SYS_move_pages, Some(CAP_SYS_NICE)),
        (libc::SYS_migrate_pages, Some(CAP_SYS_NICE)),
        (libc::SYS_ioperm, Some(CAP_SYS_RAWIO)),
        (libc::SYS_iopl, Some(CAP_SYS_RAWIO)),
        (libc::SYS_kcmp, Some(CAP_SYS_PTRACE)),
        (libc::SYS_ptrace, Some(CAP_SYS_PTRACE)),
        (libc::SYS_process_vm_readv, Some(CAP_SYS_PTRACE)),
        (libc::SYS_process_vm_writev, Some(CAP_SYS_PTRACE)),
        (libc::SYS_userfaultfd, Some(CAP_SYS_PTRACE)),
        (libc::SYS_kexec_load, Some(CAP_SYS_BOOT)),
        (libc::SYS_kexec_file_load, Some(CAP_SYS_BOOT)),
        (libc::SYS_reboot, Some(CAP_SYS_BOOT)),
        (libc::SYS_lookup_dcookie, Some(CAP_SYS_ADMIN)),
        (libc::SYS_mount, Some(CAP_SYS_ADMIN)),
        (libc::SYS_umount2, Some(CAP_SYS_ADMIN)),
        (libc::SYS_pivot_root, Some(CAP_SYS_ADMIN)),
        (libc::SYS_setns, Some(CAP_SYS_ADMIN)),
        (libc::SYS_unshare, Some(CAP_SYS_ADMIN)),
        (libc::SYS_swapon, Some(CAP_SYS_ADMIN)),
        (libc::SYS_swapoff, Some(CAP_SYS_ADMIN)),
        (libc::SYS_quotactl, Some(CAP_SYS_ADMIN)),
        (libc::SYS_name_to_handle_at, Some(CAP_SYS_ADMIN)),
        (libc::SYS_fanotify_init, Some(CAP_SYS_ADMIN)),
        (libc::SYS_fsopen, Some(CAP_SYS_ADMIN)),
        (libc::SYS_fsconfig, Some(CAP_SYS_ADMIN)),
        (libc::SYS_fsmount, Some(CAP_SYS_ADMIN)),
        (libc::SYS_fspick, Some(CAP_SYS_ADMIN)),
        (libc::SYS_move_mount, Some(CAP_SYS_ADMIN)),
        (libc::SYS_open_tree, Some(CAP_SYS_ADMIN)),
        (libc::SYS_mount_setattr, Some(CAP_SYS_ADMIN)),
        (libc::SYS_open_by_handle_at, Some(CAP_DAC_READ_SEARCH)),
        (libc::SYS_perf_event_open, Some(CAP_PERFMON)),
        (libc::SYS_syslog, Some(CAP_SYSLOG)),
        (libc::SYS_uselib, None),
        (libc::SYS_ustat, None),
        (libc::SYS_sysfs, None),
        (libc::SYS__sysctl, None),
        (libc::SYS_nfsservctl, None),
        (libc::SYS_vhangup, Some(CAP_SYS_TTY_CONFIG)),
    ]
};

/// `clone` flags that create namespaces; refused without CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: u32 = 0x7E02_0000;

/// `personality` values Docker allows (Linux, 32-bit emulation flags, and the query).
const PERSONALITIES: &[u32] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// `AUDIT_ARCH_X86_64`.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// System call numbers at or above this are the x32 ABI.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// The newest system call berth knows; anything above it is refused with ENOSYS.
const NEWEST_KNOWN: u32 = libc::SYS_mseal as u32;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0_LOW: u32 = 16;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

/// A compiled filter, ready to be installed in a child after fork.
#[derive(Clone)]
pub struct Filter {
    prog: Vec<libc::sock_filter>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Filter({} instructions)", self.prog.len())
    }
}

impl Filter {
    /// The default filter for a process whose capabilities are `caps`.
    pub fn docker_default(caps: &[Capability]) -> Filter {
        let has = |c: &Capability| caps.contains(c);
        let eperm = errno(libc::EPERM);
        let mut p = vec![
            stmt(LD_W_ABS, OFF_ARCH),
            jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
            stmt(RET_K, eperm),
            stmt(LD_W_ABS, OFF_NR),
            jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
            stmt(RET_K, eperm),
            jump(JGT_K, NEWEST_KNOWN, 0, 1),
            stmt(RET_K, errno(libc::ENOSYS)),
        ];
        for (nr, cap) in BLOCKED {
            if cap.as_ref().is_some_and(has) {
                continue;
            }
            p.push(jump(JEQ_K, *nr as u32, 0, 1));
            p.push(stmt(RET_K, eperm));
        }
        if !has(&Capability::CAP_SYS_ADMIN) {
            // clone3 passes its flags in memory, out of a filter's reach: ENOSYS makes libc fall back to
            // clone, whose flags are checked below.
            p.push(jump(JEQ_K, libc::SYS_clone3 as u32, 0, 1));
            p.push(stmt(RET_K, errno(libc::ENOSYS)));
            p.push(jump(JEQ_K, libc::SYS_clone as u32, 0, 4));
            p.push(stmt(LD_W_ABS, OFF_ARG0_LOW));
            p.push(jump(JSET_K, CLONE_NAMESPACE_FLAGS, 0, 1));
            p.push(stmt(RET_K, eperm));
            p.push(stmt(RET_K, libc::SECCOMP_RET_ALLOW));
        }
        let n = PERSONALITIES.len() as u8;
        p.push(jump(JEQ_K, libc::SYS_personality as u32, 0, n + 2));
        p.push(stmt(LD_W_ABS, OFF_ARG0_LOW));
        for (i, v) in PERSONALITIES.iter().enumerate() {
            // Matches jump over the remaining tests and the EPERM, to the ALLOW.
            p.push(jump(JEQ_K, *v, n - i as u8, 0));
        }
        p.push(stmt(RET_K, eperm));
        p.push(stmt(RET_K, libc::SECCOMP_RET_ALLOW));
        Filter { prog: p }
    }

    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.prog.len()
    }

    /// Whether the program is empty (never, for a built filter).
    pub fn is_empty(&self) -> bool {
        self.prog.is_empty()
    }

    /// Installs the filter on the calling process. Allocates nothing, so it is safe after fork.
    pub fn install(&self) -> Result<()> {
        let prog = libc::sock_fprog {
            len: self.prog.len() as u16,
            filter: self.prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at our instruction vector, which outlives the call; the kernel copies it.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if r != 0 {
            return Err(RuntimeError::Seccomp(format!(
                "load the filter: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::process::DOCKER_DEFAULT_CAPS;
    use std::os::unix::process::CommandExt;

    #[test]
    fn capabilities_unblock_their_calls() {
        let base = Filter::docker_default(DOCKER_DEFAULT_CAPS);
        let mut with_admin = DOCKER_DEFAULT_CAPS.to_vec();
        with_admin.push(Capability::CAP_SYS_ADMIN);
        let admin = Filter::docker_default(&with_admin);
        assert!(admin.len() < base.len(), "{} vs {}", admin.len(), base.len());
        // Every jump lands inside the program.
        for f in [&base, &admin] {
            for (i, ins) in f
                .prog
                .iter()
                .enumerate()
                .filter(|(_, ins)| ins.code & 0x07 == libc::BPF_JMP as u16)
            {
                assert!(i + 1 + (ins.jt.max(ins.jf) as usize) < f.prog.len(), "jump out at {i}");
            }
        }
    }

    /// Runs a shell command under the filter (with no_new_privs, so no privilege is needed).
    fn under_filter(script: &str) -> String {
        let filter = Filter::docker_default(DOCKER_DEFAULT_CAPS);
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", script]);
        // SAFETY: prctl and the filter install are async-signal-safe and allocate nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                filter.install().map_err(std::io::Error::other)
            });
        }
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    #[test]
    fn blocked_calls_fail_and_others_work() {
        // 250 is keyctl; 464 is getxattrat (Linux 6.13), newer than berth knows: without the filter it
        // fails with EINVAL for these arguments, with it ENOSYS.
        let out = under_filter(
            "grep '^Seccomp:' /proc/self/status; unshare -u true 2>/dev/null; echo unshare=$?; \
             python3 -c 'import os; print(\"pid\", os.getpid() > 0)'; \
             python3 -c 'import ctypes; l=ctypes.CDLL(None, use_errno=True); print(\"keyctl\", l.syscall(250, 0, 0), ctypes.get_errno())'; \
             python3 -c 'import ctypes; l=ctypes.CDLL(None, use_errno=True); print(\"future\", l.syscall(464, -1, 0, 0, 0, 0, 0), ctypes.get_errno())'",
        );
        assert!(out.contains("Seccomp:\t2"), "{out}");
        assert!(out.contains("unshare=1"), "{out}");
        assert!(out.contains("pid True"), "{out}");
        assert!(out.contains("keyctl -1 1"), "{out}");
        assert!(out.contains("future -1 38"), "{out}");
    }
}
