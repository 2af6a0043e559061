//! Fuzzes the in-memory text parsers of the compose layer, no file system involved:
//!
//! * `yaml::parse` (anchors, aliases, `<<` merge keys, `!reset`/`!override`, limits), then the
//!   node helpers: `to_json`, `from_json`, `locate`, `pointer_to_key_path`, `to_yaml_string`;
//! * `dotenv::parse` on the same text;
//! * `interpolate::interpolate` on the whole text and on each of its first lines;
//! * the value grammars in `units` (durations, byte sizes, port specs, shell words) on each of the
//!   first lines.
//!
//! Input: arbitrary bytes; anything that is not UTF-8 is skipped. Errors are fine; panics, hangs
//! and runaway memory are not.

#![no_main]

use std::sync::{Arc, OnceLock};

use berth::compose::{dotenv, interpolate, units, yaml};
use indexmap::IndexMap;
use libfuzzer_sys::fuzz_target;

fn env() -> &'static IndexMap<String, String> {
    static E: OnceLock<IndexMap<String, String>> = OnceLock::new();
    E.get_or_init(|| {
        [
            ("NAME", "world"),
            ("TAG", "1.2.3"),
            ("PORT", "8080"),
            ("EMPTY", ""),
            ("DOLLAR", "$x"),
            ("BRACE", "${NAME}"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    })
}

/// Lines handed to the single-value parsers; enough to reach them without making runs slow.
const MAX_LINES: usize = 32;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    let env = env();
    let lookup = |k: &str| env.get(k).cloned();

    let file: Arc<str> = Arc::from("fuzz.yaml");
    if let Ok(docs) = yaml::parse(src, &file) {
        for doc in &docs {
            let json = doc.to_json();
            let back = yaml::Node::from_json(&json);
            let _ = back.to_json();
            let _ = yaml::to_yaml_string(&json);
            let _ = doc.type_name();
            let _ = doc.scalar_text();
            // Pointers built from the input exercise locate/pointer_to_key_path on odd segments.
            for line in src.lines().take(4) {
                let pointer = format!("/{line}");
                let _ = doc.locate(&pointer);
                let _ = yaml::pointer_to_key_path(doc, &pointer);
            }
            if let Some(m) = doc.as_map() {
                for (k, v) in m.iter().take(8) {
                    let _ = yaml::pointer_to_key_path(doc, &format!("/{k}/0"));
                    let _ = v.as_seq().map(Vec::len);
                }
            }
        }
    }

    let _ = dotenv::parse(src, &lookup);
    let _ = interpolate::interpolate(src, &lookup);

    for line in src.lines().take(MAX_LINES) {
        let _ = interpolate::interpolate(line, &lookup);
        let _ = units::parse_duration(line);
        let _ = units::normalize_duration(line);
        let _ = units::parse_bytes(line);
        let _ = units::parse_port(line);
        let _ = units::shell_split(line);
    }
});
