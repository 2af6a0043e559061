//! Translation: one replica of a Compose service (its canonical JSON) plus its image's defaults
//! becomes the runtime's `ContainerSpec` and the network layer's `EndpointConfig`. Pure: paths
//! are computed, nothing is read or created; the executor does the I/O the result asks for.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::image::reference::Digest;
use serde_json::Value;

use super::error::ReconcileError;
use super::observed::labels;
use crate::compose::Project;
use crate::compose::units::{parse_bytes, parse_duration};
use crate::image::oci::ContainerConfig;
use crate::network::{AttachConfig, EndpointConfig, PortConfig, Proto};
use crate::runtime::{ContainerSpec, Healthcheck, MountKind, MountSpec, NetworkSpec, RestartPolicy, RootfsSpec};

/// The label on a container naming its network endpoint (the same one `container run` uses).
pub const ENDPOINT_LABEL: &str = "berth.network.endpoint";

/// The image a service runs, as the store resolved it.
#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    /// The name the service gave.
    pub name: String,
    /// The image id.
    pub id: String,
    /// Overlay lower dirs, top-most first.
    pub layers: Vec<PathBuf>,
    /// The image's container defaults.
    pub defaults: ContainerConfig,
}

/// Where a container's network namespace comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetMode {
    /// Its own endpoint on the project's networks.
    Endpoint,
    /// The host's.
    Host,
    /// Loopback only.
    None,
    /// Shared with the first container of a service.
    Service(String),
    /// Shared with a named container.
    Container(String),
}

/// One container, ready for the executor.
#[derive(Debug, Clone)]
pub struct Translated {
    /// The runtime spec; `network` is filled in by the executor for the shared and endpoint modes.
    pub spec: ContainerSpec,
    /// How the network namespace is obtained.
    pub net: NetMode,
    /// The endpoint to connect first, for `NetMode::Endpoint`.
    pub endpoint: Option<EndpointConfig>,
    /// Volumes (full names) to create if missing, with the service's mount target of each.
    pub volumes: Vec<(String, String)>,
    /// Host directories to create for bind mounts with `create_host_path`.
    pub host_paths: Vec<PathBuf>,
    /// Mount targets of volumes marked `nocopy`, which are not filled from the image.
    pub no_copy: Vec<String>,
    /// External volumes (full names), which must exist already.
    pub external_volumes: Vec<String>,
}

/// What the translation needs besides the service.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The project.
    pub project: &'a Project,
    /// The state root (volume directories live under it).
    pub root: &'a Path,
}

/// The endpoint key of a project container: derived from its name, so a retried `up` finds
/// the endpoint a killed one left behind.
pub fn endpoint_key(project: &str, container: &str) -> String {
    format!(
        "s{}",
        &Digest::of(format!("{project}/{container}").as_bytes()).hex()[..15]
    )
}

/// The directory holding a volume's data.
pub fn volume_dir(root: &Path, name: &str) -> PathBuf {
    root.join("volumes").join(name).join("_data")
}

/// The name of an anonymous volume of one replica: stable, so recreation keeps its data as
/// Compose does.
pub fn anonymous_volume(project: &str, service: &str, number: u32, target: &str) -> String {
    format!(
        "{project}_{service}-{number}{ANONYMOUS}{}",
        &Digest::of(target.as_bytes()).hex()[..12]
    )
}

/// What marks the names `anonymous_volume` makes.
const ANONYMOUS: &str = "_anon_";

/// Whether a volume name is one `anonymous_volume` made.
pub fn is_anonymous_volume(name: &str) -> bool {
    name.contains(ANONYMOUS)
}

