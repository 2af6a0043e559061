//! Compose's merge rules for override files and `extends`: maps merge, sequences append, some keys
//! replace, keyed lists de-duplicate, and `!reset`/`!override` tags win over all of it.
//!
//! Both sides are already in canonical (long) form, so the rules only deal with one shape per key.

use super::yaml::{Map, Node, Tag, Value};

/// Service keys whose sequences replace instead of appending.
const REPLACED: &[&str] = &["command", "entrypoint"];

/// Merges `over` onto `base` at the top level of a project.
pub fn merge_project(base: Node, over: Node) -> Node {
    merge_at(base, over, &mut Vec::new())
}

/// Merges one service definition onto another, as `extends` and overrides do.
pub fn merge_service(base: Node, over: Node) -> Node {
    let mut path = vec!["services".to_string(), "*".to_string()];
    merge_at(base, over, &mut path)
}

fn strip_tags(mut n: Node) -> Node {
    n.tag = Tag::None;
    n
}

fn merge_at(base: Node, over: Node, path: &mut Vec<String>) -> Node {
    if over.tag == Tag::Override {
        return strip_tags(over);
    }
    let key = path.last().map(String::as_str).unwrap_or("");
    let in_service = path.len() == 3 && path[0] == "services";
    match (base.value, over.value) {
        (Value::Map(b), Value::Map(o)) => {
            let loc = over.loc.or(base.loc);
            if in_service && key == "logging" {
                return Node {
                    value: Value::Map(merge_logging(b, o)),
                    loc,
                    tag: Tag::None,
                };
            }
            let mut out = b;
            for (k, v) in o {
                if v.tag == Tag::Reset {
                    out.shift_remove(&k);
                    continue;
                }
                let replace_ulimit = path.len() == 4 && path[0] == "services" && path[2] == "ulimits";
                let merged = match out.shift_remove(&k) {
                    Some(prev) if !replace_ulimit => {
                        path.push(k.clone());
                        let m = merge_at(prev, v, path);
                        path.pop();
                        m
                    }
                    _ => strip_tags(v),
                };
                out.insert(k, merged);
            }
            Node {
                value: Value::Map(out),
                loc,
                tag: Tag::None,
            }
        }
        (Value::Seq(b), Value::Seq(o)) => {
            let loc = over.loc.or(base.loc);
            let healthcheck_test =
                path.len() == 4 && path[0] == "services" && path[2] == "healthcheck" && key == "test";
            if (in_service && REPLACED.contains(&key)) || healthcheck_test {
                return Node {
                    value: Value::Seq(o),
                    loc,
                    tag: Tag::None,
                };
            }
            let mut out = b;
            out.extend(o);
            if in_service {
                out = dedupe(key, out);
            }
            Node {
                value: Value::Seq(out),
                loc,
                tag: Tag::None,
            }
        }
        (_, v) => Node {
            value: v,
            loc: over.loc,
            tag: Tag::None,
        },
    }
}

fn merge_logging(base: Map, over: Map) -> Map {
    let driver = |m: &Map| m.get("driver").and_then(|d| d.as_str().map(str::to_string));
    let (bd, od) = (driver(&base), driver(&over));
    if bd.is_some() && od.is_some() && bd != od {
        return over;
    }
    let mut out = base;
    for (k, v) in over {
        let merged = match (k.as_str(), out.shift_remove(&k)) {
            ("options", Some(prev)) => merge_project(prev, v),
            (_, _) => v,
        };
        out.insert(k, merged);
    }
    out
}

