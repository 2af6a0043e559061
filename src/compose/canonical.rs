//! Short syntax → long syntax, per file: ports, volumes, depends_on, environment, commands, sizes and paths.
//!
//! This phase only reshapes what a file says; it adds no defaults (those come after merging, in
//! `defaults.rs`), so a partial override file stays partial. Relative paths are made absolute
//! against the directory the file's paths are relative to.

use std::path::{Component, Path, PathBuf};

use super::error::LoadError;
use super::units;
use super::yaml::{Map, Node, Value};

/// What relative paths and `~` resolve against.
pub struct PathCtx<'a> {
    /// Directory relative paths are relative to.
    pub base_dir: &'a Path,
    /// The user's home directory, for `~`.
    pub home: Option<&'a Path>,
}

impl PathCtx<'_> {
    /// Makes a string node an absolute path in place; other nodes are left alone.
    pub fn resolve_node(&self, node: &mut Node) {
        if let Value::Str(s) = &node.value {
            node.value = Value::Str(self.resolve(s));
        }
    }

    /// Resolves `p` to an absolute, lexically cleaned path.
    pub fn resolve(&self, p: &str) -> String {
        let expanded: PathBuf = match (p.strip_prefix('~'), self.home) {
            (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
                home.join(rest.trim_start_matches('/'))
            }
            _ => PathBuf::from(p),
        };
        let joined = if expanded.is_absolute() {
            expanded
        } else {
            self.base_dir.join(expanded)
        };
        clean(&joined).to_string_lossy().into_owned()
    }
}

/// Lexically removes `.` and `..` components, as Go's `filepath.Clean` does.
pub fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

fn err(node: &Node, path: &str, msg: impl Into<String>) -> LoadError {
    LoadError::invalid(node.loc.clone(), path, msg)
}

/// Reshapes every service and top-level resource of one file.
pub fn canonicalize(root: &mut Node, ctx: &PathCtx) -> Result<(), LoadError> {
    let Some(top) = root.as_map_mut() else { return Ok(()) };
    if let Some(services) = top.get_mut("services").and_then(Node::as_map_mut) {
        for (name, svc) in services.iter_mut() {
            if let Some(m) = svc.as_map_mut() {
                service(m, &format!("services.{name}"), ctx)?;
            }
        }
    }
    for kind in ["secrets", "configs"] {
        if let Some(items) = top.get_mut(kind).and_then(Node::as_map_mut) {
            for item in items.values_mut() {
                if let Some(file) = item.as_map_mut().and_then(|m| m.get_mut("file")) {
                    ctx.resolve_node(file);
                }
            }
        }
    }
    for kind in ["networks", "volumes"] {
        if let Some(items) = top.get_mut(kind).and_then(Node::as_map_mut) {
            for item in items.values_mut() {
                if let Some(m) = item.as_map_mut() {
                    if let Some(labels) = m.get_mut("labels") {
                        list_or_dict(labels, "labels", '=', false)?;
                    }
                    if let Some(opts) = m.get_mut("driver_opts").and_then(Node::as_map_mut) {
                        stringify_values(opts);
                    }
                }
            }
        }
    }
    Ok(())
}

