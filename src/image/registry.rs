//! A client of the OCI distribution API (v2): manifests and blobs by digest, blob uploads and mounts,
//! with the registry's auth dance (anonymous, basic, or a bearer token fetched from the realm the
//! registry names). Plain HTTP is used for loopback registries and for those configured insecure.

use std::io::Read;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use ureq::http::Response;

use super::oci;
use super::reference::Digest;
use super::{ImageError, Result};

/// An HTTP agent that looks host names up with [`crate::network::lookup`] instead of the C
/// library's `getaddrinfo`, which a static berth must not call (see that module).
pub fn http_agent(config: ureq::config::Config) -> ureq::Agent {
    ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        HostLookup,
    )
}

/// [`http_agent`]'s resolver.
#[derive(Debug)]
struct HostLookup;

impl ureq::unversioned::resolver::Resolver for HostLookup {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> std::result::Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let bad = || ureq::Error::BadUri(format!("{uri}: no host or port"));
        let authority = uri.authority().ok_or_else(bad)?;
        let port = match (authority.port_u16(), uri.scheme_str()) {
            (Some(port), _) => port,
            (None, Some("http")) => 80,
            (None, Some("https")) => 443,
            _ => return Err(bad()),
        };
        let deadline = (!timeout.after.is_not_happening()).then(|| std::time::Instant::now() + *timeout.after);
        let addrs = crate::network::lookup::lookup_host(authority.host(), deadline)
            .map_err(|e| ureq::Error::Io(std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string())))?;
        let mut out = self.empty();
        let family = config.ip_family();
        for addr in family.keep_wanted(addrs.into_iter().map(|ip| std::net::SocketAddr::new(ip, port))) {
            if out.try_push(addr).is_err() {
                break;
            }
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(out)
    }
}

/// A user name and password (or token) for a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or personal access token.
    pub password: String,
}

impl Credentials {
    fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// How to reach registries that are not loopback: hosts listed here are spoken to over plain HTTP.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (host or host:port) allowed over plain HTTP.
    pub insecure: Vec<String>,
}

impl RegistryOptions {
    /// Reads `BERTH_INSECURE_REGISTRIES` (comma-separated) and adds `extra`.
    pub fn from_env(extra: &[String]) -> RegistryOptions {
        let mut insecure: Vec<String> = std::env::var("BERTH_INSECURE_REGISTRIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        insecure.extend(extra.iter().cloned());
        RegistryOptions { insecure }
    }

    /// Whether `registry` is spoken to over plain HTTP: loopback hosts always are, as in Docker.
    pub fn plain_http(&self, registry: &str) -> bool {
        let host = host_of(registry);
        let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        loopback || self.insecure.iter().any(|i| i == registry || i == host)
    }
}

/// The host part of `host[:port]` (brackets of an IPv6 address removed).
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

/// The registry Docker Hub's API lives on.
fn api_host(registry: &str) -> &str {
    if registry == super::reference::DOCKER_HUB {
        "registry-1.docker.io"
    } else {
        registry
    }
}

/// A blob upload's source.
pub enum Upload<'a> {
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// A file, sent with its length.
    File(&'a std::path::Path),
}

/// A client of one registry, caching the authorization it earned.
pub struct Client {
    registry: String,
    base: String,
    agent: ureq::Agent,
    credentials: Option<Credentials>,
    authorization: Mutex<Option<String>>,
    /// The token scope every request needs, e.g. `repository:app:pull,push`.
    scopes: Vec<String>,
}

/// A fetched manifest: its bytes, media type and digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The document as served.
    pub bytes: Vec<u8>,
    /// Its media type.
    pub media_type: String,
    /// The digest of the bytes.
    pub digest: Digest,
}

/// Largest manifest berth accepts (distribution's own limit is 4 MiB).
const MAX_MANIFEST: u64 = 4 << 20;

