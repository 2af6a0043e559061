//! The `berth` binary: parse arguments, set up logging, run, and turn errors into exit codes.

use std::io::Write as _;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    // The supervisor is this binary re-executed; it starts before clap and logging, to stay small.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(berth::runtime::supervisor::SUBCOMMAND) {
        std::process::exit(berth::runtime::supervisor::main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some(berth::runtime::copy::SUBCOMMAND) {
        std::process::exit(berth::runtime::copy::main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some(berth::network::daemon::SUBCOMMAND) {
        std::process::exit(berth::network::daemon::main(&args[2..]));
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
            std::process::exit(141)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
