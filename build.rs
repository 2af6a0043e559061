//! Links the `berth` binary as a non-PIE executable. Each container start runs berth twice (the CLI
//! and the supervisor); without position-independent relocations the dynamic loader has almost
//! nothing to patch at start-up, and the supervisor keeps no private copies of relocated pages
//! (measured: 3.5 MB less private memory per supervisor, start-up 4.6 -> 3.0 ms; docs/BENCHMARKS.md).
//! Code is still compiled position-independent, which links fine into a fixed-address executable.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
