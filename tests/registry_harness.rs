//! Tests of the registry test harness (`tests/common/registry.rs`): each mode starts Debian's
//! docker-registry on a free port of 127.0.0.1 and answers the registry API as it should, storage
//! works, token auth is verified end to end against the token server, and drop stops everything.
//! Needs docker-registry, apache2-utils, openssl and python3 (CI's .ci/run installs them); no root.

mod common;

use base64::Engine as _;
use common::registry::{Registry, TOKEN_ISSUER, TOKEN_SERVICE};
use sha2::{Digest as _, Sha256};

type Response = ureq::http::Response<ureq::Body>;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(20)))
        .build()
        .into()
}

fn get(url: &str, authorization: Option<&str>) -> Response {
    let mut request = agent().get(url);
    if let Some(a) = authorization {
        request = request.header("Authorization", a);
    }
    request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn body(mut response: Response) -> Vec<u8> {
    response.body_mut().read_to_vec().unwrap()
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn sha256(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut s = String::from("sha256:");
    for b in hash.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Pushes `data` to `repo` with a monolithic upload (POST, then PUT ?digest=) and answers the
/// digest; asserts each step's status.
fn push_blob(addr: &str, repo: &str, data: &[u8], authorization: Option<&str>) -> String {
    let digest = sha256(data);
    let mut post = agent().post(&format!("http://{addr}/v2/{repo}/blobs/uploads/"));
    if let Some(a) = authorization {
        post = post.header("Authorization", a);
    }
    let started = post.send_empty().unwrap();
    assert_eq!(
        started.status(),
        202,
        "POST upload: {}",
        String::from_utf8_lossy(&body(started))
    );
    let location = header(&started, "location");
    assert!(!location.is_empty(), "POST upload gave no Location");
    let location = if location.starts_with('/') {
        format!("http://{addr}{location}")
    } else {
        location
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let mut put = agent().put(&format!("{location}{separator}digest={digest}"));
    if let Some(a) = authorization {
        put = put.header("Authorization", a);
    }
    let put = put
        .header("Content-Type", "application/octet-stream")
        .send(data)
        .unwrap();
    assert_eq!(put.status(), 201, "PUT upload: {}", String::from_utf8_lossy(&body(put)));
    assert_eq!(header(&put, "docker-content-digest"), digest);
    digest
}

/// `Bearer realm="…",service="…"` → (realm, service).
fn bearer_challenge(challenge: &str) -> (String, String) {
    let rest = challenge
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer challenge: {challenge:?}"));
    let mut realm = String::new();
    let mut service = String::new();
    for part in rest.split(',') {
        let (key, value) = part.split_once('=').unwrap();
        let value = value.trim_matches('"').to_string();
        match key.trim() {
            "realm" => realm = value,
            "service" => service = value,
            _ => {}
        }
    }
    (realm, service)
}

/// A token from the realm; answers (status, parsed JSON body or Null).
fn fetch_token(
    realm: &str,
    service: &str,
    scope: Option<&str>,
    authorization: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut url = format!("{realm}?service={service}");
    if let Some(s) = scope {
        url.push_str(&format!("&scope={s}"));
    }
    let response = get(&url, authorization);
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_slice(&body(response)).unwrap_or(serde_json::Value::Null),
    )
}

fn jwt_part(token: &str, index: usize) -> serde_json::Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[test]
fn anonymous_registry_answers_and_stores_a_blob() {
    let registry = Registry::start();
    assert!(registry.addr.starts_with("127.0.0.1:"), "{}", registry.addr);
    let base = get(&format!("http://{}/v2/", registry.addr), None);
    assert_eq!(base.status(), 200);
    assert_eq!(header(&base, "docker-distribution-api-version"), "registry/2.0");

    let data = b"a tiny blob for the berth registry harness\n";
    let digest = push_blob(&registry.addr, "test", data, None);
    let blob = get(&format!("http://{}/v2/test/blobs/{digest}", registry.addr), None);
    assert_eq!(blob.status(), 200);
    assert_eq!(header(&blob, "docker-content-digest"), digest);
    assert_eq!(body(blob), data);
    // It is stored in this registry's own directory.
    let blob_dir = registry
        .dir
        .join("data/docker/registry/v2/blobs/sha256")
        .join(&digest[7..9])
        .join(&digest[7..]);
    assert_eq!(std::fs::read(blob_dir.join("data")).unwrap(), data);
    // An unknown blob is a 404 with the registry's error body.
    let missing = get(
        &format!("http://{}/v2/test/blobs/{}", registry.addr, sha256(b"nothing")),
        None,
    );
    assert_eq!(missing.status(), 404);
}

#[test]
fn drop_stops_the_registry_and_removes_its_directory() {
    let registry = Registry::start();
    let other = Registry::start();
    assert_ne!(registry.addr, other.addr);
    assert_ne!(registry.dir, other.dir);
    let (addr, dir) = (registry.addr.clone(), registry.dir.clone());
    assert!(dir.join("config.yml").exists());
    drop(registry);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(
        agent().get(&format!("http://{addr}/v2/")).call().is_err(),
        "the registry still answers on {addr} after drop"
    );
    assert_eq!(get(&format!("http://{}/v2/", other.addr), None).status(), 200);
}

#[test]
fn htpasswd_registry_wants_basic_credentials() {
    let registry = Registry::start_htpasswd("alice", "s3cret");
    let url = format!("http://{}/v2/", registry.addr);
    let anonymous = get(&url, None);
    assert_eq!(anonymous.status(), 401);
    let challenge = header(&anonymous, "www-authenticate");
    assert!(challenge.starts_with("Basic realm="), "{challenge}");
    assert_eq!(get(&url, Some(&basic("alice", "wrong"))).status(), 401);
    assert_eq!(get(&url, Some(&basic("bob", "s3cret"))).status(), 401);
    assert_eq!(get(&url, Some(&basic("alice", "s3cret"))).status(), 200);
    // Storage works for the authenticated user.
    let auth = basic("alice", "s3cret");
    let digest = push_blob(&registry.addr, "private/test", b"private blob", Some(&auth));
    let blob = format!("http://{}/v2/private/test/blobs/{digest}", registry.addr);
    assert_eq!(get(&blob, None).status(), 401);
    assert_eq!(body(get(&blob, Some(&auth))), b"private blob");
}

#[test]
fn token_registry_accepts_tokens_from_its_token_server() {
    let registry = Registry::start_token("alice", "s3cret");
    let url = format!("http://{}/v2/", registry.addr);
    let anonymous = get(&url, None);
    assert_eq!(anonymous.status(), 401);
    let challenge = header(&anonymous, "www-authenticate");
    let (realm, service) = bearer_challenge(&challenge);
    assert_eq!(Some(&realm), registry.realm.as_ref(), "{challenge}");
    assert!(
        realm.starts_with("http://127.0.0.1:") && realm.ends_with("/token"),
        "{realm}"
    );
    assert_eq!(service, TOKEN_SERVICE);

    // Good credentials: a token for the asked scope.
    let scope = "repository:team/app:pull,push";
    let (status, answer) = fetch_token(&realm, &service, Some(scope), Some(&basic("alice", "s3cret")));
    assert_eq!(status, 200, "{answer}");
    let token = answer["token"].as_str().unwrap().to_string();
    assert_eq!(answer["access_token"], answer["token"]);
    assert_eq!(answer["expires_in"], 300);
    assert!(answer["issued_at"].as_str().unwrap().ends_with('Z'), "{answer}");
    let head = jwt_part(&token, 0);
    assert_eq!(head["alg"], "RS256");
    assert_eq!(head["x5c"].as_array().unwrap().len(), 1);
    let claims = jwt_part(&token, 1);
    assert_eq!(claims["iss"], TOKEN_ISSUER);
    assert_eq!(claims["aud"], TOKEN_SERVICE);
    assert_eq!(claims["sub"], "alice");
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());
    assert_eq!(
        claims["access"],
        serde_json::json!([{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}])
    );

    let bearer = format!("Bearer {token}");
    assert_eq!(get(&url, Some(&bearer)).status(), 200);
    // The access claim is what the registry goes by: push and pull team/app, nothing else.
    let digest = push_blob(&registry.addr, "team/app", b"token blob", Some(&bearer));
    let blob = format!("http://{}/v2/team/app/blobs/{digest}", registry.addr);
    assert_eq!(body(get(&blob, Some(&bearer))), b"token blob");
    assert_eq!(get(&blob, None).status(), 401);
    let other = format!("http://{}/v2/team/other/blobs/{digest}", registry.addr);
    assert_eq!(get(&other, Some(&bearer)).status(), 401);

    // A tampered token (claims changed, signature kept) is refused.
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    let mut forged = claims.clone();
    forged["access"][0]["name"] = "team/other".into();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    assert_eq!(get(&other, Some(&format!("Bearer {}", parts.join(".")))).status(), 401);

    // Wrong credentials: 401 from the token server.
    let (status, _) = fetch_token(&realm, &service, Some(scope), Some(&basic("alice", "wrong")));
    assert_eq!(status, 401);
    let (status, _) = fetch_token(&realm, &service, Some(scope), Some(&basic("mallory", "s3cret")));
    assert_eq!(status, 401);

    // No credentials: a token that grants nothing; the registry takes it for /v2/ only.
    let (status, answer) = fetch_token(&realm, &service, Some(scope), None);
    assert_eq!(status, 200, "{answer}");
    let empty = answer["token"].as_str().unwrap();
    assert_eq!(jwt_part(empty, 1)["access"], serde_json::json!([]));
    let empty = format!("Bearer {empty}");
    assert_eq!(get(&url, Some(&empty)).status(), 200);
    let denied = get(&blob, Some(&empty));
    assert_eq!(denied.status(), 401);
    assert!(header(&denied, "www-authenticate").contains("scope=\"repository:team/app:pull\""));
}
