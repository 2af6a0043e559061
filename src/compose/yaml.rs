//! The positioned YAML tree: parsing with anchors, aliases, `<<` merge keys and `!reset`/`!override` tags.
//!
//! Every loader phase works on [`Node`]s so that any error can name the file and line:column the
//! offending value came from, even after files were merged.

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag as YamlTag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::error::{LoadError, Location};

/// Upper bound on nodes produced by alias expansion, so "billion laughs" documents fail cleanly.
const MAX_ALIAS_NODES: usize = 1_000_000;
/// Upper bound on nesting depth, so deeply nested input cannot overflow the stack later on.
const MAX_DEPTH: usize = 256;

/// A mapping with string keys in document order.
pub type Map = IndexMap<String, Node>;

/// The compose merge tags a node can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tag {
    /// No special tag.
    #[default]
    None,
    /// `!reset`: remove the value inherited from earlier files.
    Reset,
    /// `!override`: replace the inherited value instead of merging.
    Override,
}

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping.
    Map(Map),
}

/// A value together with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it starts in its source file, if it came from one.
    pub loc: Option<Location>,
    /// Its compose merge tag.
    pub tag: Tag,
}

impl Node {
    /// A node made by the loader rather than read from a file.
    pub fn new(value: Value) -> Node {
        Node {
            value,
            loc: None,
            tag: Tag::None,
        }
    }

    /// A node with the same location as `self`.
    pub fn with(&self, value: Value) -> Node {
        Node {
            value,
            loc: self.loc.clone(),
            tag: Tag::None,
        }
    }

    /// A string node.
    pub fn str(s: impl Into<String>) -> Node {
        Node::new(Value::Str(s.into()))
    }

    /// An empty mapping node.
    pub fn map() -> Node {
        Node::new(Value::Map(Map::new()))
    }

