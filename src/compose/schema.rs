//! Validation of each compose file against the official compose-spec JSON schema (vendored in `schema/`).

use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::Validator;

use super::error::LoadError;
use super::yaml::{pointer_to_key_path, Node};

static SCHEMA_SRC: &str = include_str!("schema/compose-spec.json");

fn validator() -> Result<&'static Validator, LoadError> {
    static VALIDATOR: OnceLock<Result<Validator, String>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            let schema: serde_json::Value = serde_json::from_str(SCHEMA_SRC).map_err(|e| e.to_string())?;
            jsonschema::draft7::new(&schema).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| LoadError::invalid(None, "", format!("internal error: the embedded compose schema does not compile: {e}")))
}

/// Checks one file's tree against the schema and reports the first problem with its place and key path.
pub fn validate(root: &Node) -> Result<(), LoadError> {
    let v = validator()?;
    let json = root.to_json();
    let Some(first) = v.iter_errors(&json).next() else { return Ok(()) };
    let pointer = first.instance_path().as_str().to_string();
    let target = root.locate(&pointer);
    let mut path = pointer_to_key_path(root, &pointer);
    let (loc, message) = match first.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let name = unexpected.first().cloned().unwrap_or_default();
            let loc = target.get(&name).and_then(|n| n.loc.clone()).or_else(|| target.loc.clone());
            let what = if path.is_empty() { "top-level property" } else { "property" };
            (loc, format!("additional {what} {name:?} is not allowed"))
        }
        ValidationErrorKind::Type { kind } => {
            let types = match kind {
                jsonschema::error::TypeKind::Single(t) => t.to_string(),
                jsonschema::error::TypeKind::Multiple(ts) => {
                    ts.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" or ")
                }
            };
            (target.loc.clone(), format!("must be a {types}, not {}", target.type_name()))
        }
        ValidationErrorKind::OneOfNotValid { .. } | ValidationErrorKind::AnyOf { .. } => {
            (target.loc.clone(), format!("invalid value {}: it matches none of the allowed forms", preview(&first.instance().to_string())))
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => {
            (target.loc.clone(), format!("ambiguous value {}: it matches several allowed forms", preview(&first.instance().to_string())))
        }
        ValidationErrorKind::Pattern { pattern } => {
            (target.loc.clone(), format!("{} does not match the pattern {pattern:?}", preview(&first.instance().to_string())))
        }
        ValidationErrorKind::PropertyNames { .. } => (target.loc.clone(), "invalid property name".to_string()),
        _ => {
            let text = first.to_string();
            let mut chars = text.chars();
            let lowered = match chars.next() {
                Some(c) => c.to_lowercase().collect::<String>() + chars.as_str(),
                None => text,
            };
            (target.loc.clone(), lowered)
        }
    };
    if path.is_empty() {
        path.clear();
    }
    Err(LoadError::invalid(loc, path, message))
}

fn preview(s: &str) -> String {
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s.to_string()
    }
}
