//! `berth network …` (`create`, `ls`, `rm`, `inspect`) and `berth port`, like the `docker` CLI,
//! plus the translation of `container run` network flags (`--network`, `--network-alias`, `--ip`,
//! `-p`) into an endpoint of the network layer.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};

use super::Cli;
use crate::network::ipam::parse_prefix;
use crate::network::{AttachConfig, EndpointConfig, EndpointRecord, NetworkConfig, Networks, PortConfig, Proto};

/// `berth network …`.
#[derive(Debug, Subcommand)]
// Each subcommand's arguments are built only when it is the one invoked (or its help is shown): building
// every argument of every verb cost about 2 ms at each start of the CLI.
#[command(defer = true)]
pub enum NetworkCommand {
    /// Create a standalone network (its own bridge, resolver and egress).
    Create(CreateArgs),
    /// List networks.
    #[command(visible_alias = "list")]
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove networks that no container uses.
    #[command(visible_alias = "remove")]
    Rm {
        /// Network names.
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Show networks as JSON.
    Inspect {
        /// Network names.
        #[arg(required = true)]
        networks: Vec<String>,
    },
}

// `network create` flags.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Subnet in CIDR form; default: the next free /24 of the pool (10.89.0.0/16).
    #[arg(long)]
    subnet: Option<String>,
    /// Gateway address; default: the subnet's first address.
    #[arg(long)]
    gateway: Option<Ipv4Addr>,
    /// No access to anything outside the network.
    #[arg(long)]
    internal: bool,
    /// Labels: `key=value`.
    #[arg(long)]
    label: Vec<String>,
    /// Driver; only `bridge` exists.
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    /// Network name.
    name: String,
}