    /// The mapping, if this is one.
    pub fn as_map(&self) -> Option<&Map> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The mapping, mutably, if this is one.
    pub fn as_map_mut(&mut self) -> Option<&mut Map> {
        match &mut self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The sequence, if this is one.
    pub fn as_seq(&self) -> Option<&Vec<Node>> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Child `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map().and_then(|m| m.get(key))
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// A scalar as text, the way Go's fmt would print it (`true`, `8080`, `0.5`); `None` for collections.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Null => Some(String::new()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(format_float(*f)),
            Value::Str(s) => Some(s.clone()),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// A short name for the node's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Seq(_) => "array",
            Value::Map(_) => "mapping",
        }
    }

    /// Converts to JSON, dropping positions and tags.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(s) => J::Array(s.iter().map(Node::to_json).collect()),
            Value::Map(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }

    /// Builds a node tree from JSON (with no positions).
    pub fn from_json(v: &serde_json::Value) -> Node {
        use serde_json::Value as J;
        Node::new(match v {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(0.0)),
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(a) => Value::Seq(a.iter().map(Node::from_json).collect()),
            J::Object(o) => Value::Map(o.iter().map(|(k, v)| (k.clone(), Node::from_json(v))).collect()),
        })
    }

    /// Follows a JSON pointer (`/services/web/ports/1`) to the deepest node that exists.
    pub fn locate(&self, pointer: &str) -> &Node {
        let mut node = self;
        for raw in pointer.split('/').skip(1) {
            let seg = raw.replace("~1", "/").replace("~0", "~");
            let next = match &node.value {
                Value::Map(m) => m.get(&seg),
                Value::Seq(s) => seg.parse::<usize>().ok().and_then(|i| s.get(i)),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }
}

/// Formats a float the way Go's `strconv.FormatFloat(f, 'g', -1, 64)` does for common values.
pub fn format_float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// Turns a JSON pointer into a compose key path: `/services/web/ports/1` → `services.web.ports[1]`.
pub fn pointer_to_key_path(root: &Node, pointer: &str) -> String {
    let mut out = String::new();
    let mut node = Some(root);
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        let in_seq = matches!(node.map(|n| &n.value), Some(Value::Seq(_)));
        if in_seq {
            out.push('[');
            out.push_str(&seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
        node = node.and_then(|n| match &n.value {
            Value::Map(m) => m.get(&seg),
            Value::Seq(s) => seg.parse::<usize>().ok().and_then(|i| s.get(i)),
            _ => None,
        });
    }
    out
}

/// Renders JSON as a YAML document (used by `config`).
pub fn to_yaml_string(v: &serde_json::Value) -> String {
    fn conv(v: &serde_json::Value) -> yaml_rust2::Yaml {
        use serde_json::Value as J;
        use yaml_rust2::Yaml as Y;
        match v {
            J::Null => Y::Null,
            J::Bool(b) => Y::Boolean(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Y::Integer(i),
                None => Y::Real(n.to_string()),
            },
            J::String(s) => Y::String(s.clone()),
            J::Array(a) => Y::Array(a.iter().map(conv).collect()),
            J::Object(o) => Y::Hash(o.iter().map(|(k, v)| (Y::String(k.clone()), conv(v))).collect()),
        }
    }
    let mut out = String::new();
    let mut emitter = yaml_rust2::YamlEmitter::new(&mut out);
    emitter.multiline_strings(true);
    if emitter.dump(&conv(v)).is_err() {
        return serde_json::to_string_pretty(v).unwrap_or_default();
    }
    let body = out.strip_prefix("---\n").unwrap_or(&out).to_string();
    body + "\n"
}

/// Parses every document of a YAML file into nodes. `file` is used in locations.
pub fn parse(src: &str, file: &Arc<str>) -> Result<Vec<Node>, LoadError> {
    let mut builder = Builder {
        file: file.clone(),
        stack: Vec::new(),
        docs: Vec::new(),
        anchors: HashMap::new(),
        alias_nodes: 0,
        error: None,
    };
    let mut parser = Parser::new_from_str(src);
    if let Err(e) = parser.load(&mut builder, true) {
        let m = e.marker();
        return Err(LoadError::Syntax {
            location: builder.location(m),
            message: e.info().to_string(),
        });
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.docs)
}

enum Frame {
    Seq {
        items: Vec<Node>,
        anchor: usize,
        tag: Tag,
        loc: Location,
    },
    Map {
        entries: Vec<(Node, bool, Node)>,
        key: Option<(Node, bool)>,
        anchor: usize,
        tag: Tag,
        loc: Location,
    },
}

struct Builder {
    file: Arc<str>,
    stack: Vec<Frame>,
    docs: Vec<Node>,
    anchors: HashMap<usize, (Node, usize)>,
    alias_nodes: usize,
    error: Option<LoadError>,
}

fn node_count(n: &Node) -> usize {
    match &n.value {
        Value::Seq(s) => 1 + s.iter().map(node_count).sum::<usize>(),
        Value::Map(m) => 1 + m.values().map(node_count).sum::<usize>(),
        _ => 1,
    }
}

fn compose_tag(tag: &Option<YamlTag>) -> Tag {
    match tag {
        Some(t) if t.handle == "!" && t.suffix == "reset" => Tag::Reset,
        Some(t) if t.handle == "!" && t.suffix == "override" => Tag::Override,
        _ => Tag::None,
    }
}

/// Resolves a plain scalar to a typed value (YAML 1.2 core schema, as go-yaml v3 does).
fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let Some(&first) = s.as_bytes().first() else {
        return Value::Null;
    };
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Value::Str(s.to_string());
    }
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let radix = [("0x", 16), ("0o", 8), ("0b", 2)]
        .iter()
        .find_map(|(p, r)| digits.strip_prefix(p).map(|d| (d, *r)));
    if let Some((d, r)) = radix {
        if let Ok(v) = i64::from_str_radix(d, r) {
            return Value::Int(if neg { -v } else { v });
        }
        return Value::Str(s.to_string());
    }
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // go-yaml keeps YAML 1.1's leading-zero octal (`0755`), and Compose relies on it for modes.
        if digits.len() > 1
            && digits.starts_with('0')
            && digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
            && let Ok(v) = i64::from_str_radix(digits, 8)
        {
            return Value::Int(if neg { -v } else { v });
        }
        return match s.parse::<i64>() {
            Ok(v) => Value::Int(v),
            // Too big for i64: keep the digits rather than lose precision.
            Err(_) => Value::Str(s.to_string()),
        };
    }
    if is_yaml_float(digits)
        && let Ok(v) = s.parse::<f64>()
    {
        return Value::Float(v);
    }
    Value::Str(s.to_string())
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_yaml_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let fs = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = i - fs;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let es = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == es {
            return false;
        }
    }
    i == b.len()
}

impl Builder {
    /// The key path of `key` inside the collection currently being built.
    fn key_path(&self, key: &str) -> String {
        let mut out = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Map { key: Some((k, _)), .. } => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(&k.scalar_text().unwrap_or_default());
                }
                Frame::Seq { items, .. } => out.push_str(&format!("[{}]", items.len())),
                Frame::Map { key: None, .. } => {}
            }
        }
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(key);
        out
    }

    fn location(&self, m: &Marker) -> Location {
        Location {
            file: self.file.clone(),
            line: m.line() as u32,
            col: m.col() as u32 + 1,
        }
    }

    fn fail(&mut self, err: LoadError) {
        if self.error.is_none() {
            self.error = Some(err);
        }
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor > 0 {
            let size = node_count(node);
            self.anchors.insert(anchor, (node.clone(), size));
        }
    }

    /// Adds a finished node to the enclosing collection (or as a document).
    fn push(&mut self, node: Node, plain_key: bool) {
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some((node, plain_key)),
                Some((k, plain)) => entries.push((k, plain, node)),
            },
        }
    }

    fn finish_map(&mut self, entries: Vec<(Node, bool, Node)>, loc: Location, tag: Tag) -> Option<Node> {
        let mut map = Map::new();
        let mut key_lines: HashMap<String, u32> = HashMap::new();
        let mut merged: Vec<Node> = Vec::new();
        for (k, plain, v) in entries {
            let key = match &k.value {
                Value::Str(s) => s.clone(),
                Value::Null => "null".to_string(),
                Value::Seq(_) | Value::Map(_) => {
                    self.fail(LoadError::invalid(k.loc.clone(), "", "mapping keys must be scalars"));
                    return None;
                }
                _ => k.scalar_text().unwrap_or_default(),
            };
            if plain && key == "<<" {
                match v.value {
                    Value::Map(_) => merged.push(v),
                    Value::Seq(items) => {
                        for item in items {
                            if item.as_map().is_none() {
                                self.fail(LoadError::invalid(
                                    item.loc.clone(),
                                    "<<",
                                    "merge key values must be mappings",
                                ));
                                return None;
                            }
                            merged.push(item);
                        }
                    }
                    _ => {
                        self.fail(LoadError::invalid(
                            v.loc.clone(),
                            "<<",
                            "merge key value must be a mapping or a list of mappings",
                        ));
                        return None;
                    }
                }
                continue;
            }
            let line = k.loc.as_ref().map_or(0, |l| l.line);
            if let Some(prev) = key_lines.get(&key) {
                let path = self.key_path(&key);
                self.fail(LoadError::invalid(
                    k.loc.clone(),
                    path,
                    format!("mapping key {key:?} already defined at line {prev}"),
                ));
                return None;
            }
            key_lines.insert(key.clone(), line);
            map.insert(key, v);
        }
        for m in merged {
            if let Value::Map(src) = m.value {
                for (k, v) in src {
                    map.entry(k).or_insert(v);
                }
            }
        }
        Some(Node {
            value: Value::Map(map),
            loc: Some(loc),
            tag,
        })
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let loc = self.location(&mark);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let ctag = compose_tag(&tag);
                let value = match (&style, &tag) {
                    (_, Some(t)) if t.handle == "tag:yaml.org,2002:" && t.suffix == "str" => Value::Str(text),
                    (TScalarStyle::Plain, _) => resolve_plain(&text),
                    _ => Value::Str(text),
                };
                // `!reset` on an empty scalar means "remove", and carries no value.
                let node = Node {
                    value,
                    loc: Some(loc),
                    tag: ctag,
                };
                self.remember(anchor, &node);
                let plain = style == TScalarStyle::Plain;
                self.push(node, plain);
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some((node, size)) => {
                    self.alias_nodes += size;
                    if self.alias_nodes > MAX_ALIAS_NODES {
                        self.fail(LoadError::invalid(
                            Some(loc),
                            "",
                            "document too large: alias expansion exceeds 1000000 nodes",
                        ));
                        return;
                    }
                    let node = node.clone();
                    self.push(node, false);
                }
                None => self.fail(LoadError::Syntax {
                    location: loc,
                    message: "unknown anchor".into(),
                }),
            },
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) if self.stack.len() >= MAX_DEPTH => {
                let _ = (anchor, tag);
                self.fail(LoadError::invalid(
                    Some(loc),
                    "",
                    format!("document nested deeper than {MAX_DEPTH} levels"),
                ));
            }
            Event::SequenceStart(anchor, tag) => {
                self.stack.push(Frame::Seq {
                    items: Vec::new(),
                    anchor,
                    tag: compose_tag(&tag),
                    loc,
                });
            }
            Event::MappingStart(anchor, tag) => {
                self.stack.push(Frame::Map {
                    entries: Vec::new(),
                    key: None,
                    anchor,
                    tag: compose_tag(&tag),
                    loc,
                });
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq {
                    items,
                    anchor,
                    tag,
                    loc,
                }) = self.stack.pop()
                {
                    let node = Node {
                        value: Value::Seq(items),
                        loc: Some(loc),
                        tag,
                    };
                    self.remember(anchor, &node);
                    self.push(node, false);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    entries,
                    anchor,
                    tag,
                    loc,
                    ..
                }) = self.stack.pop()
                    && let Some(node) = self.finish_map(entries, loc, tag)
                {
                    self.remember(anchor, &node);
                    self.push(node, false);
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str) -> Node {
        let file: Arc<str> = Arc::from("t.yaml");
        parse(src, &file).expect("parses").remove(0)
    }

    #[test]
    fn plain_scalars_resolve_like_yaml_1_2() {
        let n = one(
            "a: 1\nb: 1.5\nc: true\nd: ~\ne: '1'\nf: 8080:80\ng: yes\nh: 0x1f\ni: 1e3\nj: 0755\nk: 12345678901234567890\n",
        );
        let j = n.to_json();
        assert_eq!(j["a"], 1);
        assert_eq!(j["b"], 1.5);
        assert_eq!(j["c"], true);
        assert!(j["d"].is_null());
        assert_eq!(j["e"], "1");
        assert_eq!(j["f"], "8080:80");
        assert_eq!(j["g"], "yes");
        assert_eq!(j["h"], 31);
        assert_eq!(j["i"], 1000.0);
        assert_eq!(j["j"], 493);
        assert_eq!(j["k"], "12345678901234567890");
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let n = one("x: &a {p: 1, q: 2}\ny:\n  <<: *a\n  q: 3\nz: *a\n");
        let j = n.to_json();
        assert_eq!(j["y"], serde_json::json!({"q": 3, "p": 1}));
        assert_eq!(j["z"], serde_json::json!({"p": 1, "q": 2}));
    }

    #[test]
    fn merge_key_list_prefers_earlier_maps() {
        let n = one("a: &a {k: 1}\nb: &b {k: 2, l: 2}\nc:\n  <<: [*a, *b]\n");
        assert_eq!(n.to_json()["c"], serde_json::json!({"k": 1, "l": 2}));
    }

    #[test]
    fn tags_are_recorded() {
        let n = one("a: !reset []\nb: !override {x: 1}\n");
        assert_eq!(n.get("a").map(|n| n.tag), Some(Tag::Reset));
        assert_eq!(n.get("b").map(|n| n.tag), Some(Tag::Override));
    }

    #[test]
    fn duplicate_keys_are_errors_with_lines() {
        let file: Arc<str> = Arc::from("t.yaml");
        let err = parse("a: 1\nb: 2\na: 3\n", &file).unwrap_err().to_string();
        assert_eq!(err, "t.yaml:3:1: a: mapping key \"a\" already defined at line 1");
        let err = parse("services:\n  web:\n    image: a\n  web:\n    image: b\n", &file)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "t.yaml:4:3: services.web: mapping key \"web\" already defined at line 2"
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let file: Arc<str> = Arc::from("t.yaml");
        let err = parse("a: [1, 2\nb: 3\n", &file).unwrap_err().to_string();
        assert!(err.starts_with("t.yaml:"), "{err}");
        assert!(err.contains("yaml syntax error"), "{err}");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            src.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let file: Arc<str> = Arc::from("t.yaml");
        let err = parse(&src, &file).unwrap_err().to_string();
        assert!(err.contains("alias expansion"), "{err}");
    }

    #[test]
    fn key_paths_from_pointers() {
        let n = one("services:\n  web:\n    ports: [a, b]\n");
        assert_eq!(
            pointer_to_key_path(&n, "/services/web/ports/1"),
            "services.web.ports[1]"
        );
        assert_eq!(
            n.locate("/services/web/ports/1").loc.as_ref().map(|l| (l.line, l.col)),
            Some((3, 16))
        );
    }
}
