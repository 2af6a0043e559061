//! Defaults applied once the files are merged: the implicit `default` network, resource names
//! prefixed with the project name, `Dockerfile`, and `env_file` folded into `environment`.

use std::collections::HashSet;
use std::path::Path;

use super::error::LoadError;
use super::loader::{Env, read_dotenv};
use super::yaml::{Map, Node, Value};

/// Applies the defaults to the merged project tree.
pub fn apply(root: &mut Node, project: &str, env: &Env) -> Result<(), LoadError> {
    let Some(top) = root.as_map_mut() else { return Ok(()) };
    let mut uses_default = false;
    if let Some(services) = top.get_mut("services").and_then(Node::as_map_mut) {
        for (name, svc) in services.iter_mut() {
            if svc.is_null() {
                *svc = Node::map();
            }
            let Some(m) = svc.as_map_mut() else { continue };
            service(m, name, env)?;
            implicit_dependencies(m);
            for list in [
                "ports",
                "volumes",
                "secrets",
                "configs",
                "devices",
                "env_file",
                "expose",
                "cap_add",
                "cap_drop",
                "dns",
                "dns_search",
                "dns_opt",
                "extra_hosts",
                "security_opt",
                "links",
                "external_links",
                "volumes_from",
                "group_add",
            ] {
                if let Some(node) = m.get_mut(list)
                    && let Value::Seq(items) = std::mem::replace(&mut node.value, Value::Null)
                {
                    node.value = Value::Seq(super::merge::dedupe(list, items));
                }
            }
            if let Some(Value::Seq(hosts)) = m.get_mut("extra_hosts").map(|n| &mut n.value) {
                hosts.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
            if !m.contains_key("network_mode") && !m.contains_key("networks") {
                let mut nets = Map::new();
                nets.insert("default".into(), Node::new(Value::Null));
                m.insert("networks".into(), Node::new(Value::Map(nets)));
            }
            if m.get("networks").and_then(|n| n.get("default")).is_some() {
                uses_default = true;
            }
        }
    }
    if uses_default {
        let nets = top.entry("networks".into()).or_insert_with(Node::map);
        if nets.is_null() {
            *nets = Node::map();
        }
        if let Some(n) = nets.as_map_mut() {
            n.entry("default".into()).or_insert_with(|| Node::new(Value::Null));
        }
    }
    prune_unused(top);
    for kind in ["networks", "volumes", "secrets", "configs"] {
        let Some(items) = top.get_mut(kind).and_then(Node::as_map_mut) else {
            continue;
        };
        for (key, item) in items.iter_mut() {
            if item.is_null() {
                *item = Node::map();
            }
            let Some(m) = item.as_map_mut() else { continue };
            let external = matches!(m.get("external").map(|e| &e.value), Some(Value::Bool(true)));
            if !m.contains_key("name") {
                let name = if external {
                    key.clone()
                } else {
                    format!("{project}_{key}")
                };
                m.insert("name".into(), Node::str(name));
            }
            if kind == "networks" && !m.contains_key("ipam") {
                m.insert("ipam".into(), Node::map());
            }
        }
    }
    Ok(())
}

fn service(m: &mut Map, name: &str, env: &Env) -> Result<(), LoadError> {
    if let Some(build) = m.get_mut("build").and_then(Node::as_map_mut) {
        if !build.contains_key("dockerfile") && !build.contains_key("dockerfile_inline") {
            build.insert("dockerfile".into(), Node::str("Dockerfile"));
        }
        if let Some(args) = build.get_mut("args").and_then(Node::as_map_mut) {
            resolve_bare(args, env, true);
        }
    }
    if let Some(files) = m.shift_remove("label_file") {
        let mut labels = Map::new();
        for (i, f) in files.as_seq().into_iter().flatten().enumerate() {
            let Some(resolved) = f.as_str() else { continue };
            if !Path::new(&resolved).is_file() {
                return Err(LoadError::invalid(
                    f.loc.clone(),
                    format!("services.{name}.label_file[{i}]"),
                    format!("label file {resolved} not found"),
                ));
            }
            for (k, v) in read_dotenv(Path::new(&resolved), env, &Env::new())? {
                labels.insert(k, f.with(Value::Str(v)));
            }
        }
        if let Some(Value::Map(own)) = m.shift_remove("labels").map(|n| n.value) {
            labels.extend(own);
        }
        m.insert("labels".into(), Node::new(Value::Map(labels)));
    }
    let mut environment = Map::new();
    if let Some(files) = m.shift_remove("env_file") {
        for (i, f) in files.as_seq().into_iter().flatten().enumerate() {
            let Some(path) = f.get("path").and_then(Node::as_str) else {
                continue;
            };
            let required = !matches!(f.get("required").map(|r| &r.value), Some(Value::Bool(false)));
            let p = Path::new(path);
            if !p.is_file() {
                if required {
                    return Err(LoadError::invalid(
                        f.loc.clone(),
                        format!("services.{name}.env_file[{i}]"),
                        format!("env file {path} not found"),
                    ));
                }
                continue;
            }
            let raw = f.get("format").and_then(Node::as_str) == Some("raw");
            let vars = if raw {
                read_raw_env(p)?
            } else {
                read_dotenv(p, env, &Env::new())?
            };
            for (k, v) in vars {
                environment.insert(k, f.with(Value::Str(v)));
            }
        }
    }
    if let Some(own) = m.shift_remove("environment")
        && let Value::Map(own) = own.value
    {
        for (k, v) in own {
            environment.insert(k, v);
        }
    }
    if !environment.is_empty() {
        resolve_bare(&mut environment, env, false);
        m.insert("environment".into(), Node::new(Value::Map(environment)));
    }
    Ok(())
}

/// Reads an env file with `format: raw`: `KEY=VALUE` lines taken literally.
fn read_raw_env(path: &Path) -> Result<Env, LoadError> {
    let src = std::fs::read_to_string(path).map_err(|e| LoadError::io(path, e))?;
    Ok(src
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.to_string()),
            None => (l.trim().to_string(), String::new()),
        })
        .collect())
}