impl Client {
    /// A client of `registry` for the given token scopes.
    pub fn new(
        registry: &str,
        credentials: Option<Credentials>,
        options: &RegistryOptions,
        scopes: Vec<String>,
    ) -> Self {
        let scheme = if options.plain_http(registry) { "http" } else { "https" };
        let agent = http_agent(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(30)))
                .timeout_recv_response(Some(Duration::from_secs(120)))
                .max_idle_connections_per_host(16)
                .build(),
        );
        Client {
            registry: registry.to_string(),
            base: format!("{scheme}://{}/v2", api_host(registry)),
            agent,
            credentials,
            authorization: Mutex::new(None),
            scopes,
        }
    }

    /// The registry this client talks to.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn err(&self, message: impl Into<String>) -> ImageError {
        ImageError::Registry {
            registry: self.registry.clone(),
            message: message.into(),
        }
    }

    /// Checks that the registry answers and the credentials are accepted (`GET /v2/`).
    pub fn ping(&self) -> Result<()> {
        let resp = self.send("GET", &format!("{}/", self.base), &[], None)?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            status => Err(self.status_error(resp, status, "checking the registry")),
        }
    }

    /// Fetches a manifest by tag or digest, verifying a digest reference.
    pub fn manifest(&self, repository: &str, reference: &str) -> Result<FetchedManifest> {
        let accept = oci::MANIFEST_TYPES.join(", ");
        let url = format!("{}/{repository}/manifests/{reference}", self.base);
        let resp = self.send("GET", &url, &[("Accept", accept)], None)?;
        if resp.status().as_u16() == 404 {
            return Err(ImageError::NotFound(format!(
                "{}/{repository}:{reference} (manifest unknown)",
                self.registry
            )));
        }
        let resp = self.expect(resp, &[200], "fetching the manifest")?;
        let header = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp
            .into_body()
            .with_config()
            .limit(MAX_MANIFEST)
            .read_to_vec()
            .map_err(|e| self.err(format!("reading the manifest: {e}")))?;
        let digest = Digest::of(&bytes);
        if reference.starts_with("sha256:") && reference != digest.as_str() {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest {repository}@{reference}"),
                expected: reference.to_string(),
                actual: digest.to_string(),
            });
        }
        let media_type = oci::manifest_media_type(&bytes, header.as_deref());
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Streams a blob. The caller verifies its digest while reading it.
    pub fn blob(&self, repository: &str, digest: &Digest) -> Result<(Option<u64>, Box<dyn Read + Send>)> {
        let url = format!("{}/{repository}/blobs/{digest}", self.base);
        let resp = self.send("GET", &url, &[], None)?;
        let resp = self.expect(resp, &[200], &format!("fetching blob {}", digest.short()))?;
        let length = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        Ok((length, Box::new(resp.into_body().into_reader())))
    }

    /// Whether the repository has a blob.
    pub fn has_blob(&self, repository: &str, digest: &Digest) -> Result<bool> {
        let url = format!("{}/{repository}/blobs/{digest}", self.base);
        let resp = self.send("HEAD", &url, &[], None)?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => Err(self.status_error(resp, status, &format!("checking blob {}", digest.short()))),
        }
    }

    /// Asks the registry to mount a blob from another repository; false when it would rather have an
    /// upload.
    pub fn mount_blob(&self, repository: &str, digest: &Digest, from: &str) -> Result<bool> {
        let url = format!("{}/{repository}/blobs/uploads/?mount={digest}&from={from}", self.base);
        let resp = self.send(
            "POST",
            &url,
            &[("Content-Length", "0".into())],
            Some(Upload::Bytes(&[])),
        )?;
        match resp.status().as_u16() {
            201 => Ok(true),
            // 202: the registry opened an upload instead; it expires on its own.
            202 => Ok(false),
            status => Err(self.status_error(resp, status, &format!("mounting blob {}", digest.short()))),
        }
    }

    /// Uploads a blob in one request (POST for a location, then PUT with the digest).
    pub fn upload_blob(&self, repository: &str, digest: &Digest, body: Upload<'_>) -> Result<()> {
        let url = format!("{}/{repository}/blobs/uploads/", self.base);
        let resp = self.send(
            "POST",
            &url,
            &[("Content-Length", "0".into())],
            Some(Upload::Bytes(&[])),
        )?;
        let resp = self.expect(resp, &[202], &format!("starting the upload of {}", digest.short()))?;
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.err("the registry opened an upload without a Location"))?;
        let location = self.absolute(location);
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{sep}digest={digest}");
        let headers = [("Content-Type", "application/octet-stream".to_string())];
        let resp = self.send("PUT", &put, &headers, Some(body))?;
        self.expect(resp, &[201, 204], &format!("uploading blob {}", digest.short()))
            .map(drop)
    }

    /// Puts a manifest under a tag (or digest); returns the digest the registry reports.
    pub fn put_manifest(&self, repository: &str, reference: &str, media_type: &str, bytes: &[u8]) -> Result<Digest> {
        let url = format!("{}/{repository}/manifests/{reference}", self.base);
        let resp = self.send(
            "PUT",
            &url,
            &[("Content-Type", media_type.to_string())],
            Some(Upload::Bytes(bytes)),
        )?;
        self.expect(resp, &[201, 200, 204], "putting the manifest")?;
        Ok(Digest::of(bytes))
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            let origin = self.base.strip_suffix("/v2").unwrap_or(&self.base);
            format!("{origin}{location}")
        }
    }

    /// Sends a request with the cached authorization; on 401 answers the challenge once and retries.
    fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Option<Upload<'_>>,
    ) -> Result<Response<ureq::Body>> {
        let cached = self.authorization.lock().expect("not poisoned").clone();
        let resp = self.send_once(method, url, headers, body.as_ref(), cached.as_deref())?;
        if resp.status().as_u16() != 401 {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let authorization = self.answer(&challenge)?;
        *self.authorization.lock().expect("not poisoned") = Some(authorization.clone());
        let resp = self.send_once(method, url, headers, body.as_ref(), Some(&authorization))?;
        if resp.status().as_u16() == 401 {
            let message = registry_message(resp);
            return Err(self.unauthorized(&message));
        }
        Ok(resp)
    }

    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Option<&Upload<'_>>,
        authorization: Option<&str>,
    ) -> Result<Response<ureq::Body>> {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(url)
            .header("Accept-Encoding", "identity");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(a) = authorization {
            req = req.header("Authorization", a);
        }
        let result = match body {
            None => self.agent.run(req.body(()).map_err(|e| self.err(e.to_string()))?),
            Some(Upload::Bytes(b)) => self
                .agent
                .run(req.body(b.to_vec()).map_err(|e| self.err(e.to_string()))?),
            Some(Upload::File(p)) => {
                let f = std::fs::File::open(p).map_err(|e| ImageError::io("open", *p, e))?;
                let len = f.metadata().map_err(|e| ImageError::io("stat", *p, e))?.len();
                let req = req.header("Content-Length", len.to_string());
                self.agent.run(req.body(f).map_err(|e| self.err(e.to_string()))?)
            }
        };
        result.map_err(|e| self.err(format!("{method} {url}: {e}")))
    }

    /// Turns a `WWW-Authenticate` challenge into an `Authorization` value.
    fn answer(&self, challenge: &str) -> Result<String> {
        let (scheme, params) = parse_challenge(challenge);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => match &self.credentials {
                Some(c) => Ok(c.basic_header()),
                None => Err(self.unauthorized("authentication required")),
            },
            "bearer" => self.fetch_token(&params),
            _ => Err(self.unauthorized(&format!("unsupported authentication challenge {challenge:?}"))),
        }
    }

    fn fetch_token(&self, params: &[(String, String)]) -> Result<String> {
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let realm = get("realm").ok_or_else(|| self.err("bearer challenge without a realm"))?;
        let mut url = format!("{realm}?");
        if let Some(service) = get("service") {
            url.push_str(&format!("service={}&", encode(service)));
        }
        let mut scopes: Vec<String> = self.scopes.clone();
        if let Some(s) = get("scope")
            && !scopes.iter().any(|x| x == s)
        {
            scopes.push(s.to_string());
        }
        for s in &scopes {
            url.push_str(&format!("scope={}&", encode(s)));
        }
        url.pop();
        let mut req = self.agent.get(&url);
        if let Some(c) = &self.credentials {
            req = req.header("Authorization", c.basic_header());
        }
        let resp = req
            .call()
            .map_err(|e| self.err(format!("token request to {realm}: {e}")))?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(self.unauthorized(&registry_message(resp)));
        }
        if status != 200 {
            return Err(self.err(format!("token request to {realm}: status {status}")));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = resp
            .into_body()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| self.err(e.to_string()))?;
        let t: Token = oci::parse_json("token response", &body)?;
        let token = t
            .token
            .or(t.access_token)
            .ok_or_else(|| self.err("token response without a token"))?;
        Ok(format!("Bearer {token}"))
    }

    fn unauthorized(&self, message: &str) -> ImageError {
        let hint = if self.credentials.is_some() {
            "check the user name and password (berth login)"
        } else {
            "log in first: berth login"
        };
        ImageError::Unauthorized {
            registry: self.registry.clone(),
            message: format!("unauthorized: {message}; {hint} {}", self.registry),
        }
    }

    /// The response when its status is one of `ok`, else the registry's error for `doing`.
    fn expect(&self, resp: Response<ureq::Body>, ok: &[u16], doing: &str) -> Result<Response<ureq::Body>> {
        let status = resp.status().as_u16();
        if ok.contains(&status) {
            Ok(resp)
        } else {
            Err(self.status_error(resp, status, doing))
        }
    }

    fn status_error(&self, resp: Response<ureq::Body>, status: u16, doing: &str) -> ImageError {
        let message = registry_message(resp);
        match status {
            401 | 403 => self.unauthorized(&message),
            _ => self.err(format!("{doing}: status {status}: {message}")),
        }
    }
}