/// Translates replica `number` (named `name`) of `service`.
pub fn translate(
    ctx: Context<'_>,
    service: &str,
    number: u32,
    name: &str,
    hash: &str,
    image: &ImageInfo,
) -> Result<Translated, ReconcileError> {
    let project = ctx.project;
    let doc = &project.canonical["services"][service];
    let bad = |key: &str, msg: String| ReconcileError::Invalid {
        key: format!("services.{service}.{key}"),
        message: msg,
    };
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap_or_default().to_string()).collect())
    };
    let defaults = &image.defaults;
    let mut spec = ContainerSpec {
        name: name.to_string(),
        image: image.name.clone(),
        image_id: image.id.clone(),
        rootfs: RootfsSpec {
            layers: image.layers.clone(),
            read_only: doc["read_only"].as_bool().unwrap_or(false),
        },
        hostname: doc["hostname"].as_str().map(str::to_string),
        domainname: doc["domainname"].as_str().map(str::to_string),
        init: doc["init"].as_bool().unwrap_or(false),
        stop_signal: doc["stop_signal"]
            .as_str()
            .map(str::to_string)
            .or_else(|| defaults.stop_signal.clone()),
        ..Default::default()
    };

    // The process.
    let entrypoint = strings(&doc["entrypoint"]);
    let command = strings(&doc["command"]);
    spec.process.args = crate::runtime::process::combine_command(
        defaults.entrypoint.as_deref().unwrap_or_default(),
        defaults.cmd.as_deref().unwrap_or_default(),
        entrypoint.as_deref(),
        command.as_deref(),
    );
    if spec.process.args.is_empty() {
        return Err(bad(
            "command",
            format!("no command: neither the service nor image {} gives one", image.name),
        ));
    }
    let mut env = defaults.env.clone().unwrap_or_default();
    if let Some(vars) = doc["environment"].as_object() {
        for (k, v) in vars {
            if let Some(v) = value_text(v) {
                crate::runtime::process::set_env(&mut env, format!("{k}={v}"));
            }
        }
    }
    spec.process.env = env;
    spec.process.user = doc["user"]
        .as_str()
        .map(str::to_string)
        .or_else(|| defaults.user.clone())
        .unwrap_or_default();
    spec.process.working_dir = doc["working_dir"]
        .as_str()
        .map(str::to_string)
        .or_else(|| defaults.working_dir.clone().filter(|w| !w.is_empty()));
    spec.process.tty = doc["tty"].as_bool().unwrap_or(false);
    spec.process.stdin = doc["stdin_open"].as_bool().unwrap_or(false);
    spec.process.group_add = strings(&doc["group_add"]).unwrap_or_default();
    if let Some(limits) = doc["ulimits"].as_object() {
        for (k, v) in limits {
            let pair = match v {
                Value::Object(o) => (o["soft"].as_u64(), o["hard"].as_u64()),
                other => (other.as_u64(), other.as_u64()),
            };
            let (Some(soft), Some(hard)) = pair else {
                return Err(bad(&format!("ulimits.{k}"), "want a number or soft and hard".into()));
            };
            spec.process.rlimits.insert(k.clone(), (soft, hard));
        }
    }

    // Resources: the service keys, or deploy.resources.
    let limits = &doc["deploy"]["resources"]["limits"];
    let reservations = &doc["deploy"]["resources"]["reservations"];
    let bytes = |key: &str, v: &Value| -> Result<Option<u64>, ReconcileError> {
        match value_text(v) {
            None => Ok(None),
            Some(s) => parse_bytes(&s)
                .map(|b| Some(b as u64))
                .map_err(|e| bad(key, format!("invalid size {s:?}: {e}"))),
        }
    };
    spec.resources.memory = match bytes("mem_limit", &doc["mem_limit"])? {
        Some(b) => Some(b),
        None => bytes("deploy.resources.limits.memory", &limits["memory"])?,
    };
    spec.resources.memory_reservation = match bytes("mem_reservation", &doc["mem_reservation"])? {
        Some(b) => Some(b),
        None => bytes("deploy.resources.reservations.memory", &reservations["memory"])?,
    };
    spec.resources.cpus = as_f64(&doc["cpus"]).or_else(|| as_f64(&limits["cpus"]));
    spec.resources.cpu_shares = doc["cpu_shares"].as_u64();
    spec.resources.pids_limit = doc["pids_limit"].as_i64().or_else(|| limits["pids"].as_i64());
    spec.shm_size = bytes("shm_size", &doc["shm_size"])?;

    // Confinement.
    spec.security.privileged = doc["privileged"].as_bool().unwrap_or(false);
    spec.security.cap_add = strings(&doc["cap_add"]).unwrap_or_default();
    spec.security.cap_drop = strings(&doc["cap_drop"]).unwrap_or_default();
    for o in strings(&doc["security_opt"]).unwrap_or_default() {
        spec.security.apply_option(&o).map_err(|e| bad("security_opt", e))?;
    }
    match &doc["sysctls"] {
        Value::Object(m) => {
            for (k, v) in m {
                spec.sysctls.insert(k.clone(), value_text(v).unwrap_or_default());
            }
        }
        Value::Array(a) => {
            for s in a.iter().filter_map(Value::as_str) {
                let (k, v) = s.split_once('=').unwrap_or((s, ""));
                spec.sysctls.insert(k.to_string(), v.to_string());
            }
        }
        _ => {}
    }

    // Life cycle.
    if let Some(r) = doc["restart"].as_str() {
        spec.restart = RestartPolicy::parse(r).map_err(|e| bad("restart", e))?;
    }
    if let Some(g) = doc["stop_grace_period"].as_str() {
        let ns = parse_duration(g).map_err(|e| bad("stop_grace_period", e))?;
        spec.stop_timeout = Some((ns.max(0) as u64).div_ceil(1_000_000_000));
    }

    spec.healthcheck = healthcheck(&doc["healthcheck"], defaults.healthcheck.as_ref(), &bad)?;

    // Labels: the service's, then Compose's own.
    if let Some(m) = doc["labels"].as_object() {
        for (k, v) in m {
            spec.labels.insert(k.clone(), value_text(v).unwrap_or_default());
        }
    }
    let files: Vec<String> = project.files.iter().map(|f| f.display().to_string()).collect();
    for (k, v) in [
        (labels::PROJECT, project.name.clone()),
        (labels::SERVICE, service.to_string()),
        (labels::NUMBER, number.to_string()),
        (labels::CONFIG_HASH, hash.to_string()),
        (labels::ONEOFF, "False".to_string()),
        (labels::WORKING_DIR, project.working_dir.display().to_string()),
        (labels::CONFIG_FILES, files.join(",")),
        (labels::IMAGE, image.id.clone()),
    ] {
        spec.labels.insert(k.to_string(), v);
    }

    // Hosts.
    for h in strings(&doc["extra_hosts"]).unwrap_or_default() {
        let (host, addr) = h
            .split_once('=')
            .or_else(|| h.split_once(':'))
            .ok_or_else(|| bad("extra_hosts", format!("invalid entry {h:?}: want host=address")))?;
        spec.extra_hosts
            .push((host.to_string(), addr.trim_matches(['[', ']']).to_string()));
    }

    // Mounts.
    let mut volumes = Vec::new();
    let mut host_paths = Vec::new();
    let mut no_copy = Vec::new();
    let mut external_volumes = Vec::new();
    for (i, v) in doc["volumes"].as_array().into_iter().flatten().enumerate() {
        let key = format!("volumes[{i}]");
        let target = v["target"]
            .as_str()
            .ok_or_else(|| bad(&key, "a mount needs a target".into()))?
            .to_string();
        let read_only = v["read_only"].as_bool().unwrap_or(false);
        let kind = match v["type"].as_str().unwrap_or("volume") {
            "volume" => {
                let full = match v["source"].as_str() {
                    Some(s) => project.canonical["volumes"][s]["name"]
                        .as_str()
                        .map_or_else(|| format!("{}_{s}", project.name), str::to_string),
                    None => anonymous_volume(&project.name, service, number, &target),
                };
                let external = v["source"]
                    .as_str()
                    .is_some_and(|s| project.canonical["volumes"][s]["external"].as_bool().unwrap_or(false));
                if external {
                    external_volumes.push(full.clone());
                } else {
                    volumes.push((full.clone(), target.clone()));
                }
                if v["volume"]["nocopy"].as_bool().unwrap_or(false) {
                    no_copy.push(target.clone());
                }
                MountKind::Volume {
                    source: volume_dir(ctx.root, &full),
                }
            }
            "bind" => {
                let source = PathBuf::from(
                    v["source"]
                        .as_str()
                        .ok_or_else(|| bad(&key, "a bind mount needs a source".into()))?,
                );
                if v["bind"]["create_host_path"].as_bool().unwrap_or(true) {
                    host_paths.push(source.clone());
                }
                MountKind::Bind {
                    source,
                    propagation: v["bind"]["propagation"].as_str().map(str::to_string),
                }
            }
            "tmpfs" => MountKind::Tmpfs {
                size: bytes(&format!("{key}.tmpfs.size"), &v["tmpfs"]["size"])?,
                mode: v["tmpfs"]["mode"].as_u64().map(|m| m as u32),
            },
            other => return Err(bad(&key, format!("mount type {other:?} is not supported"))),
        };
        spec.mounts.push(MountSpec {
            kind,
            target,
            read_only,
        });
    }
    // Volumes the image declares get anonymous volumes unless the service mounts something there.
    for target in defaults.volumes.iter().flat_map(|m| m.keys()) {
        if spec.mounts.iter().any(|m| m.target == *target) {
            continue;
        }
        let full = anonymous_volume(&project.name, service, number, target);
        volumes.push((full.clone(), target.clone()));
        spec.mounts.push(MountSpec {
            kind: MountKind::Volume {
                source: volume_dir(ctx.root, &full),
            },
            target: target.clone(),
            read_only: false,
        });
    }
    for t in strings(&doc["tmpfs"]).unwrap_or_default() {
        let (target, opts) = t.split_once(':').unwrap_or((&t, ""));
        let (mut size, mut mode) = (None, None);
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o.split_once('=') {
                Some(("size", s)) => {
                    size = Some(parse_bytes(s).map_err(|e| bad("tmpfs", format!("invalid size {s:?}: {e}")))? as u64)
                }
                Some(("mode", m)) => {
                    mode = Some(u32::from_str_radix(m, 8).map_err(|_| bad("tmpfs", format!("invalid mode {m:?}")))?)
                }
                _ => {}
            }
        }
        spec.mounts.push(MountSpec {
            kind: MountKind::Tmpfs { size, mode },
            target: target.to_string(),
            read_only: false,
        });
    }

    // The network.
    let net = match doc["network_mode"].as_str() {
        None => NetMode::Endpoint,
        Some("host") => NetMode::Host,
        Some("none") => NetMode::None,
        Some(m) => match (m.strip_prefix("service:"), m.strip_prefix("container:")) {
            (Some(s), _) => NetMode::Service(s.to_string()),
            (_, Some(c)) => NetMode::Container(c.to_string()),
            _ => return Err(bad("network_mode", format!("network mode {m:?} is not supported"))),
        },
    };
    spec.network = match net {
        NetMode::Host => NetworkSpec::Host,
        _ => NetworkSpec::None,
    };
    let endpoint = match net {
        NetMode::Endpoint => Some(endpoint(project, service, name, doc, &spec)?),
        _ => None,
    };
    if endpoint.is_some() {
        spec.labels
            .insert(ENDPOINT_LABEL.to_string(), endpoint_key(&project.name, name));
    }
    // With the host's network a port is already the host's (Docker discards them too).
    if endpoint.is_none() && net != NetMode::Host && doc["ports"].as_array().is_some_and(|p| !p.is_empty()) {
        return Err(bad(
            "ports",
            "published ports need the service on a network, not network_mode".into(),
        ));
    }
    Ok(Translated {
        spec,
        net,
        endpoint,
        volumes,
        host_paths,
        no_copy,
        external_volumes,
    })
}