/// `links`, `network_mode: service:x` and `volumes_from` imply `depends_on`, as in Compose.
fn implicit_dependencies(m: &mut Map) {
    let mut implied: Vec<(String, bool, &Node)> = Vec::new();
    for link in m.get("links").and_then(Node::as_seq).into_iter().flatten() {
        if let Some(target) = link.as_str().and_then(|l| l.split(':').next()) {
            implied.push((target.to_string(), true, link));
        }
    }
    if let Some(mode) = m.get("network_mode")
        && let Some(target) = mode.as_str().and_then(|n| n.strip_prefix("service:"))
    {
        implied.push((target.to_string(), true, mode));
    }
    for vf in m.get("volumes_from").and_then(Node::as_seq).into_iter().flatten() {
        match vf.as_str() {
            Some(v) if !v.starts_with("container:") => {
                implied.push((v.split(':').next().unwrap_or(v).to_string(), false, vf))
            }
            _ => {}
        }
    }
    let implied: Vec<(String, bool, Node)> = implied
        .into_iter()
        .map(|(t, r, n)| (t, r, n.with(Value::Null)))
        .collect();
    if implied.is_empty() {
        return;
    }
    let deps = m.entry("depends_on".into()).or_insert_with(Node::map);
    let Some(deps) = deps.as_map_mut() else { return };
    for (target, restart, at) in implied {
        deps.entry(target).or_insert_with(|| {
            let mut d = Map::new();
            d.insert("condition".into(), Node::str("service_started"));
            if restart {
                d.insert("restart".into(), Node::new(Value::Bool(true)));
            }
            d.insert("required".into(), Node::new(Value::Bool(true)));
            at.with(Value::Map(d))
        });
    }
}

/// Fills `KEY` entries with no value from the environment; unset ones stay null, or go when `drop_unset`.
fn resolve_bare(vars: &mut Map, env: &Env, drop_unset: bool) {
    vars.retain(|k, v| {
        if !v.is_null() {
            return true;
        }
        match env.get(k) {
            Some(val) => {
                v.value = Value::Str(val.clone());
                true
            }
            None => !drop_unset,
        }
    });
}

/// Drops top-level networks, volumes, secrets and configs that no enabled service uses, as Compose does.
fn prune_unused(top: &mut Map) {
    let mut used: [HashSet<String>; 4] = Default::default();
    if let Some(services) = top.get("services").and_then(Node::as_map) {
        for svc in services.values() {
            if let Some(nets) = svc.get("networks").and_then(Node::as_map) {
                used[0].extend(nets.keys().cloned());
            }
            for v in svc.get("volumes").and_then(Node::as_seq).into_iter().flatten() {
                if v.get("type").and_then(Node::as_str) == Some("volume")
                    && let Some(src) = v.get("source").and_then(Node::as_str)
                {
                    used[1].insert(src.to_string());
                }
            }
            let build_secrets = svc.get("build").and_then(|b| b.get("secrets")).and_then(Node::as_seq);
            for (i, refs) in [
                (2, svc.get("secrets").and_then(Node::as_seq)),
                (2, build_secrets),
                (3, svc.get("configs").and_then(Node::as_seq)),
            ] {
                for r in refs.into_iter().flatten() {
                    if let Some(src) = r.get("source").and_then(Node::as_str) {
                        used[i].insert(src.to_string());
                    }
                }
            }
        }
    }
    for (i, kind) in ["networks", "volumes", "secrets", "configs"].iter().enumerate() {
        let empty = match top.get_mut(*kind) {
            Some(node) => match node.as_map_mut() {
                Some(items) => {
                    items.retain(|k, _| used[i].contains(k));
                    items.is_empty()
                }
                None => true,
            },
            None => false,
        };
        if empty {
            top.shift_remove(*kind);
        }
    }
}

/// Final shape of the canonical document, as Compose prints it: no `x-*` keys below the top level,
/// no `false` flags (Compose omits them), and none of the inputs Compose reads but does not keep.
pub fn finish(root: &mut Node) {
    fn walk(node: &mut Node, depth: usize, parent: &str) {
        match &mut node.value {
            Value::Map(m) => {
                m.retain(|k, v| {
                    let nested_extension = depth > 0 && k.starts_with("x-");
                    let omitted_false = matches!(v.value, Value::Bool(false))
                        && !matches!(k.as_str(), "required" | "attach" | "enable_ipv4" | "enable_ipv6");
                    let zero_ulimit = parent == "ulimits" && matches!(v.value, Value::Int(0));
                    let dropped =
                        (parent == "ipam" && k == "options") || (k == "dockerfile_inline" && v.as_str() == Some(""));
                    !(nested_extension || omitted_false || zero_ulimit || dropped)
                });
                for (k, v) in m.iter_mut() {
                    // Extensions are user data: leave their contents alone.
                    if !k.starts_with("x-") {
                        walk(v, depth + 1, k);
                    }
                }
            }
            Value::Seq(items) => {
                for item in items {
                    walk(item, depth + 1, parent);
                }
            }
            _ => {}
        }
    }
    walk(root, 0, "");
}