/// The registry's error text: the first `errors[].message` of its JSON body, or the body itself.
fn registry_message(resp: Response<ureq::Body>) -> String {
    let body = resp
        .into_body()
        .with_config()
        .limit(64 << 10)
        .read_to_vec()
        .unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Errors>(&body) {
        Ok(e) if !e.errors.is_empty() => {
            let first = &e.errors[0];
            match (&first.code, &first.message) {
                (Some(c), Some(m)) => format!("{} ({})", m, c.to_ascii_lowercase()),
                (None, Some(m)) => m.clone(),
                (Some(c), None) => c.to_ascii_lowercase(),
                (None, None) => "no details".into(),
            }
        }
        _ => {
            let text = String::from_utf8_lossy(&body).trim().to_string();
            if text.is_empty() {
                "no details".into()
            } else {
                text.chars().take(200).collect()
            }
        }
    }
}

/// Splits `Bearer realm="…",service="…",scope="…"` into its scheme and parameters.
fn parse_challenge(challenge: &str) -> (String, Vec<(String, String)>) {
    let challenge = challenge.trim();
    let (scheme, rest) = challenge.split_once(' ').unwrap_or((challenge, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_string();
        if name.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    (scheme.to_string(), params)
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[1], ("service".into(), "registry.example".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull,push".into()));
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(s, "Basic");
        assert_eq!(p, vec![("realm".into(), "Registry Realm".into())]);
        let (s, p) = parse_challenge("Basic");
        assert_eq!((s.as_str(), p.len()), ("Basic", 0));
    }

    #[test]
    fn loopback_registries_use_plain_http() {
        let o = RegistryOptions {
            insecure: vec!["reg.lan:5000".into(), "other.lan".into()],
        };
        assert!(o.plain_http("localhost:5000"));
        assert!(o.plain_http("127.0.0.1:5000"));
        assert!(o.plain_http("127.1.2.3"));
        assert!(o.plain_http("[::1]:5000"));
        assert!(o.plain_http("reg.lan:5000"));
        assert!(o.plain_http("other.lan:443"));
        assert!(!o.plain_http("reg.lan:5001"));
        assert!(!o.plain_http("docker.io"));
        assert!(!o.plain_http("ghcr.io"));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
    }
}
