//! Semantic checks Compose makes after merging: references to services, networks, volumes,
//! secrets and configs must resolve, every service needs an image or a build, and dependencies
//! must not form a cycle.

use std::collections::HashSet;

use super::error::{LoadError, Location};
use super::yaml::{Node, Value};
use crate::graph;

fn names(root: &Node, kind: &str) -> HashSet<String> {
    root.get(kind)
        .and_then(Node::as_map)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Drops optional dependencies on missing services, then checks every reference.
pub fn check(root: &mut Node, disabled: &HashSet<String>) -> Result<(), LoadError> {
    let services = names(root, "services");
    if let Some(svcs) = root
        .as_map_mut()
        .and_then(|m| m.get_mut("services"))
        .and_then(Node::as_map_mut)
    {
        for svc in svcs.values_mut() {
            if let Some(deps) = svc
                .as_map_mut()
                .and_then(|m| m.get_mut("depends_on"))
                .and_then(Node::as_map_mut)
            {
                // An optional dependency on a service whose profiles are off is dropped; one on a
                // service that does not exist at all is still an error, as in Compose.
                deps.retain(|dep, d| {
                    let optional = matches!(d.get("required").map(|r| &r.value), Some(Value::Bool(false)));
                    services.contains(dep) || !(optional && disabled.contains(dep))
                });
            }
        }
    }
    resources(root)?;
    let networks = names(root, "networks");
    let volumes = names(root, "volumes");
    let secrets = names(root, "secrets");
    let configs = names(root, "configs");
    let Some(svcs) = root.get("services").and_then(Node::as_map) else {
        return Ok(());
    };
    let undefined = |node: &Node, path: String, msg: String| Err(LoadError::invalid(node.loc.clone(), path, msg));
    let mut edges: Vec<(String, String, Option<Location>)> = Vec::new();
    for (name, svc) in svcs {
        let base = format!("services.{name}");
        if svc.get("image").is_none() && svc.get("build").is_none() {
            return undefined(
                svc,
                base,
                format!("service {name:?} has neither an image nor a build context specified"),
            );
        }
        if let Some(deps) = svc.get("depends_on").and_then(Node::as_map) {
            for (dep, d) in deps {
                if !services.contains(dep) {
                    let why = if disabled.contains(dep) {
                        " (its profiles are not enabled)"
                    } else {
                        ""
                    };
                    return undefined(
                        d,
                        format!("{base}.depends_on.{dep}"),
                        format!("service {name:?} depends on undefined service {dep:?}{why}"),
                    );
                }
                edges.push((name.clone(), dep.clone(), d.loc.clone()));
            }
        }
        for (i, link) in svc
            .get("links")
            .and_then(Node::as_seq)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let target = link
                .as_str()
                .unwrap_or_default()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_string();
            if !services.contains(&target) {
                return undefined(
                    link,
                    format!("{base}.links[{i}]"),
                    format!("service {name:?} links to undefined service {target:?}"),
                );
            }
            edges.push((name.clone(), target, link.loc.clone()));
        }
        for (i, vf) in svc
            .get("volumes_from")
            .and_then(Node::as_seq)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let text = vf.as_str().unwrap_or_default();
            if text.starts_with("container:") {
                continue;
            }
            let target = text.split(':').next().unwrap_or_default().to_string();
            if !services.contains(&target) {
                return undefined(
                    vf,
                    format!("{base}.volumes_from[{i}]"),
                    format!("service {name:?} mounts volumes from undefined service {target:?}"),
                );
            }
            edges.push((name.clone(), target, vf.loc.clone()));
        }
        if let Some(mode) = svc.get("network_mode") {
            if let Some(target) = mode.as_str().and_then(|m| m.strip_prefix("service:")) {
                if !services.contains(target) {
                    return undefined(
                        mode,
                        format!("{base}.network_mode"),
                        format!("service {name:?} uses the network stack of undefined service {target:?}"),
                    );
                }
                edges.push((name.clone(), target.to_string(), mode.loc.clone()));
            }
            if svc.get("networks").is_some() && mode.as_str() != Some("bridge") {
                return undefined(
                    mode,
                    format!("{base}.network_mode"),
                    "network_mode and networks cannot be combined".to_string(),
                );
            }
        }
        if let Some(nets) = svc.get("networks").and_then(Node::as_map) {
            for (net, n) in nets {
                if !networks.contains(net) {
                    return undefined(
                        n,
                        format!("{base}.networks.{net}"),
                        format!("service {name:?} refers to undefined network {net}"),
                    );
                }
            }
        }
        for (i, v) in svc
            .get("volumes")
            .and_then(Node::as_seq)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if v.get("type").and_then(Node::as_str) == Some("volume")
                && let Some(src) = v.get("source").and_then(Node::as_str)
                && !volumes.contains(src)
            {
                return undefined(
                    v,
                    format!("{base}.volumes[{i}]"),
                    format!("service {name:?} refers to undefined volume {src}"),
                );
            }
        }
        for (kind, known) in [("secrets", &secrets), ("configs", &configs)] {
            for (i, r) in svc.get(kind).and_then(Node::as_seq).into_iter().flatten().enumerate() {
                let src = r.get("source").and_then(Node::as_str).unwrap_or_default();
                if !known.contains(src) {
                    let singular = kind.trim_end_matches('s');
                    return undefined(
                        r,
                        format!("{base}.{kind}[{i}]"),
                        format!("service {name:?} refers to undefined {singular} {src}"),
                    );
                }
            }
        }
    }
    let pairs: Vec<(&str, &str)> = edges.iter().map(|(a, b, _)| (a.as_str(), b.as_str())).collect();
    if let Some(cycle) = graph::find_cycle(svcs.keys().map(String::as_str), &pairs) {
        let first = cycle.first().cloned().unwrap_or_default();
        let loc = edges
            .iter()
            .find(|(a, _, _)| *a == first)
            .and_then(|(_, _, loc)| loc.clone());
        return Err(LoadError::invalid(
            loc,
            format!("services.{first}.depends_on"),
            format!("dependency cycle detected: {}", cycle.join(" -> ")),
        ));
    }
    Ok(())
}

/// Top-level resources: `external` excludes local settings; secrets and configs need a source.
fn resources(root: &Node) -> Result<(), LoadError> {
    for kind in ["networks", "volumes", "secrets", "configs"] {
        for (name, def) in root.get(kind).and_then(Node::as_map).into_iter().flatten() {
            let path = format!("{kind}.{name}");
            let Some(m) = def.as_map() else { continue };
            let external = matches!(m.get("external").map(|e| &e.value), Some(Value::Bool(true)));
            if external {
                for key in ["driver", "driver_opts", "internal", "file", "environment", "content"] {
                    if let Some(n) = m.get(key) {
                        return Err(LoadError::invalid(
                            n.loc.clone(),
                            path,
                            format!("conflicting parameters \"external\" and {key:?} specified"),
                        ));
                    }
                }
                continue;
            }
            let sources: &[&str] = match kind {
                "secrets" => &["file", "environment"],
                "configs" => &["file", "environment", "content"],
                _ => continue,
            };
            if !sources.iter().any(|k| m.contains_key(*k)) {
                return Err(LoadError::invalid(
                    def.loc.clone(),
                    path,
                    format!("one of {} must be set", sources.join("|")),
                ));
            }
        }
    }
    Ok(())
}