fn service(svc: &mut Map, path: &str, ctx: &PathCtx) -> Result<(), LoadError> {
    for (key, node) in svc.iter_mut() {
        let p = format!("{path}.{key}");
        match key.as_str() {
            "ports" => ports(node, &p)?,
            "volumes" => volumes(node, &p, ctx)?,
            "depends_on" => depends_on(node, &p)?,
            "environment" => list_or_dict(node, &p, '=', true)?,
            "labels" | "annotations" => list_or_dict(node, &p, '=', false)?,
            "devices" => devices(node, &p)?,
            "blkio_config" => blkio(node, &p)?,
            "gpus" if node.as_str() == Some("all") => {
                let mut m = Map::new();
                m.insert("count".into(), Node::new(Value::Int(-1)));
                node.value = Value::Seq(vec![node.with(Value::Map(m))]);
            }
            "label_file" => {
                string_or_list(node);
                if let Value::Seq(items) = &mut node.value {
                    for item in items {
                        ctx.resolve_node(item);
                    }
                }
            }
            "group_add" => stringify_seq(node),
            "post_start" | "pre_stop" => hooks(node, &p)?,
            "sysctls" => list_or_dict(node, &p, '=', false)?,
            "extra_hosts" => extra_hosts(node, &p)?,
            "command" | "entrypoint" => command(node, &p)?,
            "healthcheck" => healthcheck(node, &p)?,
            "build" => build(node, &p, ctx)?,
            "env_file" => env_file(node, &p, ctx)?,
            "networks" => networks(node),
            "secrets" => file_refs(node, &p, Some("/run/secrets/"))?,
            "configs" => file_refs(node, &p, None)?,
            "tmpfs" | "dns" | "dns_search" => string_or_list(node),
            "expose" => stringify_seq(node),
            "mem_limit" | "mem_reservation" | "memswap_limit" | "shm_size" | "mem_swappiness" => bytes(node, &p)?,
            "stop_grace_period" => duration(node, &p)?,
            "deploy" => deploy(node, &p)?,
            "develop" => develop(node, &p, ctx)?,
            "logging" => {
                if let Some(opts) = node
                    .as_map_mut()
                    .and_then(|m| m.get_mut("options"))
                    .and_then(Node::as_map_mut)
                {
                    stringify_values(opts);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn replace_value(node: &mut Node, value: Value) {
    node.value = value;
}

fn stringify_values(m: &mut Map) {
    for v in m.values_mut() {
        if matches!(v.value, Value::Bool(_) | Value::Int(_) | Value::Float(_)) {
            let s = v.scalar_text().unwrap_or_default();
            v.value = Value::Str(s);
        }
    }
}

fn stringify_seq(node: &mut Node) {
    if let Value::Seq(items) = &mut node.value {
        for v in items {
            if matches!(v.value, Value::Int(_) | Value::Float(_) | Value::Bool(_)) {
                let s = v.scalar_text().unwrap_or_default();
                v.value = Value::Str(s);
            }
        }
    }
}

fn string_or_list(node: &mut Node) {
    if let Value::Str(s) = &node.value {
        let item = node.with(Value::Str(s.clone()));
        replace_value(node, Value::Seq(vec![item]));
    }
}

/// `[K=V, K]` or `{K: V}` → `{K: "V"}`; a bare `K` becomes null when `allow_null`, else is dropped.
fn list_or_dict(node: &mut Node, path: &str, sep: char, allow_null: bool) -> Result<(), LoadError> {
    match &mut node.value {
        Value::Seq(items) => {
            let mut m = Map::new();
            for (i, item) in items.iter().enumerate() {
                let text = item
                    .scalar_text()
                    .ok_or_else(|| err(item, &format!("{path}[{i}]"), "must be a string"))?;
                match text.split_once(sep) {
                    Some((k, v)) => {
                        m.insert(k.to_string(), item.with(Value::Str(v.to_string())));
                    }
                    None if allow_null => {
                        m.insert(text, item.with(Value::Null));
                    }
                    None => {
                        m.insert(text, item.with(Value::Str(String::new())));
                    }
                }
            }
            node.value = Value::Map(m);
        }
        Value::Map(m) => {
            stringify_values(m);
            if !allow_null {
                for v in m.values_mut() {
                    if v.is_null() {
                        v.value = Value::Str(String::new());
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// `/dev/a[:/dev/b[:perms]]` → `{source, target, permissions}`.
fn devices(node: &mut Node, path: &str) -> Result<(), LoadError> {
    let Value::Seq(items) = &mut node.value else {
        return Ok(());
    };
    for (i, item) in items.iter_mut().enumerate() {
        let Value::Str(spec) = &item.value else { continue };
        let parts: Vec<&str> = spec.split(':').collect();
        let (src, dst, perms) = match parts.as_slice() {
            [s] => (*s, *s, "rwm"),
            [s, t] if t.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) && !t.is_empty() => (*s, *s, *t),
            [s, t] => (*s, *t, "rwm"),
            [s, t, p] => (*s, *t, *p),
            _ => {
                return Err(err(
                    item,
                    &format!("{path}[{i}]"),
                    format!("invalid device specification {spec:?}"),
                ));
            }
        };
        let mut m = Map::new();
        m.insert("source".into(), Node::str(src));
        m.insert("target".into(), Node::str(dst));
        m.insert("permissions".into(), Node::str(perms));
        item.value = Value::Map(m);
    }
    Ok(())
}

/// Device throttles come out with Docker's capitalised keys (`Path`, `Rate`, `Weight`) and rates
/// in bytes, as Compose prints them.
fn blkio(node: &mut Node, path: &str) -> Result<(), LoadError> {
    let Some(m) = node.as_map_mut() else { return Ok(()) };
    for (key, value_key) in [
        ("device_read_bps", "rate"),
        ("device_write_bps", "rate"),
        ("device_read_iops", "rate"),
        ("device_write_iops", "rate"),
        ("weight_device", "weight"),
    ] {
        let Some(Value::Seq(items)) = m.get_mut(key).map(|n| &mut n.value) else {
            continue;
        };
        for (i, item) in items.iter_mut().enumerate() {
            let Some(entry) = item.as_map_mut() else { continue };
            let mut out = Map::new();
            if let Some(p) = entry.shift_remove("path") {
                out.insert("Path".into(), p);
            }
            if let Some(mut v) = entry.shift_remove(value_key) {
                if key.ends_with("_bps") {
                    bytes(&mut v, &format!("{path}.{key}[{i}].rate"))?;
                }
                let cap = if value_key == "rate" { "Rate" } else { "Weight" };
                out.insert(cap.into(), v);
            }
            out.extend(std::mem::take(entry));
            item.value = Value::Map(out);
        }
    }
    Ok(())
}

fn hooks(node: &mut Node, path: &str) -> Result<(), LoadError> {
    let Value::Seq(items) = &mut node.value else {
        return Ok(());
    };
    for (i, item) in items.iter_mut().enumerate() {
        if let Some(cmd) = item.as_map_mut().and_then(|m| m.get_mut("command")) {
            command(cmd, &format!("{path}[{i}].command"))?;
        }
        if let Some(env) = item.as_map_mut().and_then(|m| m.get_mut("environment")) {
            list_or_dict(env, &format!("{path}[{i}].environment"), '=', true)?;
        }
    }
    Ok(())
}

fn extra_hosts(node: &mut Node, path: &str) -> Result<(), LoadError> {
    let entries: Vec<Node> = match &node.value {
        Value::Seq(items) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let text = item.scalar_text().unwrap_or_default();
                let (host, ip) = match text.split_once('=') {
                    Some(kv) => kv,
                    None => text.split_once(':').ok_or_else(|| {
                        err(
                            item,
                            &format!("{path}[{i}]"),
                            format!("invalid extra host {text:?}: expected host=ip or host:ip"),
                        )
                    })?,
                };
                out.push(item.with(Value::Str(format!("{host}={}", unbracket(ip)))));
            }
            out
        }
        Value::Map(m) => {
            let mut out = Vec::new();
            for (host, ip) in m {
                match &ip.value {
                    Value::Seq(ips) => {
                        for one in ips {
                            let ip = one.scalar_text().unwrap_or_default();
                            out.push(one.with(Value::Str(format!("{host}={}", unbracket(&ip)))));
                        }
                    }
                    _ => {
                        let text = ip.scalar_text().unwrap_or_default();
                        out.push(ip.with(Value::Str(format!("{host}={}", unbracket(&text)))));
                    }
                }
            }
            out
        }
        _ => return Ok(()),
    };
    node.value = Value::Seq(entries);
    Ok(())
}

fn unbracket(ip: &str) -> &str {
    ip.strip_prefix('[').and_then(|i| i.strip_suffix(']')).unwrap_or(ip)
}

fn command(node: &mut Node, path: &str) -> Result<(), LoadError> {
    if let Value::Str(s) = &node.value {
        let words = units::shell_split(s).map_err(|e| err(node, path, e))?;
        let items = words.into_iter().map(|w| node.with(Value::Str(w))).collect();
        node.value = Value::Seq(items);
    } else {
        stringify_seq(node);
    }
    Ok(())
}

fn ports(node: &mut Node, path: &str) -> Result<(), LoadError> {
    let Value::Seq(items) = &node.value else { return Ok(()) };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match &item.value {
            Value::Map(m) => {
                let mut m = m.clone();
                if let Some(t) = m.get_mut("target")
                    && let Value::Str(s) = &t.value
                {
                    let n: u32 = s
                        .parse()
                        .map_err(|_| err(t, &format!("{p}.target"), format!("invalid containerPort: {s}")))?;
                    t.value = Value::Int(n.into());
                }
                if let Some(pb) = m.get_mut("published")
                    && let Value::Int(n) = pb.value
                {
                    pb.value = Value::Str(n.to_string());
                }
                m.entry("mode".into()).or_insert_with(|| Node::str("ingress"));
                m.entry("protocol".into()).or_insert_with(|| Node::str("tcp"));
                out.push(item.with(Value::Map(m)));
            }
            Value::Int(_) | Value::Str(_) | Value::Float(_) => {
                let text = item.scalar_text().unwrap_or_default();
                let specs = units::parse_port(&text).map_err(|e| err(item, &p, e))?;
                for s in specs {
                    let mut m = Map::new();
                    m.insert("mode".into(), Node::str("ingress"));
                    if let Some(ip) = s.host_ip {
                        m.insert("host_ip".into(), Node::str(ip));
                    }
                    m.insert("target".into(), Node::new(Value::Int(s.target.into())));
                    if let Some(pb) = s.published {
                        m.insert("published".into(), Node::str(pb));
                    }
                    m.insert("protocol".into(), Node::str(s.protocol));
                    out.push(item.with(Value::Map(m)));
                }
            }
            _ => {
                return Err(err(
                    item,
                    &p,
                    format!(
                        "invalid port: expected a string, number or mapping, got {}",
                        item.type_name()
                    ),
                ));
            }
        }
    }
    node.value = Value::Seq(out);
    Ok(())
}

fn is_bind_source(s: &str) -> bool {
    s.starts_with('.') || s.starts_with('/') || s.starts_with('~')
}

fn volumes(node: &mut Node, path: &str, ctx: &PathCtx) -> Result<(), LoadError> {
    let Value::Seq(items) = &node.value else { return Ok(()) };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let mut m = match &item.value {
            Value::Str(s) => short_volume(item, s, &p)?,
            Value::Map(m) => m.clone(),
            _ => return Err(err(item, &p, "invalid volume: expected a string or mapping")),
        };
        let kind = m.get("type").and_then(Node::as_str).unwrap_or("volume").to_string();
        if kind == "bind"
            && let Some(src) = m.get_mut("source")
        {
            ctx.resolve_node(src);
        }
        if let Some(size) = m
            .get_mut("tmpfs")
            .and_then(Node::as_map_mut)
            .and_then(|t| t.get_mut("size"))
        {
            bytes(size, &format!("{p}.tmpfs.size"))?;
        }
        out.push(item.with(Value::Map(m)));
    }
    node.value = Value::Seq(out);
    Ok(())
}

fn short_volume(item: &Node, spec: &str, path: &str) -> Result<Map, LoadError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let mut m = Map::new();
    let (source, target, mode) = match parts.as_slice() {
        [t] => (None, *t, None),
        [s, t] => (Some(*s), *t, None),
        [s, t, o] => (Some(*s), *t, Some(*o)),
        _ => {
            return Err(err(
                item,
                path,
                format!("invalid volume specification: {spec:?}: too many colons"),
            ));
        }
    };
    if target.is_empty() {
        return Err(err(
            item,
            path,
            format!("invalid volume specification: {spec:?}: empty target"),
        ));
    }
    let kind = match source {
        Some(s) if is_bind_source(s) => "bind",
        _ => "volume",
    };
    m.insert("type".into(), Node::str(kind));
    if let Some(s) = source {
        if s.is_empty() {
            return Err(err(
                item,
                path,
                format!("invalid volume specification: {spec:?}: empty source"),
            ));
        }
        m.insert("source".into(), Node::str(s));
    }
    m.insert("target".into(), Node::str(target));
    let mut bind = Map::new();
    let mut volume = Map::new();
    for opt in mode.into_iter().flat_map(|o| o.split(',')) {
        match opt {
            "ro" => {
                m.insert("read_only".into(), Node::new(Value::Bool(true)));
            }
            "rw" => {}
            "nocopy" => {
                volume.insert("nocopy".into(), Node::new(Value::Bool(true)));
            }
            "z" | "Z" => {
                bind.insert("selinux".into(), Node::str(opt));
            }
            "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {
                bind.insert("propagation".into(), Node::str(opt));
            }
            // Compose accepts and ignores Docker Desktop's consistency options.
            "consistent" | "cached" | "delegated" => {}
            other => {
                return Err(err(
                    item,
                    path,
                    format!("invalid volume specification: {spec:?}: unknown option {other:?}"),
                ));
            }
        }
    }
    if kind == "bind" {
        bind.insert("create_host_path".into(), Node::new(Value::Bool(true)));
        m.insert("bind".into(), Node::new(Value::Map(bind)));
    } else {
        m.insert("volume".into(), Node::new(Value::Map(volume)));
    }
    Ok(m)
}

fn depends_on(node: &mut Node, path: &str) -> Result<(), LoadError> {
    let mut out = Map::new();
    match &node.value {
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let name = item
                    .as_str()
                    .ok_or_else(|| err(item, &format!("{path}[{i}]"), "must be a service name"))?;
                let mut m = Map::new();
                m.insert("condition".into(), Node::str("service_started"));
                m.insert("required".into(), Node::new(Value::Bool(true)));
                out.insert(name.to_string(), item.with(Value::Map(m)));
            }
        }
        Value::Map(m) => {
            for (name, dep) in m {
                let mut d = dep.as_map().cloned().unwrap_or_default();
                d.entry("condition".into())
                    .or_insert_with(|| Node::str("service_started"));
                d.entry("required".into())
                    .or_insert_with(|| Node::new(Value::Bool(true)));
                out.insert(name.clone(), dep.with(Value::Map(d)));
            }
        }
        _ => return Ok(()),
    }
    node.value = Value::Map(out);
    Ok(())
}

fn healthcheck(node: &mut Node, path: &str) -> Result<(), LoadError> {
    let Some(m) = node.as_map_mut() else { return Ok(()) };
    if let Some(test) = m.get_mut("test")
        && let Value::Str(s) = &test.value
    {
        let items = vec![
            test.with(Value::Str("CMD-SHELL".into())),
            test.with(Value::Str(s.clone())),
        ];
        test.value = Value::Seq(items);
    }
    for key in ["interval", "timeout", "start_period", "start_interval"] {
        if let Some(d) = m.get_mut(key) {
            duration(d, &format!("{path}.{key}"))?;
        }
    }
    Ok(())
}

fn duration(node: &mut Node, path: &str) -> Result<(), LoadError> {
    let text = match &node.value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => return Ok(()),
    };
    let norm = units::normalize_duration(&text).map_err(|e| err(node, path, e))?;
    node.value = Value::Str(norm);
    Ok(())
}

fn bytes(node: &mut Node, path: &str) -> Result<(), LoadError> {
    let n = match &node.value {
        Value::Str(s) => units::parse_bytes(s).map_err(|e| err(node, path, e))?,
        Value::Int(i) => *i,
        Value::Float(f) => *f as i64,
        _ => return Ok(()),
    };
    node.value = Value::Str(n.to_string());
    Ok(())
}

fn build(node: &mut Node, path: &str, ctx: &PathCtx) -> Result<(), LoadError> {
    if let Value::Str(s) = &node.value {
        let mut m = Map::new();
        m.insert("context".into(), node.with(Value::Str(s.clone())));
        node.value = Value::Map(m);
    }
    let Some(m) = node.as_map_mut() else { return Ok(()) };
    if let Some(c) = m.get_mut("context")
        && let Some(s) = c.as_str()
        && !is_remote_context(s)
    {
        let abs = ctx.resolve(s);
        c.value = Value::Str(abs);
    }
    if let Some(args) = m.get_mut("args") {
        list_or_dict(args, &format!("{path}.args"), '=', true)?;
    }
    if let Some(labels) = m.get_mut("labels") {
        list_or_dict(labels, &format!("{path}.labels"), '=', false)?;
    }
    if let Some(size) = m.get_mut("shm_size") {
        bytes(size, &format!("{path}.shm_size"))?;
    }
    if let Some(hosts) = m.get_mut("extra_hosts") {
        extra_hosts(hosts, &format!("{path}.extra_hosts"))?;
    }
    if let Some(secrets) = m.get_mut("secrets") {
        file_refs(secrets, &format!("{path}.secrets"), None)?;
    }
    if let Some(contexts) = m.get_mut("additional_contexts").and_then(Node::as_map_mut) {
        for c in contexts.values_mut() {
            if let Some(s) = c.as_str()
                && !is_remote_context(s)
                && !s.contains(':')
            {
                let abs = ctx.resolve(s);
                c.value = Value::Str(abs);
            }
        }
    }
    Ok(())
}

/// Build contexts that are URLs are passed through untouched.
pub fn is_remote_context(s: &str) -> bool {
    s.contains("://") || s.starts_with("git@") || s.starts_with("github.com/")
}

fn env_file(node: &mut Node, path: &str, ctx: &PathCtx) -> Result<(), LoadError> {
    string_or_list(node);
    let Value::Seq(items) = &node.value else { return Ok(()) };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let mut m = match &item.value {
            Value::Str(s) => {
                let mut m = Map::new();
                m.insert("path".into(), item.with(Value::Str(s.clone())));
                m.insert("required".into(), Node::new(Value::Bool(true)));
                m
            }
            Value::Map(m) => {
                let mut m = m.clone();
                m.entry("required".into())
                    .or_insert_with(|| Node::new(Value::Bool(true)));
                m
            }
            _ => return Err(err(item, &format!("{path}[{i}]"), "must be a path or a mapping")),
        };
        if let Some(p) = m.get_mut("path") {
            ctx.resolve_node(p);
        }
        out.push(item.with(Value::Map(m)));
    }
    node.value = Value::Seq(out);
    Ok(())
}

