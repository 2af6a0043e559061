//! `import`: a one-layer image from a root file system tarball, with Dockerfile-style `--change`
//! instructions (`CMD`, `ENTRYPOINT`, `ENV`, `EXPOSE`, `LABEL`, `ONBUILD`, `STOPSIGNAL`, `USER`, `VOLUME`,
//! `WORKDIR`) applied to its config.

use std::collections::BTreeMap;
use std::io::Read;

use super::oci::{self, ContainerConfig, Descriptor, History, ImageConfig, Manifest, Platform, RootFs};
use super::reference::{Digest, Reference};
use super::store::{ImageRecord, Store, Unpack};
use super::{ImageError, Result};

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// `--change` instructions, in order.
    pub changes: Vec<String>,
    /// `--message`: the history comment.
    pub message: Option<String>,
    /// The platform recorded in the config (default: the host's).
    pub platform: Option<Platform>,
    /// Where the tarball came from, for the history comment.
    pub source: String,
}

/// Imports a tarball (gzip, zstd or plain) as a new image, tagged `tag` if given. Returns its id.
pub fn import(store: &Store, tarball: impl Read, tag: Option<&Reference>, options: &ImportOptions) -> Result<Digest> {
    let mut container = ContainerConfig::default();
    for change in &options.changes {
        apply_change(&mut container, change)?;
    }
    let _writer = store.writer()?;
    let layer = store.ingest_layer(
        std::io::BufReader::with_capacity(1 << 18, tarball),
        &options.source,
        None,
        None,
        Unpack::Now,
        &|_| {},
    )?;
    let platform = options.platform.clone().unwrap_or_else(Platform::host);
    let now = jiff::Timestamp::now().to_string();
    let config = ImageConfig {
        created: Some(now.clone()),
        author: None,
        architecture: platform.architecture,
        os: platform.os,
        variant: platform.variant,
        config: Some(container),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![layer.diff_id.clone()],
        },
        history: vec![History {
            created: Some(now.clone()),
            created_by: None,
            author: None,
            comment: Some(
                options
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("Imported from {}", options.source)),
            ),
            empty_layer: false,
        }],
    };
    let config_bytes = oci::to_json(&config);
    let id = store.write_blob(&config_bytes, None)?;
    let manifest = Manifest::oci(
        Descriptor::new(oci::OCI_CONFIG, id.clone(), config_bytes.len() as u64),
        vec![Descriptor::new(
            oci::layer_media_type(layer.compression),
            layer.blob,
            layer.blob_size,
        )],
    );
    let manifest_digest = store.write_blob(&oci::to_json(&manifest), None)?;
    let record = ImageRecord::new(id.clone(), manifest_digest, oci::OCI_MANIFEST, vec![layer.size]);
    store.add_image(record, tag.map(std::slice::from_ref).unwrap_or_default())?;
    Ok(id)
}

/// Applies one `--change` instruction to a config.
pub fn apply_change(config: &mut ContainerConfig, change: &str) -> Result<()> {
    let bad = |reason: &str| ImageError::Change {
        change: change.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = change.trim();
    let (keyword, rest) = trimmed.split_once(char::is_whitespace).unwrap_or((trimmed, ""));
    let rest = rest.trim();
    match keyword.to_ascii_uppercase().as_str() {
        "CMD" => config.cmd = Some(command(rest)),
        "ENTRYPOINT" => config.entrypoint = Some(command(rest)),
        "ENV" => {
            let env = config.env.get_or_insert_with(Vec::new);
            for (k, v) in key_values(rest, true).map_err(bad)? {
                env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != k);
                env.push(format!("{k}={v}"));
            }
        }
        "LABEL" => {
            let labels = config.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in key_values(rest, false).map_err(bad)? {
                labels.insert(k, v);
            }
        }
        "EXPOSE" => {
            let ports = config.exposed_ports.get_or_insert_with(BTreeMap::new);
            for p in rest.split_whitespace() {
                let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                let valid_port = |s: &str| s.parse::<u16>().is_ok_and(|n| n > 0);
                let valid = match port.split_once('-') {
                    Some((a, b)) => valid_port(a) && valid_port(b),
                    None => valid_port(port),
                };
                if !valid || !matches!(proto, "tcp" | "udp" | "sctp") {
                    return Err(bad(&format!("invalid port {p:?}")));
                }
                ports.insert(format!("{port}/{proto}"), serde_json::json!({}));
            }
        }
        "VOLUME" => {
            let list = json_list(rest).unwrap_or_else(|| rest.split_whitespace().map(str::to_string).collect());
            let volumes = config.volumes.get_or_insert_with(BTreeMap::new);
            for v in list {
                volumes.insert(v, serde_json::json!({}));
            }
        }
        "WORKDIR" => config.working_dir = Some(rest.to_string()),
        "USER" => config.user = Some(rest.to_string()),
        "STOPSIGNAL" => config.stop_signal = Some(rest.to_string()),
        "ONBUILD" => config.on_build.get_or_insert_with(Vec::new).push(rest.to_string()),
        _ => {
            return Err(bad(
                "only CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME and WORKDIR can be changed",
            ));
        }
    }
    if rest.is_empty() && !keyword.eq_ignore_ascii_case("CMD") && !keyword.eq_ignore_ascii_case("ENTRYPOINT") {
        return Err(bad("missing arguments"));
    }
    Ok(())
}

