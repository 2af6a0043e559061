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

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    if os == "linux" && env == "gnu" {
        let dir = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        std::fs::write(dir.join("libgcc_s.a"), "INPUT(-lgcc_eh)\n").expect("write the libgcc_s shim");
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
}