fn networks(node: &mut Node) {
    if let Value::Seq(items) = &node.value {
        let m = items
            .iter()
            .filter_map(|i| i.scalar_text().map(|k| (k, i.with(Value::Null))))
            .collect();
        node.value = Value::Map(m);
    }
}

fn file_refs(node: &mut Node, path: &str, default_dir: Option<&str>) -> Result<(), LoadError> {
    let Value::Seq(items) = &mut node.value else {
        return Ok(());
    };
    for (i, item) in items.iter_mut().enumerate() {
        if let Value::Str(s) = &item.value {
            let mut m = Map::new();
            m.insert("source".into(), item.with(Value::Str(s.clone())));
            item.value = Value::Map(m);
        }
        let Some(m) = item.as_map_mut() else {
            return Err(err(item, &format!("{path}[{i}]"), "must be a name or a mapping"));
        };
        if let Some(mode) = m.get_mut("mode")
            && let Value::Int(n) = mode.value
        {
            mode.value = Value::Str(format!("0{n:o}"));
        }
        if let Some(dir) = default_dir
            && !m.contains_key("target")
            && let Some(src) = m.get("source").and_then(Node::as_str)
        {
            let t = format!("{dir}{src}");
            m.insert("target".into(), Node::str(t));
        }
    }
    Ok(())
}

