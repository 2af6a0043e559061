//! Image references and digests, by Docker's rules: `ubuntu` is `docker.io/library/ubuntu:latest`, a
//! first component with a `.` or `:` (or `localhost`, or an upper-case letter) is a registry host, and a
//! reference may carry a tag, a digest, or both.

use std::fmt;

use sha2::{Digest as _, Sha256};

use super::{ImageError, Result};

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// The tag a reference without tag or digest gets.
pub const DEFAULT_TAG: &str = "latest";
/// Longest repository name (registry plus path) Docker accepts.
const MAX_NAME: usize = 255;
/// Longest tag Docker accepts.
const MAX_TAG: usize = 128;

/// A content digest, `sha256:<64 lower-case hex>` (the only algorithm berth verifies).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<hex>`.
    pub fn parse(s: &str) -> Result<Digest> {
        let bad = |reason: &str| ImageError::Digest {
            digest: s.to_string(),
            reason: reason.to_string(),
        };
        let (algorithm, hex) = s.split_once(':').ok_or_else(|| bad("expected algorithm:hex"))?;
        if algorithm != "sha256" {
            return Err(bad("only sha256 digests are supported"));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("a sha256 digest has 64 lower-case hex digits"));
        }
        Ok(Digest(s.to_string()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest a finished hasher computed.
    pub fn from_hasher(hasher: Sha256) -> Digest {
        let hash = hasher.finalize();
        let mut s = String::with_capacity(71);
        s.push_str("sha256:");
        for b in hash.iter() {
            s.push_str(&format!("{b:02x}"));
        }
        Digest(s)
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The first 12 hex digits, as Docker shows ids.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }

    /// The whole `sha256:<hex>` text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = ImageError;
    fn try_from(s: String) -> Result<Digest> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with port if any (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path (`library/busybox`).
    pub repository: String,
    /// Tag; `None` when only a digest was given.
    pub tag: Option<String>,
    /// Digest, when pinned.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses a reference the way `docker pull` does, adding `docker.io`, `library/` and `:latest` where
    /// Docker would.
    pub fn parse(input: &str) -> Result<Reference> {
        let bad = |reason: &str| ImageError::Reference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("empty reference"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d)?)),
            None => (input, None),
        };
        // A tag follows the last ':' that is after the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(bad)?;
        }
        if name.is_empty() {
            return Err(bad("empty repository name"));
        }
        let (registry, path) = split_registry(name);
        if let Some(registry) = &registry {
            check_host(registry).map_err(bad)?;
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        for component in path.split('/') {
            check_component(component).map_err(bad)?;
        }
        let registry = match registry.as_deref() {
            None | Some("index.docker.io") => DOCKER_HUB.to_string(),
            Some(r) => r.to_string(),
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        if registry.len() + 1 + repository.len() > MAX_NAME {
            return Err(bad("repository name must not be longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, fully qualified.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The repository as Docker shows it: without `docker.io/` and `library/`.
    pub fn familiar_name(&self) -> String {
        familiar(&self.registry, &self.repository)
    }

    /// `name:tag` (fully qualified), or `None` for a digest-only reference.
    pub fn tagged_name(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn registry_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }
}

impl fmt::Display for Reference {
    /// The familiar form: `busybox:latest`, `127.0.0.1:5000/app:v1`, `busybox@sha256:…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.familiar_name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// The familiar form of a fully qualified `registry/repository` name (`docker.io/library/x` → `x`).
pub fn familiar(registry: &str, repository: &str) -> String {
    if registry == DOCKER_HUB {
        repository.strip_prefix("library/").unwrap_or(repository).to_string()
    } else {
        format!("{registry}/{repository}")
    }
}

/// Splits off the registry host: the first component is one when it has a `.` or `:`, is `localhost`, or
/// has an upper-case letter (Docker's rule).
fn split_registry(name: &str) -> (Option<String>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first.to_string()), rest)
        }
        _ => (None, name),
    }
}

fn check_tag(tag: &str) -> std::result::Result<(), &'static str> {
    let ok = !tag.is_empty()
        && tag.len() <= MAX_TAG
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err("a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'")
    }
}