/// The identity of an item in a keyed service list, or `None` when the list is not keyed.
fn item_key(list: &str, item: &Node) -> Option<String> {
    let field = |name: &str| item.get(name).and_then(Node::scalar_text).unwrap_or_default();
    match list {
        "ports" => Some(format!(
            "{}|{}|{}|{}|{}",
            field("host_ip"),
            field("published"),
            field("target"),
            field("protocol"),
            field("mode")
        )),
        "volumes" | "secrets" | "configs" | "devices" => match &item.value {
            Value::Map(_) => Some(if item.get("target").is_some() {
                field("target")
            } else {
                field("source")
            }),
            _ => item.scalar_text(),
        },
        "env_file" => Some(field("path")),
        "expose" | "cap_add" | "cap_drop" | "dns" | "dns_search" | "dns_opt" | "tmpfs" | "extra_hosts"
        | "security_opt" | "links" | "external_links" | "volumes_from" | "profiles" | "group_add" => item.scalar_text(),
        _ => None,
    }
}

/// Removes duplicates by key, keeping the first position and the last value, as Compose does.
pub fn dedupe(list: &str, items: Vec<Node>) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::with_capacity(items.len());
    let mut index: indexmap::IndexMap<String, usize> = indexmap::IndexMap::new();
    for item in items {
        match item_key(list, &item) {
            Some(k) => match index.get(&k) {
                Some(&i) => out[i] = item,
                None => {
                    index.insert(k, out.len());
                    out.push(item);
                }
            },
            None => out.push(item),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn parse(src: &str) -> Node {
        let file: Arc<str> = Arc::from("t.yaml");
        super::super::yaml::parse(src, &file).expect("parses").remove(0)
    }

    fn merged(a: &str, b: &str) -> serde_json::Value {
        merge_project(parse(a), parse(b)).to_json()
    }

    #[test]
    fn maps_merge_and_sequences_append() {
        let j = merged(
            "services: {a: {image: x, dns: [1.1.1.1], labels: {a: '1'}}}",
            "services: {a: {dns: [8.8.8.8], labels: {b: '2'}}}",
        );
        assert_eq!(j["services"]["a"]["dns"], serde_json::json!(["1.1.1.1", "8.8.8.8"]));
        assert_eq!(j["services"]["a"]["labels"], serde_json::json!({"a": "1", "b": "2"}));
        assert_eq!(j["services"]["a"]["image"], "x");
    }

    #[test]
    fn command_and_healthcheck_test_are_replaced() {
        let j = merged(
            "services: {a: {command: [a, b], healthcheck: {test: [CMD, x], retries: 1}}}",
            "services: {a: {command: [c], healthcheck: {test: [CMD, y]}}}",
        );
        assert_eq!(j["services"]["a"]["command"], serde_json::json!(["c"]));
        assert_eq!(
            j["services"]["a"]["healthcheck"],
            serde_json::json!({"test": ["CMD", "y"], "retries": 1})
        );
    }

    #[test]
    fn keyed_lists_deduplicate() {
        let j = merged(
            "services: {a: {volumes: [{type: volume, source: v, target: /d}], secrets: [{source: s, target: /s}]}}",
            "services: {a: {volumes: [{type: bind, source: /h, target: /d}], secrets: [{source: s, target: /s}]}}",
        );
        assert_eq!(
            j["services"]["a"]["volumes"],
            serde_json::json!([{"type": "bind", "source": "/h", "target": "/d"}])
        );
        assert_eq!(j["services"]["a"]["secrets"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn reset_and_override_tags() {
        let j = merged(
            "services: {a: {ports: [{target: 1}], labels: {a: '1'}}}",
            "services: {a: {ports: !reset [], labels: !override {b: '2'}}}",
        );
        assert!(j["services"]["a"].get("ports").is_none());
        assert_eq!(j["services"]["a"]["labels"], serde_json::json!({"b": "2"}));
    }

    #[test]
    fn logging_with_another_driver_replaces_options() {
        let j = merged(
            "services: {a: {logging: {driver: syslog, options: {x: '1'}}}}",
            "services: {a: {logging: {driver: json-file, options: {y: '2'}}}}",
        );
        assert_eq!(
            j["services"]["a"]["logging"],
            serde_json::json!({"driver": "json-file", "options": {"y": "2"}})
        );
    }
}