fn deploy(node: &mut Node, path: &str) -> Result<(), LoadError> {
    let Some(m) = node.as_map_mut() else { return Ok(()) };
    if let Some(res) = m.get_mut("resources").and_then(Node::as_map_mut) {
        for kind in ["limits", "reservations"] {
            if let Some(r) = res.get_mut(kind).and_then(Node::as_map_mut) {
                if let Some(c) = r.get_mut("cpus")
                    && let Value::Str(s) = &c.value
                {
                    let f: f64 = s.trim().parse().map_err(|_| {
                        err(
                            c,
                            &format!("{path}.resources.{kind}.cpus"),
                            format!("invalid cpus value {s:?}"),
                        )
                    })?;
                    c.value = Value::Float(f);
                }
                if let Some(mem) = r.get_mut("memory") {
                    bytes(mem, &format!("{path}.resources.{kind}.memory"))?;
                }
                for dev in r
                    .get_mut("devices")
                    .and_then(|d| match &mut d.value {
                        Value::Seq(s) => Some(s),
                        _ => None,
                    })
                    .into_iter()
                    .flatten()
                {
                    if let Some(count) = dev.as_map_mut().and_then(|d| d.get_mut("count"))
                        && count.as_str() == Some("all")
                    {
                        count.value = Value::Int(-1);
                    }
                }
            }
        }
    }
    if let Some(labels) = m.get_mut("labels") {
        list_or_dict(labels, &format!("{path}.labels"), '=', false)?;
    }
    for section in ["update_config", "rollback_config", "restart_policy"] {
        if let Some(s) = m.get_mut(section).and_then(Node::as_map_mut) {
            for key in ["delay", "monitor", "window"] {
                if let Some(d) = s.get_mut(key) {
                    duration(d, &format!("{path}.{section}.{key}"))?;
                }
            }
        }
    }
    Ok(())
}

