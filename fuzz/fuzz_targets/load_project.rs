//! Fuzzes the whole compose loader (`berth::compose::load`) on real files.
//!
//! Input format: up to three parts separated by NUL bytes (`\0`):
//!
//! ```text
//! <compose.yaml> \0 <override.yaml> \0 <.env>
//! ```
//!
//! Missing parts (and an empty override part) are removed from the scratch directory, so a lone
//! `compose.yaml` is loaded without an override and without a `.env`. Bytes after a third `\0`
//! belong to the `.env` part.
//! The files live in a per-process directory under /dev/shm (or the temp dir) that is created once
//! and overwritten on every iteration, so files can refer to each other (`include: override.yaml`,
//! `extends: {file: override.yaml}`, `env_file: .env`, ...).
//!
//! Each input is loaded with `files = [compose.yaml, override.yaml]` (when there is an override)
//! and with `files = [compose.yaml]`, with interpolation on and a small fixed environment. A
//! loaded project is also rendered the way `berth config` prints it. Errors are fine; panics,
//! hangs and runaway memory are not.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use berth::compose::{LoadOptions, load, yaml};
use indexmap::IndexMap;
use libfuzzer_sys::fuzz_target;

struct Scratch {
    dir: PathBuf,
    compose: PathBuf,
    overrides: PathBuf,
    dotenv: PathBuf,
    environment: IndexMap<String, String>,
}

fn scratch() -> &'static Scratch {
    static S: OnceLock<Scratch> = OnceLock::new();
    S.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        // libFuzzer exits without running destructors, so directories left by earlier runs (whose
        // process is gone) are removed here instead.
        remove_stale(&base);
        // The directory name doubles as the default project name, so keep it a valid one.
        let dir = base.join(format!("{PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        let environment: IndexMap<String, String> = [
            ("NAME", "world"),
            ("TAG", "1.2.3"),
            ("PORT", "8080"),
            ("EMPTY", ""),
            ("IMAGE", "nginx:alpine"),
            ("REPLICAS", "2"),
            ("ENABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Scratch {
            compose: dir.join("compose.yaml"),
            overrides: dir.join("override.yaml"),
            dotenv: dir.join(".env"),
            dir,
            environment,
        }
    })
}

const PREFIX: &str = "berth-fuzz-load-";

/// Removes `<base>/berth-fuzz-load-<pid>` directories whose process no longer exists.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn put(path: &Path, content: Option<&[u8]>) {
    match content {
        Some(c) => std::fs::write(path, c).expect("write scratch file"),
        None => {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn exercise(s: &Scratch, files: Vec<PathBuf>) {
    let opts = LoadOptions {
        working_dir: s.dir.clone(),
        files,
        environment: s.environment.clone(),
        interpolate: true,
        home: Some(PathBuf::from("/home/fuzz")),
        ..Default::default()
    };
    if let Ok(project) = load(&opts) {
        // What `berth config` does with a loaded project.
        let _ = yaml::to_yaml_string(&project.canonical);
        let _ = serde_json::to_string_pretty(&project.canonical);
        for svc in project.services.values() {
            let _ = svc.dependencies();
        }
        let _ = project.service_names().count();
    }
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    let mut parts = data.splitn(3, |b| *b == 0);
    let compose = parts.next().unwrap_or_default();
    // An empty override part means "no override", so `compose \0\0 .env` loads a single file.
    let overrides = parts.next().filter(|p| !p.is_empty());
    let dotenv = parts.next();

    put(&s.compose, Some(compose));
    put(&s.overrides, overrides);
    put(&s.dotenv, dotenv);

    if overrides.is_some() {
        exercise(s, vec![s.compose.clone(), s.overrides.clone()]);
    }
    exercise(s, vec![s.compose.clone()]);
});
