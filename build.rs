//! Links the `berth` binary as a non-PIE executable. Each container start runs berth twice (the CLI
//! and the supervisor); without position-independent relocations the dynamic loader has almost
//! nothing to patch at start-up, and the supervisor keeps no private copies of relocated pages
//! (measured: 3.5 MB less private memory per supervisor, start-up 4.6 -> 3.0 ms; docs/BENCHMARKS.md).
//! Code is still compiled position-independent, which links fine into a fixed-address executable.
//!
//! On glibc it also links GCC's unwinder statically instead of loading `libgcc_s.so`. Loading that
//! library cost 0.1-0.2 ms at every start here (its constructor probes the CPU with `CPUID`, which traps
//! to the hypervisor on a VM), twice per container start. rustc asks for `-lgcc_s` by name, so the
//! `-static-libgcc` flag cannot help; instead a `libgcc_s.a` that is a linker script naming the static
//! unwinder (`libgcc_eh.a`, part of every GCC installation) is put first on the search path.
//!
//! And on glibc the binary (not the tests) is linked statically when the static C library is
//! installed (`libc.a`, in Debian's libc6-dev): no dynamic loader, no `libc.so`/`libm.so` to map
//! and bind, 0.4-0.7 ms less per start (docs/BENCHMARKS.md). `-C target-feature=+crt-static` would
//! need `--target` (proc-macros cannot be built with it), so the binary's link gets `-static` and a
//! search directory where `libc.so` and `libm.so` are linker scripts naming the archives; rustc's
//! `-Bdynamic` before `-lc` then still finds an archive. berth calls no NSS function, which a static
//! glibc could only serve by `dlopen`ing modules of its own version: host names are looked up by
//! `network::lookup`, user names read from /etc/passwd (tests/cli.rs checks the binary). Set
//! `BERTH_LINK=dynamic` to link it dynamically anyway.

use std::path::{Path, PathBuf};

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    let mut linkage = "dynamic";
    if os == "linux" && env == "gnu" {
        let dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        std::fs::write(dir.join("libgcc_s.a"), "INPUT(-lgcc_eh)\n").expect("write the libgcc_s shim");
        println!("cargo:rustc-link-search=native={}", dir.display());
        // Not when cross-compiling: the C compiler found here would be the host's, not the target's.
        let native = std::env::var("TARGET").ok() == std::env::var("HOST").ok();
        if native && std::env::var("BERTH_LINK").as_deref() != Ok("dynamic") && has_static_libc() {
            let shims = dir.join("static");
            std::fs::create_dir_all(&shims).expect("create the static-link shim directory");
            write(&shims.join("libc.so"), "GROUP ( libc.a libgcc.a libgcc_eh.a )\n");
            write(&shims.join("libm.so"), "INPUT ( libm.a )\n");
            println!("cargo:rustc-link-arg-bins=-static");
            println!("cargo:rustc-link-arg-bins=-L{}", shims.display());
            linkage = "static";
        }
    }
    // Tests check what the binary must (not) contain for the linkage it got.
    println!("cargo:rustc-env=BERTH_LINKAGE={linkage}");
    println!("cargo:rerun-if-env-changed=BERTH_LINK");
    println!("cargo:rerun-if-changed=build.rs");
}

/// Whether the C compiler that links the binary finds a static C library.
fn has_static_libc() -> bool {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    std::process::Command::new(cc)
        .arg("-print-file-name=libc.a")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .is_some_and(|path| path.is_absolute() && path.exists())
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