/// The endpoint of a container on its service's networks, with its published ports.
fn endpoint(
    project: &Project,
    service: &str,
    name: &str,
    doc: &Value,
    spec: &ContainerSpec,
) -> Result<EndpointConfig, ReconcileError> {
    let bad = |key: String, message: String| ReconcileError::Invalid {
        key: format!("services.{service}.{key}"),
        message,
    };
    let mut nets: Vec<(i64, String, &Value)> = doc["networks"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (v["priority"].as_i64().unwrap_or(0), k.clone(), v))
                .collect()
        })
        .unwrap_or_default();
    // Higher priority first, as Docker connects them; equal ones in file order.
    nets.sort_by_key(|(p, _, _)| -p);
    let mut attachments = Vec::new();
    for (_, key, v) in nets {
        let full = project.canonical["networks"][&key]["name"]
            .as_str()
            .map_or_else(|| format!("{}_{key}", project.name), str::to_string);
        let ipv4_address = match v["ipv4_address"].as_str() {
            Some(a) => Some(
                a.parse::<Ipv4Addr>()
                    .map_err(|_| bad(format!("networks.{key}.ipv4_address"), format!("invalid address {a:?}")))?,
            ),
            None => None,
        };
        let aliases = v["aliases"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        attachments.push(AttachConfig {
            network: full,
            ipv4_address,
            aliases,
        });
    }
    if attachments.is_empty() {
        return Err(bad("networks".into(), "the service joins no network".into()));
    }
    let mut names = vec![name.to_string(), service.to_string()];
    if let Some(h) = &spec.hostname {
        names.push(h.clone());
    }
    let mut ports = Vec::new();
    for (i, p) in doc["ports"].as_array().into_iter().flatten().enumerate() {
        let key = format!("ports[{i}]");
        let proto = match p["protocol"].as_str().unwrap_or("tcp") {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            other => return Err(bad(key, format!("protocol {other:?} is not supported"))),
        };
        let container_port = p["target"]
            .as_u64()
            .and_then(|t| u16::try_from(t).ok())
            .ok_or_else(|| bad(key.clone(), "invalid target port".into()))?;
        let host_ip: IpAddr = match p["host_ip"].as_str() {
            Some(a) if !a.is_empty() => a
                .trim_matches(['[', ']'])
                .parse()
                .map_err(|_| bad(key.clone(), format!("invalid host address {a:?}")))?,
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let host_port = match value_text(&p["published"]) {
            None => 0,
            // A range publishes on its first port (Docker tries them in turn).
            Some(s) => s
                .split('-')
                .next()
                .unwrap_or_default()
                .parse::<u16>()
                .map_err(|_| bad(key.clone(), format!("invalid published port {s:?}")))?,
        };
        ports.push(PortConfig {
            proto,
            host_ip,
            host_port,
            container_port,
        });
    }
    Ok(EndpointConfig {
        key: endpoint_key(&project.name, name),
        names,
        networks: attachments,
        ports,
    })
}

/// The service's healthcheck over the image's (`disable: true` is Docker's `NONE`).
fn healthcheck(
    doc: &Value,
    image: Option<&Value>,
    bad: &dyn Fn(&str, String) -> ReconcileError,
) -> Result<Option<Healthcheck>, ReconcileError> {
    let image = image.map(Healthcheck::from_docker);
    if doc.is_null() {
        return Ok(image);
    }
    if doc["disable"].as_bool().unwrap_or(false) {
        return Ok(Some(Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        }));
    }
    let time = |key: &str| -> Result<Option<Duration>, ReconcileError> {
        match doc[key].as_str() {
            None => Ok(None),
            Some(t) => {
                let ns = parse_duration(t).map_err(|e| bad(&format!("healthcheck.{key}"), e))?;
                Ok(Some(Duration::from_nanos(ns.max(0) as u64)))
            }
        }
    };
    let test = match &doc["test"] {
        Value::String(s) => vec!["CMD-SHELL".to_string(), s.clone()],
        Value::Array(a) => a.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect(),
        _ => Vec::new(),
    };
    let check = Healthcheck {
        test,
        interval: time("interval")?,
        timeout: time("timeout")?,
        retries: doc["retries"].as_u64().map(|r| r.min(u64::from(u32::MAX)) as u32),
        start_period: time("start_period")?,
        start_interval: time("start_interval")?,
    };
    let check = match &image {
        Some(i) => check.or_from(i),
        None => check,
    };
    check.validate().map_err(|e| bad("healthcheck", e.to_string()))?;
    Ok(Some(check))
}