/// The JSON (exec) form, or the shell form wrapped in `/bin/sh -c`.
fn command(rest: &str) -> Vec<String> {
    json_list(rest).unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into(), rest.to_string()])
}

fn json_list(rest: &str) -> Option<Vec<String>> {
    rest.starts_with('[').then(|| serde_json::from_str(rest).ok()).flatten()
}

/// `k=v k2="v 2"` pairs; with `legacy`, also `KEY value` (one pair, the rest of the line).
fn key_values(rest: &str, legacy: bool) -> std::result::Result<Vec<(String, String)>, &'static str> {
    let words = split_words(rest)?;
    if words.is_empty() {
        return Err("missing arguments");
    }
    if !words[0].contains('=') {
        if legacy && let Some((k, v)) = rest.split_once(char::is_whitespace) {
            return Ok(vec![(k.to_string(), v.trim().to_string())]);
        }
        return Err("expected KEY=value");
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err("expected KEY=value"),
        })
        .collect()
}

/// Splits on whitespace outside quotes, removing the quotes and backslash escapes.
fn split_words(s: &str) -> std::result::Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut started = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                word.extend(chars.next());
                started = true;
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                started = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (_, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote");
    }
    if started {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_like_docker() {
        let mut c = ContainerConfig::default();
        for change in [
            r#"CMD ["/bin/app", "--flag"]"#,
            "ENTRYPOINT echo hi",
            "ENV A=1 B=\"two words\"",
            "ENV LEGACY some value",
            "ENV A=3",
            "LABEL org.x=y z=\"q q\"",
            "EXPOSE 80 53/udp 8000-8001",
            "VOLUME /data /cache",
            "WORKDIR /srv",
            "USER nobody:nogroup",
            "STOPSIGNAL SIGINT",
            "onbuild RUN make",
        ] {
            apply_change(&mut c, change).unwrap();
        }
        assert_eq!(c.cmd.unwrap(), ["/bin/app", "--flag"]);
        assert_eq!(c.entrypoint.unwrap(), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(c.env.unwrap(), ["B=two words", "LEGACY=some value", "A=3"]);
        assert_eq!(c.labels.unwrap().get("z").unwrap(), "q q");
        let ports: Vec<_> = c.exposed_ports.unwrap().into_keys().collect();
        assert_eq!(ports, ["53/udp", "80/tcp", "8000-8001/tcp"]);
        assert_eq!(c.volumes.unwrap().len(), 2);
        assert_eq!(c.working_dir.unwrap(), "/srv");
        assert_eq!(c.user.unwrap(), "nobody:nogroup");
        assert_eq!(c.stop_signal.unwrap(), "SIGINT");
        assert_eq!(c.on_build.unwrap(), ["RUN make"]);
    }

    #[test]
    fn bad_changes_say_why() {
        let mut c = ContainerConfig::default();
        for (change, why) in [
            ("RUN make", "only CMD"),
            ("EXPOSE http", "invalid port"),
            ("EXPOSE 80/xdp", "invalid port"),
            ("ENV", "missing"),
            ("LABEL novalue", "KEY=value"),
            ("ENV A=\"open", "unterminated"),
            ("WORKDIR", "missing"),
        ] {
            let e = apply_change(&mut c, change).unwrap_err().to_string();
            assert!(e.contains(why), "{change}: {e}");
        }
    }
}
