//! Host-name lookup for berth's own connections (registries, `ADD` URLs), without the C library's
//! name service switch.
//!
//! The berth binary is linked statically (build.rs), and a static glibc serves NSS sources other
//! than `files` and `dns` by `dlopen`ing their modules, which only works with the very glibc
//! version berth was built with. So berth reads the two sources itself, the way Go's resolver does
//! (and with it Docker): a literal address is used as it is; then `/etc/hosts`; then DNS, asking
//! the `nameserver`s of `/etc/resolv.conf` for A and AAAA records with its `search` list and its
//! `ndots`, `timeout` and `attempts` options (glibc's defaults and limits). `localhost` and names
//! under it fall back to the loopback addresses when `/etc/hosts` does not list them (RFC 6761).
//! Other sources (mDNS, LDAP, systemd's `resolve` module) are not asked; a host whose resolv.conf
//! names systemd-resolved's stub (127.0.0.53) still gets its answers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::NetworkError;
use super::dns::{exchange_tcp, exchange_udp, upstreams_from_resolv_conf};

/// Search domains glibc keeps at most (MAXDNSRCH).
const MAX_SEARCH: usize = 6;

/// The resolver settings of a resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// Servers asked in order; 127.0.0.1 when the file names none (as glibc).
    pub nameservers: Vec<SocketAddr>,
    /// Domains tried for names with fewer than `ndots` dots, in order.
    pub search: Vec<String>,
    /// Dots a name needs to be tried as it is before the search list (default 1, at most 15).
    pub ndots: usize,
    /// How long each server gets for each query (default 5 s, at most 30 s).
    pub timeout: Duration,
    /// Rounds over the servers (default 2, at most 5).
    pub attempts: u32,
}