/// Runs a `network` verb.
pub fn run(cli: &Cli, cmd: &NetworkCommand, out: &mut dyn Write) -> Result<i32> {
    let nets = Networks::new(&cli.root)?;
    match cmd {
        NetworkCommand::Create(a) => {
            if a.driver != "bridge" {
                bail!("unsupported network driver {:?}: only bridge", a.driver);
            }
            let mut labels = BTreeMap::new();
            for l in &a.label {
                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                labels.insert(k.to_string(), v.to_string());
            }
            let subnet = a.subnet.as_deref().map(parse_prefix).transpose()?;
            if nets.state()?.networks.contains_key(&a.name) {
                bail!("network with name {} already exists", a.name);
            }
            let n = nets.create_network(&NetworkConfig {
                name: a.name.clone(),
                domain: a.name.clone(),
                internal: a.internal,
                subnet,
                gateway: a.gateway,
                labels,
            })?;
            writeln!(out, "{}", n.id)?;
        }
        NetworkCommand::Ls { quiet } => {
            let state = nets.state()?;
            if *quiet {
                for n in state.networks.values() {
                    writeln!(out, "{}", &n.id[..12])?;
                }
                return Ok(0);
            }
            let mut rows = vec![vec![
                "NETWORK ID".to_string(),
                "NAME".into(),
                "DRIVER".into(),
                "SCOPE".into(),
                "SUBNET".into(),
                "INTERNAL".into(),
            ]];
            for n in state.networks.values() {
                rows.push(vec![
                    n.id[..12].to_string(),
                    n.name.clone(),
                    "bridge".into(),
                    "local".into(),
                    n.subnet.to_string(),
                    n.internal.to_string(),
                ]);
            }
            super::container::write_table(out, &rows)?;
        }
        NetworkCommand::Rm { networks } => {
            super::container::prune_endpoints(cli)?;
            let mut failed = 0;
            for name in networks {
                match nets.remove_network(name) {
                    Ok(()) => writeln!(out, "{name}")?,
                    Err(e) => {
                        eprintln!("Error response: {e}");
                        failed += 1;
                    }
                }
            }
            return Ok(if failed > 0 { 1 } else { 0 });
        }
        NetworkCommand::Inspect { networks } => {
            let state = nets.state()?;
            let mut docs = Vec::new();
            for name in networks {
                let n = state
                    .networks
                    .get(name)
                    .ok_or_else(|| anyhow!("network {name} not found"))?;
                let containers: serde_json::Map<String, serde_json::Value> = state
                    .users(name)
                    .map(|e| {
                        let a = e.attachments.iter().find(|a| a.network == *name);
                        let ip = a.map(|a| format!("{}/{}", a.address, n.subnet.len)).unwrap_or_default();
                        let aliases = a.map(|a| a.aliases.clone()).unwrap_or_default();
                        (
                            e.key.clone(),
                            serde_json::json!({ "IPv4Address": ip, "Aliases": aliases }),
                        )
                    })
                    .collect();
                docs.push(serde_json::json!({
                    "Name": n.name,
                    "Id": n.id,
                    "Created": n.created,
                    "Scope": "local",
                    "Driver": "bridge",
                    "Internal": n.internal,
                    "IPAM": { "Driver": "default", "Config": [{ "Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string() }] },
                    "Containers": containers,
                    "Labels": n.labels,
                    "Options": { "com.docker.network.bridge.name": n.bridge },
                }));
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&docs)?)?;
        }
    }
    Ok(0)
}

/// Parses Docker's `-p` forms: `[IP:][HOST[-HOST]:]CONTAINER[-CONTAINER][/PROTO]`, with IPv6
/// host addresses in brackets. Ranges expand to one entry per port.
pub fn parse_publish(spec: &str) -> Result<Vec<PortConfig>> {
    let bad = |why: &str| anyhow!("invalid port {spec:?}: {why}");
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, "tcp")) => (r, Proto::Tcp),
        Some((r, "udp")) => (r, Proto::Udp),
        Some((_, p)) => return Err(bad(&format!("unsupported protocol {p:?}"))),
        None => (spec, Proto::Tcp),
    };
    let (ip, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, r) = r.split_once("]:").ok_or_else(|| bad("unclosed ["))?;
        (Some(ip), r)
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.len() {
            1 | 2 => (None, rest),
            3 => (Some(parts[0]), &rest[parts[0].len() + 1..]),
            _ => return Err(bad("too many ':'")),
        }
    };
    let host_ip: IpAddr = match ip {
        Some("") | None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(s) => s.parse().map_err(|_| bad("bad host address"))?,
    };
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None => ("", rest),
    };
    let range = |s: &str| -> Result<(u16, u16)> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let a: u16 = a.parse().map_err(|_| bad("bad port number"))?;
        let b: u16 = b.parse().map_err(|_| bad("bad port number"))?;
        if a == 0 || b < a {
            return Err(bad("bad port range"));
        }
        Ok((a, b))
    };
    let (c0, c1) = range(container)?;
    let hosts: Vec<u16> = if host.is_empty() {
        vec![0; usize::from(c1 - c0) + 1]
    } else {
        let (h0, h1) = range(host)?;
        if h1 - h0 != c1 - c0 {
            return Err(bad("host and container ranges differ in size"));
        }
        (h0..=h1).collect()
    };
    Ok((c0..=c1)
        .zip(hosts)
        .map(|(c, h)| PortConfig {
            proto,
            host_ip,
            host_port: h,
            container_port: c,
        })
        .collect())
}

/// The first letter of the keys of endpoints made for `container run`/`create`.
pub const RUN_ENDPOINT_PREFIX: &str = "c";