fn develop(node: &mut Node, path: &str, ctx: &PathCtx) -> Result<(), LoadError> {
    let Some(watch) = node.as_map_mut().and_then(|m| m.get_mut("watch")) else {
        return Ok(());
    };
    let Value::Seq(items) = &mut watch.value else {
        return Ok(());
    };
    for (i, item) in items.iter_mut().enumerate() {
        let Some(m) = item.as_map_mut() else {
            return Err(err(item, &format!("{path}.watch[{i}]"), "must be a mapping"));
        };
        if let Some(p) = m.get_mut("path") {
            ctx.resolve_node(p);
        }
        if let Some(ign) = m.get_mut("ignore") {
            string_or_list(ign);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn canon(src: &str) -> serde_json::Value {
        let file: Arc<str> = Arc::from("t.yaml");
        let mut n = super::super::yaml::parse(src, &file).expect("parses").remove(0);
        let ctx = PathCtx {
            base_dir: Path::new("/p"),
            home: Some(Path::new("/home/u")),
        };
        canonicalize(&mut n, &ctx).expect("canonical");
        n.to_json()
    }

    #[test]
    fn short_volumes_become_long() {
        let j = canon("services:\n  a:\n    volumes: ['./d:/d:ro', 'n:/x', '/anon', '~/f:/f']\n");
        let v = &j["services"]["a"]["volumes"];
        assert_eq!(
            v[0],
            serde_json::json!({"type": "bind", "source": "/p/d", "target": "/d", "read_only": true, "bind": {"create_host_path": true}})
        );
        assert_eq!(
            v[1],
            serde_json::json!({"type": "volume", "source": "n", "target": "/x", "volume": {}})
        );
        assert_eq!(
            v[2],
            serde_json::json!({"type": "volume", "target": "/anon", "volume": {}})
        );
        assert_eq!(v[3]["source"], "/home/u/f");
    }

    #[test]
    fn environment_list_becomes_map() {
        let j = canon("services:\n  a:\n    environment: [A=1, B, C=x=y]\n");
        assert_eq!(
            j["services"]["a"]["environment"],
            serde_json::json!({"A": "1", "B": null, "C": "x=y"})
        );
    }

    #[test]
    fn commands_are_shell_split() {
        let j = canon("services:\n  a:\n    command: echo 'a b'\n");
        assert_eq!(j["services"]["a"]["command"], serde_json::json!(["echo", "a b"]));
    }

    #[test]
    fn bad_port_names_its_key_path_and_line() {
        let file: Arc<str> = Arc::from("t.yaml");
        let mut n = super::super::yaml::parse("services:\n  a:\n    ports:\n      - 80\n      - abc\n", &file)
            .expect("parses")
            .remove(0);
        let ctx = PathCtx {
            base_dir: Path::new("/p"),
            home: None,
        };
        let e = canonicalize(&mut n, &ctx).unwrap_err().to_string();
        assert_eq!(e, "t.yaml:5:9: services.a.ports[1]: invalid containerPort: abc");
    }
}