impl ResolvConf {
    /// Settings from resolv.conf text: `nameserver`, `search` or `domain` (the last of them wins),
    /// and `options`; unknown lines and options are skipped.
    pub fn parse(text: &str) -> Self {
        let mut conf = ResolvConf {
            nameservers: upstreams_from_resolv_conf(text),
            search: Vec::new(),
            ndots: 1,
            timeout: Duration::from_secs(5),
            attempts: 2,
        };
        if conf.nameservers.is_empty() {
            conf.nameservers.push(SocketAddr::from((Ipv4Addr::LOCALHOST, 53)));
        }
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("search") => conf.search = words.take(MAX_SEARCH).map(normalize).collect(),
                Some("domain") => conf.search = words.next().map(normalize).into_iter().collect(),
                Some("options") => {
                    for option in words {
                        let Some((key, value)) = option.split_once(':') else {
                            continue;
                        };
                        let Ok(n) = value.parse::<u32>() else {
                            continue;
                        };
                        match key {
                            "ndots" => conf.ndots = n.min(15) as usize,
                            "timeout" => conf.timeout = Duration::from_secs(u64::from(n.clamp(1, 30))),
                            "attempts" => conf.attempts = n.clamp(1, 5),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        conf.search.retain(|d| !d.is_empty());
        conf
    }

    /// The names tried for `name`, in order (glibc's `res_search`): a name ending in a dot only as
    /// it is; one with at least `ndots` dots as it is and then with each search domain; a shorter
    /// one with each search domain first.
    pub fn candidates(&self, name: &str) -> Vec<String> {
        if let Some(absolute) = name.strip_suffix('.') {
            return vec![absolute.to_string()];
        }
        let searched = self.search.iter().map(|d| format!("{name}.{d}"));
        if name.matches('.').count() >= self.ndots {
            std::iter::once(name.to_string()).chain(searched).collect()
        } else {
            searched.chain(std::iter::once(name.to_string())).collect()
        }
    }
}

/// The addresses of `host`, IPv4 first, from the host's `/etc/hosts` and `/etc/resolv.conf`.
/// `deadline` bounds the DNS queries.
pub fn lookup_host(host: &str, deadline: Option<Instant>) -> Result<Vec<IpAddr>, NetworkError> {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let conf = std::fs::read_to_string(Path::new("/etc/resolv.conf")).unwrap_or_default();
    lookup_with(host, &hosts, &ResolvConf::parse(&conf), deadline)
}

/// [`lookup_host`] with the hosts file's text and resolver settings given.
pub fn lookup_with(
    host: &str,
    hosts: &str,
    conf: &ResolvConf,
    deadline: Option<Instant>,
) -> Result<Vec<IpAddr>, NetworkError> {
    let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(addr) = literal.parse::<IpAddr>() {
        return Ok(vec![addr]);
    }
    let fail = |reason: String| NetworkError::Lookup {
        host: host.to_string(),
        reason,
    };
    if host.is_empty() || host.len() > 253 {
        return Err(fail("not a host name".into()));
    }
    let listed = hosts_lookup(hosts, host);
    if !listed.is_empty() {
        return Ok(listed);
    }
    let lower = normalize(host);
    if lower == "localhost" || lower.ends_with(".localhost") {
        return Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]);
    }
    let mut failures = Vec::new();
    for candidate in conf.candidates(host) {
        match ask_name(&candidate, conf, deadline) {
            Found::Addresses(addrs) => return Ok(addrs),
            Found::Nothing => {}
            Found::Failed(why) => failures.push(format!("{candidate}: {why}")),
        }
    }
    let servers: Vec<String> = conf.nameservers.iter().map(|s| s.ip().to_string()).collect();
    if failures.is_empty() {
        Err(fail(format!(
            "no address in /etc/hosts or DNS (asked {})",
            servers.join(", ")
        )))
    } else {
        Err(fail(failures.join("; ")))
    }
}

/// The addresses `/etc/hosts` text lists for `name` (its canonical name or an alias, ignoring
/// case), in the file's order.
pub fn hosts_lookup(text: &str, name: &str) -> Vec<IpAddr> {
    let wanted = normalize(name);
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(addr) = words.next().and_then(|a| a.split('%').next()?.parse::<IpAddr>().ok()) else {
            continue;
        };
        if words.any(|w| normalize(w) == wanted) && !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

/// How asking DNS for one name ended.
enum Found {
    /// It has these addresses.
    Addresses(Vec<IpAddr>),
    /// It does not exist, or has no address records.
    Nothing,
    /// No server gave an answer.
    Failed(String),
}

/// The A and then AAAA records of `name`.
fn ask_name(name: &str, conf: &ResolvConf, deadline: Option<Instant>) -> Found {
    let mut addrs = Vec::new();
    let mut failure = None;
    for qtype in [RecordType::A, RecordType::AAAA] {
        match ask(name, qtype, conf, deadline) {
            Ok(Some(found)) => addrs.extend(found),
            // NXDOMAIN is about the name, whatever the type: no need to ask for AAAA.
            Ok(None) => {
                return if addrs.is_empty() {
                    Found::Nothing
                } else {
                    Found::Addresses(addrs)
                };
            }
            Err(why) => failure = Some(why),
        }
    }
    match (addrs.is_empty(), failure) {
        (false, _) => Found::Addresses(addrs),
        (true, Some(why)) => Found::Failed(why),
        (true, None) => Found::Nothing,
    }
}

/// One question to the servers in turn, `attempts` rounds: the records of the first reply that
/// is an answer (`Some`, maybe empty), `None` for NXDOMAIN, or why no server answered.
fn ask(
    name: &str,
    qtype: RecordType,
    conf: &ResolvConf,
    deadline: Option<Instant>,
) -> Result<Option<Vec<IpAddr>>, String> {
    let query = question(name, qtype)?;
    let mut last = String::from("no server asked");
    for _ in 0..conf.attempts {
        for &server in &conf.nameservers {
            let timeout = match deadline {
                Some(d) => conf.timeout.min(d.saturating_duration_since(Instant::now())),
                None => conf.timeout,
            };
            if timeout.is_zero() {
                return Err(format!("timed out ({last})"));
            }
            let reply = exchange_udp(server, &query, timeout).and_then(|reply| {
                // TC: the answer did not fit a datagram; ask again over TCP.
                if reply.len() > 2 && reply[2] & 0x02 != 0 {
                    exchange_tcp(server, &query, timeout)
                } else {
                    Ok(reply)
                }
            });
            let reply = match reply.map(|r| Message::from_vec(&r)) {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => {
                    last = format!("{}: bad reply: {e}", server.ip());
                    continue;
                }
                Err(e) => {
                    last = format!("{}: {e}", server.ip());
                    continue;
                }
            };
            match reply.metadata.response_code {
                ResponseCode::NoError => return Ok(Some(addresses(&reply, qtype))),
                ResponseCode::NXDomain => return Ok(None),
                code => last = format!("{}: {code}", server.ip()),
            }
        }
    }
    Err(last)
}

/// A recursive query for `name`'s `qtype` records, with a random id.
fn question(name: &str, qtype: RecordType) -> Result<Vec<u8>, String> {
    let name = Name::from_ascii(format!("{name}.")).map_err(|e| format!("not a host name: {e}"))?;
    let id = u16::from_str_radix(&crate::fsutil::random_hex(2), 16).unwrap_or(0x4242);
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name, qtype));
    message.to_vec().map_err(|e| format!("cannot encode the query: {e}"))
}