/// Network flags of `container run`/`create` resolved into an endpoint, or `None` when the
/// container uses a built-in mode (`none`, `host`, `ns:PATH`).
pub fn endpoint_for_run(
    networks: &[String],
    aliases: &[String],
    ip: Option<Ipv4Addr>,
    publish: &[String],
) -> Result<Option<EndpointConfig>> {
    let builtin = |n: &str| n == "none" || n == "host" || n.starts_with("ns:") || n.starts_with("container:");
    if networks.iter().all(|n| builtin(n)) {
        if !publish.is_empty() {
            bail!(
                "publishing ports needs a network: create one with `berth network create NAME` and use --network NAME"
            );
        }
        return Ok(None);
    }
    if networks.iter().any(|n| builtin(n)) {
        bail!("--network none, host, ns:PATH or container:NAME cannot be combined with other networks");
    }
    let mut ports = Vec::new();
    for p in publish {
        ports.extend(parse_publish(p)?);
    }
    let attachments = networks
        .iter()
        .enumerate()
        .map(|(i, n)| AttachConfig {
            network: n.clone(),
            ipv4_address: if i == 0 { ip } else { None },
            aliases: if i == 0 { aliases.to_vec() } else { Vec::new() },
        })
        .collect();
    Ok(Some(EndpointConfig {
        key: format!("{RUN_ENDPOINT_PREFIX}{}", crate::fsutil::random_hex(8)),
        names: Vec::new(),
        networks: attachments,
        ports,
    }))
}

/// `berth port CONTAINER [PORT[/PROTO]]`: the published ports of a container's endpoint.
pub fn port(endpoint: &EndpointRecord, filter: Option<&str>, out: &mut dyn Write) -> Result<i32> {
    let (want_port, want_proto) = match filter {
        Some(f) => {
            let (p, proto) = f.split_once('/').unwrap_or((f, "tcp"));
            (
                Some(p.parse::<u16>().with_context(|| format!("invalid port {f:?}"))?),
                proto,
            )
        }
        None => (None, ""),
    };
    let mut printed = 0;
    for p in &endpoint.ports {
        if want_port.is_some_and(|w| w != p.container_port || want_proto != p.proto.as_str()) {
            continue;
        }
        let host = match p.host_ip {
            IpAddr::V6(a) => format!("[{a}]"),
            IpAddr::V4(a) => a.to_string(),
        };
        if want_port.is_some() {
            writeln!(out, "{host}:{}", p.bound)?;
        } else {
            writeln!(out, "{}/{} -> {host}:{}", p.container_port, p.proto.as_str(), p.bound)?;
        }
        printed += 1;
    }
    if printed == 0
        && let Some(f) = filter
    {
        bail!("no public port '{f}' published for the container");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_forms() {
        let one = |s| parse_publish(s).unwrap();
        let p = one("8080:80");
        assert_eq!(
            p,
            vec![PortConfig {
                proto: Proto::Tcp,
                host_ip: [0, 0, 0, 0].into(),
                host_port: 8080,
                container_port: 80
            }]
        );
        let p = one("127.0.0.1::53/udp");
        assert_eq!(
            (p[0].host_ip, p[0].host_port, p[0].container_port, p[0].proto),
            ("127.0.0.1".parse().unwrap(), 0, 53, Proto::Udp)
        );
        let p = one("80");
        assert_eq!((p[0].host_port, p[0].container_port), (0, 80));
        let p = one("[::1]:9000:90");
        assert_eq!((p[0].host_ip, p[0].host_port), ("::1".parse().unwrap(), 9000));
        let p = one("7000-7002:80-82");
        assert_eq!(
            p.iter().map(|p| (p.host_port, p.container_port)).collect::<Vec<_>>(),
            [(7000, 80), (7001, 81), (7002, 82)]
        );
        for bad in ["7000-7001:80", "80/sctp", "a:b", "1:2:3:4", "0", "[::1:80:80"] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn run_flags_to_endpoints() {
        assert!(endpoint_for_run(&["none".into()], &[], None, &[]).unwrap().is_none());
        assert!(endpoint_for_run(&["none".into()], &[], None, &["80".into()]).is_err());
        assert!(endpoint_for_run(&["host".into(), "n".into()], &[], None, &[]).is_err());
        let e = endpoint_for_run(
            &["a".into(), "b".into()],
            &["x".into()],
            Some(Ipv4Addr::new(10, 0, 0, 9)),
            &["80".into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(e.networks[0].aliases, ["x"]);
        assert_eq!(e.networks[0].ipv4_address, Some(Ipv4Addr::new(10, 0, 0, 9)));
        assert!(e.networks[1].aliases.is_empty());
        assert_eq!(e.ports.len(), 1);
    }
}
