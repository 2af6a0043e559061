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
                let replace_ulimit = path.len() == 3 && path[0] == "services" && path[2] == "ulimits";
                // Merged keys keep their place; new keys go at the end.
                match out.get_mut(&k) {
                    Some(prev) if !replace_ulimit => {
                        let earlier = std::mem::replace(prev, Node::new(Value::Null));
                        path.push(k);
                        *prev = merge_at(earlier, v, path);
                        path.pop();
                    }
                    Some(prev) => *prev = strip_tags(v),
                    None => {
                        out.insert(k, strip_tags(v));
                    }
                }
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
        match (k.as_str(), out.get_mut(&k)) {
            ("options", Some(prev)) => {
                let earlier = std::mem::replace(prev, Node::new(Value::Null));
                *prev = merge_project(earlier, v);
            }
            (_, Some(prev)) => *prev = v,
            (_, None) => {
                out.insert(k, v);
            }
        }
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

    #[test]
    fn logging_with_the_same_driver_merges_options() {
        let j = merged(
            "services: {a: {logging: {driver: syslog, options: {x: '1'}}}}",
            "services: {a: {logging: {options: {y: '2'}}}}",
        );
        assert_eq!(
            j["services"]["a"]["logging"],
            serde_json::json!({"driver": "syslog", "options": {"x": "1", "y": "2"}})
        );
    }

    #[test]
    fn entrypoint_is_replaced() {
        let j = merged(
            "services: {a: {entrypoint: [a, b]}}",
            "services: {a: {entrypoint: [c]}}",
        );
        assert_eq!(j["services"]["a"]["entrypoint"], serde_json::json!(["c"]));
    }

    #[test]
    fn each_ulimit_is_replaced_whole() {
        let j = merged(
            "services: {a: {ulimits: {nofile: {soft: 1, hard: 2}, nproc: 5}}}",
            "services: {a: {ulimits: {nofile: {soft: 3}}}}",
        );
        assert_eq!(
            j["services"]["a"]["ulimits"],
            serde_json::json!({"nofile": {"soft": 3}, "nproc": 5})
        );
    }

    #[test]
    fn ports_deduplicate_on_the_whole_mapping() {
        let base = "services: {a: {ports: [{target: 80, published: '8080', protocol: tcp, mode: ingress}]}}";
        let j = merged(
            base,
            "services: {a: {ports: [{target: 80, published: '8080', protocol: tcp, mode: ingress}, \
             {target: 80, published: '9090', protocol: tcp, mode: ingress}]}}",
        );
        assert_eq!(j["services"]["a"]["ports"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn environment_and_depends_on_merge_by_key() {
        let j = merged(
            "services: {a: {environment: {A: '1', B: '2'}, depends_on: {db: {condition: service_started}}}}",
            "services: {a: {environment: {B: '3'}, depends_on: {db: {condition: service_healthy}, c: {}}}}",
        );
        assert_eq!(
            j["services"]["a"]["environment"],
            serde_json::json!({"A": "1", "B": "3"})
        );
        assert_eq!(j["services"]["a"]["depends_on"]["db"]["condition"], "service_healthy");
        assert!(j["services"]["a"]["depends_on"].get("c").is_some());
    }

    #[test]
    fn service_networks_merge_their_settings() {
        let j = merged(
            "services: {a: {networks: {front: {aliases: [x]}, back: null}}}",
            "services: {a: {networks: {front: {aliases: [y]}}}}",
        );
        assert_eq!(
            j["services"]["a"]["networks"],
            serde_json::json!({"front": {"aliases": ["x", "y"]}, "back": null})
        );
    }

    #[test]
    fn string_lists_append_without_duplicates() {
        let j = merged(
            "services: {a: {cap_add: [NET_ADMIN], dns: [1.1.1.1]}}",
            "services: {a: {cap_add: [NET_ADMIN, SYS_TIME], dns: [1.1.1.1]}}",
        );
        assert_eq!(
            j["services"]["a"]["cap_add"],
            serde_json::json!(["NET_ADMIN", "SYS_TIME"])
        );
        assert_eq!(j["services"]["a"]["dns"], serde_json::json!(["1.1.1.1"]));
    }

    #[test]
    fn scalars_and_top_level_resources() {
        let j = merged(
            "name: one\nservices: {a: {image: x, restart: always}}\nvolumes: {v: {driver: local}}",
            "name: two\nservices: {a: {image: y}}\nvolumes: {v: {labels: {k: v}}, w: {}}",
        );
        assert_eq!(j["name"], "two");
        assert_eq!(
            j["services"]["a"],
            serde_json::json!({"image": "y", "restart": "always"})
        );
        assert_eq!(
            j["volumes"]["v"],
            serde_json::json!({"driver": "local", "labels": {"k": "v"}})
        );
        assert!(j["volumes"].get("w").is_some());
    }

    #[test]
    fn reset_removes_a_whole_service() {
        let j = merged("services: {a: {image: x}, b: {image: y}}", "services: {b: !reset null}");
        assert_eq!(j["services"], serde_json::json!({"a": {"image": "x"}}));
    }

    #[test]
    fn extends_merges_like_an_override() {
        let base = parse("{image: x, environment: {A: '1'}, command: [a]}");
        let own = parse("{environment: {B: '2'}, command: [b]}");
        let j = merge_service(base, own).to_json();
        assert_eq!(
            j,
            serde_json::json!({"image": "x", "environment": {"A": "1", "B": "2"}, "command": ["b"]})
        );
    }
}