/// The addresses of type `qtype` in a reply's answer section (CNAMEs lead to them in the same
/// section, as recursive servers answer).
fn addresses(reply: &Message, qtype: RecordType) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for record in &reply.answers {
        let addr = match (&record.data, qtype) {
            (RData::A(a), RecordType::A) => IpAddr::V4(a.0),
            (RData::AAAA(a), RecordType::AAAA) => IpAddr::V6(a.0),
            _ => continue,
        };
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

/// A name compared as DNS does: lower-case, without a trailing dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::dns::{DnsTable, Resolver};
    use std::net::{TcpListener, UdpSocket};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn no_dns() -> ResolvConf {
        ResolvConf::parse("")
    }

    #[test]
    fn literals_need_no_lookup() {
        assert_eq!(
            lookup_with("10.1.2.3", "", &no_dns(), None).unwrap(),
            vec![ip("10.1.2.3")]
        );
        assert_eq!(lookup_with("[::1]", "", &no_dns(), None).unwrap(), vec![ip("::1")]);
    }

    #[test]
    fn the_hosts_file_answers_names_and_aliases_in_order() {
        let hosts = "# comment\n127.0.0.1 localhost\n10.0.0.5  registry.lan reg # trailing\n\
                     fd00::5 REGISTRY.lan\nbad-line\n10.0.0.6 other\n";
        let found = lookup_with("Registry.LAN.", hosts, &no_dns(), None).unwrap();
        assert_eq!(found, vec![ip("10.0.0.5"), ip("fd00::5")]);
        assert_eq!(hosts_lookup(hosts, "reg"), vec![ip("10.0.0.5")]);
        assert!(hosts_lookup(hosts, "registry").is_empty());
    }

    #[test]
    fn localhost_falls_back_to_loopback() {
        let found = lookup_with("api.localhost", "", &no_dns(), None).unwrap();
        assert_eq!(found, vec![ip("127.0.0.1"), ip("::1")]);
        let listed = lookup_with("localhost", "127.0.0.2 localhost\n", &no_dns(), None).unwrap();
        assert_eq!(listed, vec![ip("127.0.0.2")]);
    }

    #[test]
    fn resolv_conf_options_follow_glibc() {
        let conf = ResolvConf::parse(
            "nameserver 10.0.0.1\ndomain old.example\nsearch a.example b.example.\n\
             options ndots:2 timeout:0 attempts:9 rotate\nnameserver fd00::1\n",
        );
        assert_eq!(
            conf.nameservers,
            vec!["10.0.0.1:53".parse().unwrap(), "[fd00::1]:53".parse().unwrap()]
        );
        assert_eq!(conf.search, vec!["a.example", "b.example"]);
        assert_eq!(
            (conf.ndots, conf.timeout, conf.attempts),
            (2, Duration::from_secs(1), 5)
        );
        assert_eq!(no_dns().nameservers, vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 53))]);
        assert_eq!(
            (no_dns().ndots, no_dns().timeout, no_dns().attempts),
            (1, Duration::from_secs(5), 2)
        );
    }

    #[test]
    fn search_order_depends_on_ndots() {
        let conf = ResolvConf::parse("search corp.example\noptions ndots:1\n");
        assert_eq!(conf.candidates("db"), vec!["db.corp.example", "db"]);
        assert_eq!(
            conf.candidates("db.internal"),
            vec!["db.internal", "db.internal.corp.example"]
        );
        assert_eq!(conf.candidates("db."), vec!["db"]);
    }

    /// A DNS server on 127.0.0.1 (an embedded resolver with a table) and settings that ask it.
    fn server(names: &[(&str, &str)]) -> (ResolvConf, std::sync::Arc<Resolver>) {
        let mut table = DnsTable::new();
        for (name, addr) in names {
            table.add_member("n", ip("127.0.0.1"));
            table.add_name("n", name, ip(addr));
        }
        let resolver = Resolver::with_timeout(table, Vec::new(), Duration::from_millis(200));
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        let tcp = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let (u, t) = (resolver.clone(), resolver.clone());
        std::thread::spawn(move || u.serve_udp(udp));
        std::thread::spawn(move || t.serve_tcp(tcp));
        let mut conf = ResolvConf::parse("search svc.test\noptions timeout:1 attempts:1\n");
        conf.nameservers = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))];
        (conf, resolver)
    }

    #[test]
    fn dns_answers_with_both_families_through_the_search_list() {
        let (conf, _server) = server(&[("api.svc.test", "10.9.0.1"), ("api.svc.test", "fd00::9")]);
        let found = lookup_with("api", "", &conf, None).unwrap();
        assert_eq!(found, vec![ip("10.9.0.1"), ip("fd00::9")]);
    }

    #[test]
    fn a_name_no_server_knows_is_an_error_naming_it() {
        // The embedded resolver forwards unknown names to its (no) upstreams and says SERVFAIL.
        let (conf, _server) = server(&[("api.svc.test", "10.9.0.1")]);
        let err = lookup_with("nosuch", "", &conf, None).unwrap_err().to_string();
        assert!(err.starts_with("cannot resolve host nosuch: "), "{err}");
        assert!(err.contains("nosuch.svc.test"), "{err}");
    }

    #[test]
    fn a_silent_server_times_out_by_the_deadline() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut conf = ResolvConf::parse("options timeout:5 attempts:2\n");
        conf.nameservers = vec![silent.local_addr().unwrap()];
        let started = Instant::now();
        let err = lookup_with("quiet.test", "", &conf, Some(started + Duration::from_millis(300))).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
        assert!(err.to_string().contains("timed out"), "{err}");
    }
}
