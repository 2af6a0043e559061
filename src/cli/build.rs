//! `berth image build` (Docker's single-image build) and the progress display builds share with
//! `berth build` and `up --build`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context as _, Result};
use clap::Args;

use super::Cli;
use crate::build::{self, BuildSpec, DockerfileSource, Event, Progress};
use crate::image::reference::Reference;
use crate::image::store::Store;
use crate::runtime::Runtime;

// `image build` flags.
#[derive(Debug, Clone, Args)]
pub struct BuildArgs {
    /// Name and optionally tag the image (`name:tag`; repeatable).
    #[arg(short, long = "tag")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: `Dockerfile` in the context).
    #[arg(short, long)]
    pub file: Option<PathBuf>,
    /// A build-time variable, `NAME=value` or `NAME` (taken from the environment); repeatable.
    #[arg(long = "build-arg", value_name = "NAME[=VALUE]")]
    pub build_args: Vec<String>,
    /// The stage to build.
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Pull base images even when stored.
    #[arg(long)]
    pub pull: bool,
    /// Print only the image id.
    #[arg(short, long)]
    pub quiet: bool,
    /// Add a label to the image (`key=value`; repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Network of RUN steps: `host` (default) or `none`.
    #[arg(long)]
    pub network: Option<String>,
    /// The build context directory.
    pub context: PathBuf,
}

/// Parses `--build-arg` values: `NAME=value`, or `NAME` alone from the environment (skipped when unset).
pub fn parse_build_args(args: &[String]) -> BTreeMap<String, String> {
    args.iter()
        .filter_map(|a| match a.split_once('=') {
            Some((k, v)) => Some((k.to_string(), v.to_string())),
            None => std::env::var(a).ok().map(|v| (a.clone(), v)),
        })
        .collect()
}

/// Runs `image build`.
pub fn image_build(cli: &Cli, args: &BuildArgs, out: &mut dyn Write) -> Result<i32> {
    let store = Store::open(&cli.root).with_context(|| format!("state root {}", cli.root.display()))?;
    let runtime = Runtime::new(&cli.root)?;
    let mut spec = BuildSpec::new(&args.context);
    if let Some(f) = &args.file {
        spec.dockerfile = DockerfileSource::Path(f.clone());
    }
    spec.args = parse_build_args(&args.build_args);
    spec.target = args.target.clone();
    spec.no_cache = args.no_cache;
    spec.pull = args.pull;
    spec.network = args.network.clone();
    for l in &args.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        spec.labels.insert(k.to_string(), v.to_string());
    }
    for t in &args.tags {
        spec.tags.push(Reference::parse(t)?);
    }
    let display = ClassicDisplay::new(args.quiet, "");
    let built = build::build(&store, &runtime, &spec, &display)?;
    for w in &built.warnings {
        eprintln!("[warning] {w}");
    }
    if args.quiet {
        writeln!(out, "{}", built.id)?;
    } else {
        writeln!(out, "Successfully built {}", built.id.short())?;
        // Docker prints each name in its familiar form (`app:latest`, not `docker.io/library/app:latest`).
        for t in &spec.tags {
            writeln!(out, "Successfully tagged {t}")?;
        }
    }
    Ok(0)
}

/// The classic builder's log: `Step 2/5 : RUN make`, ` ---> Using cache`, the step's output, and
/// ` ---> <id>`, on stderr; each line prefixed (with a service name) when building several at once.
pub struct ClassicDisplay {
    quiet: bool,
    prefix: String,
    partial: Mutex<Vec<u8>>,
}

impl ClassicDisplay {
    /// A display; `quiet` shows nothing.
    pub fn new(quiet: bool, prefix: &str) -> ClassicDisplay {
        ClassicDisplay {
            quiet,
            prefix: prefix.to_string(),
            partial: Mutex::new(Vec::new()),
        }
    }

    fn line(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}{text}", self.prefix);
    }
}

impl Progress for ClassicDisplay {
    fn event(&self, event: Event<'_>) {
        if self.quiet {
            return;
        }
        match event {
            Event::Step { number, total, text } => self.line(&format!("Step {number}/{total} : {text}")),
            Event::Cached => self.line(" ---> Using cache"),
            Event::Pulling(name) => self.line(&format!(" ---> Pulling {name}")),
            Event::Output(bytes) => {
                let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
                partial.extend_from_slice(bytes);
                while let Some(n) = partial.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = partial.drain(..=n).collect();
                    self.line(String::from_utf8_lossy(&line).trim_end_matches('\n'));
                }
            }
            Event::StepDone(id) => {
                let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
                if !partial.is_empty() {
                    let rest = String::from_utf8_lossy(&partial).into_owned();
                    partial.clear();
                    self.line(&rest);
                }
                self.line(&format!(" ---> {}", id.short()));
            }
        }
    }
}