fn check_host(host: &str) -> std::result::Result<(), &'static str> {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.ends_with(']') || host.starts_with('[') => (n, Some(p)),
        _ => (host, None),
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("the registry port must be a number");
    }
    if let Some(v6) = name.strip_prefix('[') {
        return if v6.ends_with(']') && v6[..v6.len() - 1].parse::<std::net::Ipv6Addr>().is_ok() {
            Ok(())
        } else {
            Err("invalid IPv6 registry address")
        };
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err("invalid registry host name")
    }
}

/// A path component: `[a-z0-9]+` runs joined by `.`, `_`, `__` or dashes.
fn check_component(c: &str) -> std::result::Result<(), &'static str> {
    const MSG: &str = "a repository path component is lower-case letters and digits, joined by '.', '_', '__' or '-'";
    let bytes = c.as_bytes();
    if bytes.is_empty() || !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return Err(MSG);
    }
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_lowercase() || bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !bytes[i].is_ascii_alphanumeric() {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !ok {
            return Err(MSG);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> String {
        let r = Reference::parse(s).unwrap();
        let mut out = r.name();
        if let Some(t) = &r.tag {
            out.push(':');
            out.push_str(t);
        }
        if let Some(d) = &r.digest {
            out.push('@');
            out.push_str(d.as_str());
        }
        out
    }

    const D: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn docker_hub_names_are_normalised() {
        assert_eq!(full("ubuntu"), "docker.io/library/ubuntu:latest");
        assert_eq!(full("ubuntu:22.04"), "docker.io/library/ubuntu:22.04");
        assert_eq!(full("user/app"), "docker.io/user/app:latest");
        assert_eq!(full("docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(full("index.docker.io/busybox:1"), "docker.io/library/busybox:1");
        assert_eq!(full("a/b/c"), "docker.io/a/b/c:latest");
    }

    #[test]
    fn registry_hosts_are_recognised() {
        assert_eq!(full("localhost/app"), "localhost/app:latest");
        assert_eq!(full("localhost:5000/app:v1"), "localhost:5000/app:v1");
        assert_eq!(full("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b:latest");
        assert_eq!(full("ghcr.io/o/r:t"), "ghcr.io/o/r:t");
        assert_eq!(full("Registry/app"), "Registry/app:latest");
        assert_eq!(full("[::1]:5000/app"), "[::1]:5000/app:latest");
    }

    #[test]
    fn digests_with_and_without_tags() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.registry_reference(), D);
        assert_eq!(r.to_string(), format!("busybox@{D}"));
        let r = Reference::parse(&format!("127.0.0.1:5000/app:v2@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert_eq!(r.registry_reference(), D);
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/app:v2@{D}"));
    }

    #[test]
    fn familiar_names() {
        assert_eq!(
            Reference::parse("docker.io/library/busybox").unwrap().to_string(),
            "busybox:latest"
        );
        assert_eq!(Reference::parse("user/app:1").unwrap().to_string(), "user/app:1");
        assert_eq!(
            Reference::parse("localhost:5000/x").unwrap().familiar_name(),
            "localhost:5000/x"
        );
    }

    #[test]
    fn bad_references_are_rejected_with_a_reason() {
        for (input, reason) in [
            ("", "empty"),
            ("Ubuntu", "lowercase"),
            ("docker.io/Library/x", "lowercase"),
            ("a//b", "component"),
            ("-a", "component"),
            ("a-", "component"),
            ("a..b", "component"),
            ("a___b", "component"),
            ("a:", "tag"),
            ("a:-x", "tag"),
            ("a:b/c", "port"),
            ("host:port/a", "port"),
            ("a@sha256:12", "64"),
            ("a@md5:00", "sha256"),
            (":tag", "empty"),
        ] {
            let e = Reference::parse(input).unwrap_err().to_string();
            assert!(e.contains(reason), "{input:?}: {e}");
        }
        assert!(Reference::parse(&format!("a:{}", "t".repeat(129))).is_err());
        assert!(Reference::parse(&format!("example.com/{}", "a".repeat(250))).is_err());
    }

    #[test]
    fn separators_inside_components() {
        for ok in ["a.b", "a_b", "a__b", "a-b", "a---b", "a1/b2.c_d"] {
            Reference::parse(ok).unwrap();
        }
    }

    #[test]
    fn digest_of_bytes() {
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::of(b"").short(), "e3b0c44298fc");
        assert!(Digest::parse("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855").is_err());
    }
}
