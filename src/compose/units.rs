//! Value grammars shared by the loader: Go-style durations, byte sizes, port specs and shell words.

use std::fmt::Write as _;

/// Parses a Go duration (`1m30s`, `500ms`, `1.5h`) into nanoseconds.
pub fn parse_duration(s: &str) -> Result<i128, String> {
    let invalid = || format!("invalid duration {s:?}");
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." {
            return Err(invalid());
        }
        let value: f64 = num.parse().map_err(|_| invalid())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("invalid duration {s:?}: missing unit")),
            _ => return Err(format!("invalid duration {s:?}: unknown unit {unit:?}")),
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    if total > i64::MAX as f64 {
        return Err(format!("invalid duration {s:?}: overflow"));
    }
    let ns = total.round() as i128;
    Ok(if neg { -ns } else { ns })
}

/// Formats nanoseconds the way Go's `time.Duration.String` does (`1m30s`, `500ms`, `2h0m0s`).
pub fn format_duration(ns: i128) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    if ns < 0 {
        out.push('-');
    }
    let u = ns.unsigned_abs();
    if u < 1_000_000_000 {
        let (div, unit) = if u < 1_000 {
            (1, "ns")
        } else if u < 1_000_000 {
            (1_000, "µs")
        } else {
            (1_000_000, "ms")
        };
        out.push_str(&frac(u, div));
        out.push_str(unit);
        return out;
    }
    let hours = u / 3_600_000_000_000;
    let mins = (u / 60_000_000_000) % 60;
    let secs_ns = u % 60_000_000_000;
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || mins > 0 {
        let _ = write!(out, "{mins}m");
    }
    out.push_str(&frac(secs_ns, 1_000_000_000));
    out.push('s');
    out
}

fn frac(v: u128, div: u128) -> String {
    let whole = v / div;
    let rem = v % div;
    if rem == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{rem:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Normalises a duration string to Go's canonical form.
pub fn normalize_duration(s: &str) -> Result<String, String> {
    parse_duration(s).map(format_duration)
}

/// Parses a byte size like Docker's `RAMInBytes` (`512m`, `1.5g`, `100`, `10MiB`), binary multiples.
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let invalid = || format!("invalid size {s:?}");
    let t = s.trim();
    let num_len = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    if num_len == 0 {
        return Err(invalid());
    }
    let value: f64 = t[..num_len].parse().map_err(|_| invalid())?;
    let suffix = t[num_len..].trim_start_matches(' ').to_ascii_lowercase();
    let suffix = suffix.strip_suffix('b').unwrap_or(&suffix);
    let suffix = suffix.strip_suffix('i').unwrap_or(suffix);
    let mult: f64 = match suffix {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(invalid()),
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes > i64::MAX as f64 {
        return Err(invalid());
    }
    Ok(bytes as i64)
}

/// One published port in long form, before it becomes YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Host address, without brackets.
    pub host_ip: Option<String>,
    /// Host port or range, as text (`8080`, `8000-8010`).
    pub published: Option<String>,
    /// Container port.
    pub target: u32,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

fn parse_range(s: &str) -> Option<(u32, u32)> {
    let one = |p: &str| -> Option<u32> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse::<u16>().ok().map(u32::from)
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            (b >= a).then_some((a, b))
        }
        None => one(s).map(|p| (p, p)),
    }
}

/// Expands a short port spec (`[[ip:]published:]target[/proto]`, ranges allowed) the way Docker does.
pub fn parse_port(spec: &str) -> Result<Vec<PortSpec>, String> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_string()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let parts: Vec<&str> = rest.split(':').collect();
    let n = parts.len();
    let (ip, host, container) = match n {
        1 => ("".to_string(), "", parts[0]),
        2 => ("".to_string(), parts[0], parts[1]),
        _ => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    let ip = if ip.starts_with('[') && ip.ends_with(']') && ip.len() >= 2 {
        ip[1..ip.len() - 1].to_string()
    } else {
        ip
    };
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("invalid ip address: {ip}"));
    }
    if container.is_empty() {
        return Err(format!("no port specified: {spec}<empty>"));
    }
    let (cs, ce) = parse_range(container).ok_or_else(|| format!("invalid containerPort: {container}"))?;
    let host_range = if host.is_empty() {
        None
    } else {
        Some(parse_range(host).ok_or_else(|| format!("invalid hostPort: {host}"))?)
    };
    if let Some((hs, he)) = host_range
        && ce - cs != he - hs
        && ce != cs
    {
        return Err(format!(
            "invalid ranges specified for container and host ports: {container} and {host}"
        ));
    }
    let host_ip = (!ip.is_empty()).then_some(ip);
    let mut out = Vec::new();
    for (i, target) in (cs..=ce).enumerate() {
        let published = host_range.map(|(hs, he)| {
            if ce == cs && he != hs {
                format!("{hs}-{he}")
            } else {
                (hs + i as u32).to_string()
            }
        });
        out.push(PortSpec {
            host_ip: host_ip.clone(),
            published,
            target,
            protocol: proto.clone(),
        });
    }
    Ok(out)
}

/// Splits a command string into words with POSIX shell quoting rules (no expansion).
pub fn shell_split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(n) => cur.push(n),
                    None => cur.push('\\'),
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(n) => cur.push(n),
                        None => return Err(format!("unterminated single quote in {s:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(n @ ('"' | '\\' | '$' | '`')) => cur.push(n),
                            Some('\n') => {}
                            Some(n) => {
                                cur.push('\\');
                                cur.push(n);
                            }
                            None => return Err(format!("unterminated double quote in {s:?}")),
                        },
                        Some(n) => cur.push(n),
                        None => return Err(format!("unterminated double quote in {s:?}")),
                    }
                }
            }
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_like_go() {
        for (i, o) in [
            ("90s", "1m30s"),
            ("500ms", "500ms"),
            ("2h", "2h0m0s"),
            ("1.5s", "1.5s"),
            ("1m30s", "1m30s"),
            ("0", "0s"),
            ("10us", "10µs"),
        ] {
            assert_eq!(normalize_duration(i).as_deref(), Ok(o), "{i}");
        }
        assert!(normalize_duration("10x").is_err());
        assert!(normalize_duration("10").is_err());
        assert!(normalize_duration("").is_err());
    }

    #[test]
    fn bytes_use_binary_multiples() {
        assert_eq!(parse_bytes("50M"), Ok(52_428_800));
        assert_eq!(parse_bytes("64m"), Ok(67_108_864));
        assert_eq!(parse_bytes("1gb"), Ok(1_073_741_824));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn ports_expand_ranges_and_addresses() {
        let p = parse_port("127.0.0.1:9000-9001:9000-9001/udp").expect("valid");
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].published.as_deref(), Some("9001"));
        assert_eq!(p[1].protocol, "udp");
        let p = parse_port("[::1]:53:53").expect("valid");
        assert_eq!(p[0].host_ip.as_deref(), Some("::1"));
        let p = parse_port("8000-8010:80").expect("valid");
        assert_eq!(p[0].published.as_deref(), Some("8000-8010"));
        assert_eq!(parse_port("abc").unwrap_err(), "invalid containerPort: abc");
        assert_eq!(parse_port("70000:80").unwrap_err(), "invalid hostPort: 70000");
        assert!(parse_port("1-3:1-2").is_err());
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            shell_split(r#"sh -c 'echo "hi there"' a\ b"#).expect("ok"),
            ["sh", "-c", "echo \"hi there\"", "a b"]
        );
        assert!(shell_split("echo 'oops").is_err());
    }
}
