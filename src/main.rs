//! The `berth` binary: parse arguments, set up logging, run, and turn errors into exit codes.
//!
//! The entry point is a C `main` rather than Rust's: Rust's start-up also gives the main thread an
//! alternate signal stack and SIGSEGV/SIGBUS handlers, to print a message on stack overflow, which
//! costs about 0.1 ms at every start here, and berth starts twice per container. What else it does
//! that berth relies on is done in `main` below: stdin/stdout/stderr made sure to be open, SIGPIPE
//! ignored (a closed pipe then fails the write instead of killing the process), a panic ending
//! the process with status 101, and stdout flushed at the end.

#![cfg_attr(not(test), no_main)]
// Built as a test crate (`cargo test --all-targets`), the harness brings its own `main`; this file has no tests.
#![cfg_attr(test, allow(dead_code))]

use std::io::Write as _;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    for fd in 0..3 {
        // SAFETY: fcntl and open on plain descriptor numbers; a closed one is replaced by /dev/null, so that
        // no file opened later takes its number.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1 && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) == -1 {
                libc::abort();
            }
        }
    }
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // `exit`, not a return: it flushes what is still buffered for stdout, as Rust's own start-up would.
    std::process::exit(std::panic::catch_unwind(run).unwrap_or(101))
}

fn run() -> i32 {
    // std reads the arguments from what glibc hands its initialisers, so they are there without Rust's main.
    let args: Vec<String> = std::env::args().collect();
    // The supervisor is this binary re-executed; it starts before clap and logging, to stay small.
    if args.get(1).map(String::as_str) == Some(berth::runtime::supervisor::SUBCOMMAND) {
        return berth::runtime::supervisor::main(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some(berth::runtime::copy::SUBCOMMAND) {
        return berth::runtime::copy::main(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some(berth::network::daemon::SUBCOMMAND) {
        return berth::network::daemon::main(&args[2..]);
    }
    let cli = berth::cli::Cli::parse();
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match berth::cli::run(&cli, &mut out) {
        Ok(code) => {
            let _ = out.flush();
            drop(out);
            // Everything is written; skip the clean-up at exit (destructors, exit handlers, freeing memory
            // the kernel takes back anyway), which a container start waits for.
            // SAFETY: ends the process; no destructor or handler is needed any more.
            unsafe { libc::_exit(code) }
        }
        // A closed pipe (`berth ps | head`) ends the output quietly, as SIGPIPE would.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            141
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
