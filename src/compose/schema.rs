//! Validation of each compose file against the official compose-spec JSON schema (vendored in `schema/`).

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};

use super::error::LoadError;
use super::yaml::{Node, Tag, Value, pointer_to_key_path};

static SCHEMA_SRC: &str = include_str!("schema/compose-spec.json");

fn validator() -> Result<&'static Validator, LoadError> {
    static VALIDATOR: OnceLock<Result<Validator, String>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            let schema: serde_json::Value = serde_json::from_str(SCHEMA_SRC).map_err(|e| e.to_string())?;
            jsonschema::draft7::new(&schema).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| {
            LoadError::invalid(
                None,
                "",
                format!("internal error: the embedded compose schema does not compile: {e}"),
            )
        })
}

/// Checks one file's tree against the schema and reports the first problem with its place and key path.
pub fn validate(root: &Node) -> Result<(), LoadError> {
    let v = validator()?;
    let json = schema_view(root);
    // Compose tolerates repeated list items (it de-duplicates them later), so `uniqueItems` is not enforced.
    let Some(first) = v
        .iter_errors(&json)
        .find(|e| !matches!(e.kind(), ValidationErrorKind::UniqueItems))
    else {
        return Ok(());
    };
    Err(describe(root, most_specific(&first)))
}

/// The JSON the schema sees: entries tagged `!reset` are left out, since they only remove things.
fn schema_view(node: &Node) -> serde_json::Value {
    match &node.value {
        Value::Map(m) => serde_json::Value::Object(
            m.iter()
                .filter(|(_, v)| v.tag != Tag::Reset)
                .map(|(k, v)| (k.clone(), schema_view(v)))
                .collect(),
        ),
        Value::Seq(items) => serde_json::Value::Array(items.iter().map(schema_view).collect()),
        _ => node.to_json(),
    }
}

/// For `oneOf`/`anyOf` failures, the error from the alternative that got furthest into the value:
/// `command: [sleep, 10]` is best explained by "command[1] must be a string", not "matches no form".
fn most_specific<'a>(err: &'a ValidationError<'a>) -> &'a ValidationError<'a> {
    let context = match err.kind() {
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => context,
        _ => return err,
    };
    let depth = |e: &ValidationError| e.instance_path().as_str().matches('/').count();
    // Alternatives that fail only on the value's own type are not what the user meant.
    let best = context
        .iter()
        .flatten()
        .filter(|e| !(matches!(e.kind(), ValidationErrorKind::Type { .. }) && depth(e) == depth(err)))
        .max_by_key(|e| depth(e));
    match best {
        Some(e) => most_specific(e),
        None => err,
    }
}

fn type_word(t: &str) -> &str {
    match t {
        "object" => "mapping",
        "array" => "list",
        other => other,
    }
}

fn describe(root: &Node, err: &ValidationError) -> LoadError {
    let pointer = err.instance_path().as_str().to_string();
    let target = root.locate(&pointer);
    let path = pointer_to_key_path(root, &pointer);
    let (loc, message) = match err.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let name = unexpected.first().cloned().unwrap_or_default();
            let loc = target
                .get(&name)
                .and_then(|n| n.loc.clone())
                .or_else(|| target.loc.clone());
            let what = if path.is_empty() {
                "top-level property"
            } else {
                "property"
            };
            (loc, format!("additional {what} {name:?} is not allowed"))
        }
        ValidationErrorKind::Type { kind } => {
            let types = match kind {
                TypeKind::Single(t) => type_word(&t.to_string()).to_string(),
                TypeKind::Multiple(ts) => ts
                    .iter()
                    .map(|t| type_word(&t.to_string()).to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            let actual = type_word(target.type_name());
            (target.loc.clone(), format!("must be a {types}, not {actual}"))
        }
        ValidationErrorKind::Required { property } => (target.loc.clone(), format!("missing property {}", property)),
        ValidationErrorKind::OneOfNotValid { .. } | ValidationErrorKind::AnyOf { .. } => (
            target.loc.clone(),
            format!(
                "invalid value {}: it matches none of the allowed forms",
                preview(&err.instance().to_string())
            ),
        ),
        ValidationErrorKind::OneOfMultipleValid { .. } => (
            target.loc.clone(),
            format!(
                "ambiguous value {}: it matches several allowed forms",
                preview(&err.instance().to_string())
            ),
        ),
        ValidationErrorKind::Pattern { pattern } => (
            target.loc.clone(),
            format!(
                "{} does not match the pattern {pattern:?}",
                preview(&err.instance().to_string())
            ),
        ),
        ValidationErrorKind::Enum { options } => (
            target.loc.clone(),
            format!("{} is not one of {}", preview(&err.instance().to_string()), options),
        ),
        _ => {
            let text = err.to_string();
            let mut chars = text.chars();
            let lowered = match chars.next() {
                Some(c) => c.to_lowercase().collect::<String>() + chars.as_str(),
                None => text,
            };
            (target.loc.clone(), lowered)
        }
    };
    LoadError::invalid(loc, path, message)
}

fn preview(s: &str) -> String {
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s.to_string()
    }
}
