//! Interpolation over a whole tree (values only, never keys), followed by Compose's type casts:
//! `privileged: ${P}` with `P=true` becomes a boolean, `cpus: ${C}` a number, and so on.

use std::sync::OnceLock;

use super::error::LoadError;
use super::interpolate::interpolate;
use super::yaml::{Node, Value};

#[derive(Clone, Copy)]
enum Cast {
    Bool,
    Int,
    Float,
}

/// Paths (with `*` for any key and `[]` for any sequence item) whose string values are cast after interpolation.
const CASTS: &[(&str, Cast)] = &[
    ("services.*.build.privileged", Cast::Bool),
    ("services.*.build.no_cache", Cast::Bool),
    ("services.*.build.pull", Cast::Bool),
    ("services.*.cpu_count", Cast::Int),
    ("services.*.cpu_percent", Cast::Float),
    ("services.*.cpu_period", Cast::Int),
    ("services.*.cpu_quota", Cast::Int),
    ("services.*.cpu_rt_period", Cast::Int),
    ("services.*.cpu_rt_runtime", Cast::Int),
    ("services.*.cpus", Cast::Float),
    ("services.*.cpu_shares", Cast::Int),
    ("services.*.init", Cast::Bool),
    ("services.*.deploy.replicas", Cast::Int),
    ("services.*.deploy.update_config.parallelism", Cast::Int),
    ("services.*.deploy.update_config.max_failure_ratio", Cast::Float),
    ("services.*.deploy.rollback_config.parallelism", Cast::Int),
    ("services.*.deploy.rollback_config.max_failure_ratio", Cast::Float),
    ("services.*.deploy.restart_policy.max_attempts", Cast::Int),
    ("services.*.deploy.resources.limits.pids", Cast::Int),
    ("services.*.deploy.resources.reservations.pids", Cast::Int),
    ("services.*.depends_on.*.required", Cast::Bool),
    ("services.*.depends_on.*.restart", Cast::Bool),
    ("services.*.healthcheck.retries", Cast::Int),
    ("services.*.healthcheck.disable", Cast::Bool),
    ("services.*.mem_swappiness", Cast::Int),
    ("services.*.oom_kill_disable", Cast::Bool),
    ("services.*.oom_score_adj", Cast::Int),
    ("services.*.pids_limit", Cast::Int),
    ("services.*.ports.[].target", Cast::Int),
    ("services.*.privileged", Cast::Bool),
    ("services.*.read_only", Cast::Bool),
    ("services.*.scale", Cast::Int),
    ("services.*.stdin_open", Cast::Bool),
    ("services.*.tty", Cast::Bool),
    ("services.*.ulimits.*", Cast::Int),
    ("services.*.ulimits.*.hard", Cast::Int),
    ("services.*.ulimits.*.soft", Cast::Int),
    ("services.*.volumes.[].read_only", Cast::Bool),
    ("services.*.volumes.[].volume.nocopy", Cast::Bool),
    ("services.*.volumes.[].bind.create_host_path", Cast::Bool),
    ("services.*.env_file.[].required", Cast::Bool),
    ("services.*.develop.watch.[].initial_sync", Cast::Bool),
    ("networks.*.external", Cast::Bool),
    ("networks.*.internal", Cast::Bool),
    ("networks.*.attachable", Cast::Bool),
    ("networks.*.enable_ipv4", Cast::Bool),
    ("networks.*.enable_ipv6", Cast::Bool),
    ("volumes.*.external", Cast::Bool),
    ("secrets.*.external", Cast::Bool),
    ("configs.*.external", Cast::Bool),
    ("include.[].required", Cast::Bool),
];

/// Interpolates every string value under `node`; `path` is the key path of `node` as a list of segments.
pub fn interpolate_tree(node: &mut Node, lookup: &dyn Fn(&str) -> Option<String>) -> Result<(), LoadError> {
    let mut path = Vec::new();
    walk(node, &mut path, lookup)
}

fn walk(node: &mut Node, path: &mut Vec<String>, lookup: &dyn Fn(&str) -> Option<String>) -> Result<(), LoadError> {
    match &mut node.value {
        Value::Str(s) => {
            if s.contains('$') {
                let out = interpolate(s, lookup)
                    .map_err(|e| LoadError::invalid(node.loc.clone(), display_path(path), e.to_string()))?;
                node.value = Value::Str(out);
            }
            cast(node, path)?;
        }
        Value::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(format!("[{i}]"));
                let r = walk(item, path, lookup);
                path.pop();
                r?;
            }
        }
        Value::Map(m) => {
            for (k, v) in m.iter_mut() {
                path.push(k.clone());
                let r = walk(v, path, lookup);
                path.pop();
                r?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if !seg.starts_with('[') && !out.is_empty() {
            out.push('.');
        }
        out.push_str(seg);
    }
    out
}

/// The cast table split into segments once.
fn patterns() -> &'static [(Vec<&'static str>, Cast)] {
    static PATTERNS: OnceLock<Vec<(Vec<&'static str>, Cast)>> = OnceLock::new();
    PATTERNS.get_or_init(|| CASTS.iter().map(|(p, c)| (p.split('.').collect(), *c)).collect())
}

fn matches(pat: &[&str], path: &[String]) -> bool {
    pat.len() == path.len()
        && pat.iter().zip(path).all(|(p, s)| match *p {
            "*" => !s.starts_with('['),
            "[]" => s.starts_with('['),
            lit => lit == s,
        })
}

fn cast(node: &mut Node, path: &[String]) -> Result<(), LoadError> {
    let Value::Str(s) = &node.value else { return Ok(()) };
    let Some((_, kind)) = patterns().iter().find(|(p, _)| matches(p, path)) else {
        return Ok(());
    };
    let fail = |what: &str| {
        LoadError::invalid(
            node.loc.clone(),
            display_path(path),
            format!("failed to cast {s:?} to {what}"),
        )
    };
    let value = match kind {
        Cast::Bool => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" => Value::Bool(true),
            "false" | "no" | "n" | "off" => Value::Bool(false),
            _ => return Err(fail("a boolean")),
        },
        Cast::Int => Value::Int(s.trim().parse().map_err(|_| fail("an integer"))?),
        Cast::Float => Value::Float(s.trim().parse().map_err(|_| fail("a number"))?),
    };
    node.value = value;
    Ok(())
}