/// A scalar as text (`null` is `None`).
fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(if *b { "true" } else { "false" }.to_string()),
        other => Some(other.to_string()),
    }
}

/// A number written as a number or a string.
fn as_f64(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::{LoadOptions, load};

    fn project(yaml: &str) -> Project {
        let dir = std::env::temp_dir().join(format!("berth-translate-{}", crate::fsutil::random_hex(6)));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("compose.yaml"), yaml).unwrap();
        let p = load(&LoadOptions {
            working_dir: dir.clone(),
            interpolate: true,
            ..Default::default()
        })
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        p
    }

    fn image() -> ImageInfo {
        ImageInfo {
            name: "busybox".into(),
            id: "sha256:abc".into(),
            layers: vec![PathBuf::from("/layers/1")],
            defaults: ContainerConfig {
                env: Some(vec!["PATH=/bin".into(), "A=image".into()]),
                entrypoint: Some(vec!["/entry".into()]),
                cmd: Some(vec!["default".into()]),
                volumes: Some([("/cache".to_string(), serde_json::json!({}))].into()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_service_becomes_a_spec_and_an_endpoint() {
        let p = project(
            r#"
name: demo
services:
  web:
    image: busybox
    command: [serve, --port, "80"]
    environment: {A: service, B: "2", UNSET: null}
    volumes: [data:/data, /srv:/srv:ro, {type: tmpfs, target: /run, tmpfs: {size: 1024}}]
    ports: ["127.0.0.1:8080:80", "9000/udp"]
    mem_limit: 64m
    cpus: 0.5
    stop_grace_period: 1500ms
    restart: on-failure:2
    extra_hosts: ["db.local=10.0.0.2"]
    networks: {front: {aliases: [www], ipv4_address: 10.1.0.9}, default: {}}
volumes: {data: {}}
networks: {front: {}}
"#,
        );
        let ctx = Context {
            project: &p,
            root: Path::new("/state"),
        };
        let t = translate(ctx, "web", 2, "demo-web-2", "hash", &image()).unwrap();
        let s = &t.spec;
        assert_eq!(s.process.args, ["/entry", "serve", "--port", "80"]);
        assert_eq!(s.process.env, ["PATH=/bin", "A=service", "B=2"]);
        assert_eq!(s.resources.memory, Some(64 << 20));
        assert_eq!(s.resources.cpus, Some(0.5));
        assert_eq!(s.stop_timeout, Some(2), "1.5 s rounds up");
        assert_eq!(s.restart, RestartPolicy::OnFailure(Some(2)));
        assert_eq!(s.extra_hosts, [("db.local".to_string(), "10.0.0.2".to_string())]);
        assert_eq!(s.labels[labels::NUMBER], "2");
        assert_eq!(s.labels[labels::PROJECT], "demo");
        assert_eq!(s.labels[ENDPOINT_LABEL], endpoint_key("demo", "demo-web-2"));
        let targets: Vec<&str> = s.mounts.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(targets, ["/data", "/srv", "/run", "/cache"]);
        assert_eq!(
            s.mounts[0].kind,
            MountKind::Volume {
                source: PathBuf::from("/state/volumes/demo_data/_data")
            }
        );
        assert!(s.mounts[1].read_only);
        assert_eq!(t.volumes[1].0, anonymous_volume("demo", "web", 2, "/cache"));
        assert_eq!(t.host_paths, [PathBuf::from("/srv")]);
        let e = t.endpoint.unwrap();
        assert_eq!(e.names, ["demo-web-2", "web"]);
        let nets: Vec<&str> = e.networks.iter().map(|a| a.network.as_str()).collect();
        assert_eq!(nets, ["demo_front", "demo_default"]);
        assert_eq!(e.networks[0].aliases, ["www"]);
        assert_eq!(e.networks[0].ipv4_address, Some(Ipv4Addr::new(10, 1, 0, 9)));
        assert_eq!(e.ports.len(), 2);
        assert_eq!(e.ports[0].host_port, 8080);
        assert_eq!(e.ports[1].proto, Proto::Udp);
        assert_eq!(e.ports[1].host_port, 0);
    }

    #[test]
    fn anonymous_volumes_keep_their_names_across_recreation_and_replicas_differ() {
        assert_eq!(
            anonymous_volume("p", "s", 1, "/data"),
            anonymous_volume("p", "s", 1, "/data")
        );
        assert_ne!(
            anonymous_volume("p", "s", 1, "/data"),
            anonymous_volume("p", "s", 2, "/data")
        );
    }

    #[test]
    fn unsupported_requests_are_errors_with_the_key() {
        let p = project("services:\n  a:\n    image: x\n    network_mode: bridge\n");
        let ctx = Context {
            project: &p,
            root: Path::new("/state"),
        };
        let e = translate(ctx, "a", 1, "x-a-1", "h", &image()).unwrap_err().to_string();
        assert!(e.starts_with("services.a.network_mode: "), "{e}");
        let p = project("services:\n  a:\n    image: x\n    network_mode: none\n    ports: [\"80\"]\n");
        let ctx = Context {
            project: &p,
            root: Path::new("/state"),
        };
        let e = translate(ctx, "a", 1, "x-a-1", "h", &image()).unwrap_err().to_string();
        assert!(e.contains("services.a.ports"), "{e}");
    }
}
