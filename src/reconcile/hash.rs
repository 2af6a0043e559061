//! The configuration hash of a service: what decides whether a container must be recreated. Like
//! Compose's, it covers the service's canonical configuration except what does not change a
//! container: how its image is made (`build`, `pull_policy`), how many there are (`scale`,
//! `deploy.replicas`), and the order and selection around it (`depends_on`, `profiles`).

use crate::image::reference::Digest;
use serde_json::Value;

/// Keys of a service left out of its hash.
const IGNORED: &[&str] = &["build", "pull_policy", "scale", "depends_on", "profiles"];

/// The hash (64 hex digits) of a service's canonical JSON.
pub fn config_hash(service: &Value) -> String {
    let mut v = service.clone();
    if let Some(map) = v.as_object_mut() {
        for k in IGNORED {
            map.remove(*k);
        }
        if let Some(deploy) = map.get_mut("deploy").and_then(Value::as_object_mut) {
            deploy.remove("replicas");
        }
    }
    let bytes = serde_json::to_vec(&v).unwrap_or_default();
    Digest::of(&bytes).hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_fields_that_change_a_container_change_the_hash() {
        let base = json!({"image": "nginx", "environment": {"A": "1"}, "deploy": {"replicas": 1}});
        let h = config_hash(&base);
        assert_eq!(h.len(), 64);
        let scaled = json!({"image": "nginx", "environment": {"A": "1"}, "deploy": {"replicas": 5}, "scale": 5});
        assert_eq!(config_hash(&scaled), h);
        let deps = json!({"image": "nginx", "environment": {"A": "1"}, "deploy": {"replicas": 1},
            "depends_on": {"db": {"condition": "service_started"}}, "build": {"context": "."}, "profiles": ["x"]});
        assert_eq!(config_hash(&deps), h);
        let env = json!({"image": "nginx", "environment": {"A": "2"}, "deploy": {"replicas": 1}});
        assert_ne!(config_hash(&env), h);
    }
}
