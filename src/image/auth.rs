//! Registry credentials, kept where Docker keeps them: the `auths` map of `$DOCKER_CONFIG/config.json`
//! (default `~/.docker/config.json`), each entry a base64 `user:password`. Berth reads credentials Docker
//! stored there and writes its own in the same form, leaving every other key of the file alone.
//! Credential helpers (`credsStore`, `credHelpers`) are not run.

use std::path::PathBuf;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::reference::DOCKER_HUB;
use super::registry::Credentials;
use super::{ImageError, Result};

/// The key Docker files Docker Hub's credentials under.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// The Docker client config file.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_location() -> DockerConfig {
        let dir = match std::env::var_os("DOCKER_CONFIG") {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".docker"),
        };
        DockerConfig {
            path: dir.join("config.json"),
        }
    }

    /// A config file at `path`.
    pub fn at(path: PathBuf) -> DockerConfig {
        DockerConfig { path }
    }

    /// The file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn read(&self) -> Result<Map<String, Value>> {
        match std::fs::read(&self.path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Map::new()),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ImageError::Malformed {
                what: self.path.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
            Err(e) => Err(ImageError::io("read", &self.path, e)),
        }
    }

    /// The stored credentials for a registry, if any.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        let config = self.read()?;
        let Some(auths) = config.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        let entry = keys(registry).iter().find_map(|k| auths.get(k.as_str()));
        let Some(entry) = entry.and_then(Value::as_object) else {
            return Ok(None);
        };
        if let Some(auth) = entry.get("auth").and_then(Value::as_str).filter(|a| !a.is_empty()) {
            let decoded =
                base64::engine::general_purpose::STANDARD
                    .decode(auth)
                    .map_err(|e| ImageError::Malformed {
                        what: format!("{}: auths.{registry}.auth", self.path.display()),
                        reason: e.to_string(),
                    })?;
            let text = String::from_utf8_lossy(&decoded);
            let (u, p) = text.split_once(':').ok_or_else(|| ImageError::Malformed {
                what: format!("{}: auths.{registry}.auth", self.path.display()),
                reason: "expected base64 of user:password".into(),
            })?;
            return Ok(Some(Credentials {
                username: u.into(),
                password: p.into(),
            }));
        }
        match (
            entry.get("username").and_then(Value::as_str),
            entry.get("password").and_then(Value::as_str),
        ) {
            (Some(u), Some(p)) => Ok(Some(Credentials {
                username: u.into(),
                password: p.into(),
            })),
            _ => Ok(None),
        }
    }

    /// Stores credentials for a registry (the file is created with mode 0600).
    pub fn store(&self, registry: &str, credentials: &Credentials) -> Result<()> {
        let mut config = self.read()?;
        let auths = config.entry("auths").or_insert_with(|| Value::Object(Map::new()));
        let Some(auths) = auths.as_object_mut() else {
            return Err(ImageError::Malformed {
                what: self.path.display().to_string(),
                reason: "\"auths\" is not an object".into(),
            });
        };
        let raw = format!("{}:{}", credentials.username, credentials.password);
        let mut entry = Map::new();
        entry.insert(
            "auth".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
        );
        auths.insert(keys(registry)[0].clone(), Value::Object(entry));
        self.write(&config)
    }

    /// Removes a registry's credentials; false when there were none.
    pub fn remove(&self, registry: &str) -> Result<bool> {
        let mut config = self.read()?;
        let Some(auths) = config.get_mut("auths").and_then(Value::as_object_mut) else {
            return Ok(false);
        };
        let mut removed = false;
        for k in keys(registry) {
            removed |= auths.remove(&k).is_some();
        }
        if removed {
            self.write(&config)?;
        }
        Ok(removed)
    }

    fn write(&self, config: &Map<String, Value>) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if let Some(dir) = self.path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| ImageError::io("create", dir, e))?;
        }
        let body = serde_json::to_vec_pretty(config).expect("a JSON map serialises");
        let tmp = crate::fsutil::sibling_temp(&self.path);
        let result = std::fs::write(&tmp, &body)
            .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(ImageError::io("write", &self.path, e));
        }
        Ok(())
    }
}

/// The keys a registry's entry may be filed under, the one berth writes first.
fn keys(registry: &str) -> Vec<String> {
    if registry == DOCKER_HUB || registry == "index.docker.io" {
        vec![DOCKER_HUB_KEY.into(), "index.docker.io".into(), DOCKER_HUB.into()]
    } else {
        vec![
            registry.into(),
            format!("https://{registry}"),
            format!("http://{registry}"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_and_other_keys_survive() {
        let dir = std::env::temp_dir().join(format!("berth-auth-{}", crate::fsutil::random_hex(8)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}},"psFormat":"x"}"#,
        )
        .unwrap();
        let c = DockerConfig::at(path.clone());
        assert_eq!(
            c.credentials("docker.io").unwrap(),
            Some(Credentials {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(c.credentials("127.0.0.1:5000").unwrap(), None);
        let creds = Credentials {
            username: "alice".into(),
            password: "s3:cret".into(),
        };
        c.store("127.0.0.1:5000", &creds).unwrap();
        assert_eq!(c.credentials("127.0.0.1:5000").unwrap(), Some(creds));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("psFormat"), "{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(c.remove("127.0.0.1:5000").unwrap());
        assert!(!c.remove("127.0.0.1:5000").unwrap());
        assert_eq!(c.credentials("127.0.0.1:5000").unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
