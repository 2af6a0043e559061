//! Address planning: subnets from a pool that overlap neither the host's routes nor other berth
//! networks, gateways, and endpoint addresses. Pure functions; the caller holds the state lock.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::netlink::{Prefix, mask};
use super::{NetworkError, Result};

/// Where automatic subnets come from: `base` cut into subnets of `size` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// The whole range.
    pub base: Prefix,
    /// The prefix length of each subnet.
    pub size: u8,
}

impl Default for Pool {
    /// 10.89.0.0/16 in /24s: 256 networks of 253 endpoints.
    fn default() -> Self {
        Pool {
            base: Prefix {
                addr: Ipv4Addr::new(10, 89, 0, 0),
                len: 16,
            },
            size: 24,
        }
    }
}

impl Pool {
    /// Parses `BASE/LEN` or `BASE/LEN/SIZE` (e.g. `10.89.0.0/16/24`), as in `BERTH_ADDRESS_POOL`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| NetworkError::Invalid(format!("invalid address pool {s:?}: {why}"));
        let mut parts = s.splitn(3, '/');
        let base = parts.next().unwrap_or_default();
        let len = parts.next().ok_or_else(|| bad("want BASE/LEN[/SIZE]"))?;
        let base = parse_prefix(&format!("{base}/{len}")).map_err(|_| bad("bad base prefix"))?;
        let size = match parts.next() {
            Some(n) => n.parse::<u8>().map_err(|_| bad("bad subnet size"))?,
            None => 24,
        };
        if size < base.len || size > 30 {
            return Err(bad("the subnet size must be between the pool's prefix length and 30"));
        }
        Ok(Pool { base, size })
    }

    /// The first subnet of the pool that overlaps nothing in `taken`.
    pub fn pick(&self, taken: &[Prefix]) -> Result<Prefix> {
        let count = 1u64 << (self.size - self.base.len);
        let step = 1u64 << (32 - self.size);
        for i in 0..count {
            let addr = Ipv4Addr::from((u64::from(u32::from(self.base.addr)) + i * step) as u32);
            let candidate = Prefix { addr, len: self.size };
            if !taken.iter().any(|t| t.overlaps(&candidate)) {
                return Ok(candidate);
            }
        }
        Err(NetworkError::Ipam(format!(
            "all subnets of {} are in use or overlap host routes; remove unused networks or set BERTH_ADDRESS_POOL",
            self.base
        )))
    }
}

/// Parses `a.b.c.d/len` into a prefix, requiring the host bits to be zero.
pub fn parse_prefix(s: &str) -> Result<Prefix> {
    let bad = |why: &str| NetworkError::Invalid(format!("invalid subnet {s:?}: {why}"));
    let (addr, len) = s.split_once('/').ok_or_else(|| bad("want a.b.c.d/len"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| bad("not an IPv4 address (IPv6 subnets are not supported yet)"))?;
    let len: u8 = len.parse().map_err(|_| bad("bad prefix length"))?;
    if !(8..=30).contains(&len) {
        return Err(bad("the prefix length must be between 8 and 30"));
    }
    if mask(addr, len) != addr {
        return Err(bad(&format!(
            "host bits are set; did you mean {}/{len}?",
            mask(addr, len)
        )));
    }
    Ok(Prefix { addr, len })
}

/// The `n`th address of a subnet.
pub fn nth(subnet: Prefix, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.addr) + n)
}

/// The broadcast address of a subnet.
pub fn broadcast(subnet: Prefix) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.addr) | (u32::MAX >> subnet.len))
}

/// Checks that `addr` can be given to a host in `subnet`: inside it, and neither its network nor
/// its broadcast address.
pub fn check_host(subnet: Prefix, addr: Ipv4Addr, what: &str) -> Result<()> {
    if !subnet.contains(addr) {
        return Err(NetworkError::Invalid(format!(
            "{what} {addr} is not in subnet {subnet}"
        )));
    }
    if addr == subnet.addr || addr == broadcast(subnet) {
        return Err(NetworkError::Invalid(format!(
            "{what} {addr} is the network or broadcast address of {subnet}"
        )));
    }
    Ok(())
}

/// The lowest free host address of `subnet`, given the addresses in use (the gateway among them).
pub fn next_free(subnet: Prefix, used: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr> {
    let hosts = (1u32 << (32 - subnet.len)) - 2;
    (1..=hosts)
        .map(|n| nth(subnet, n))
        .find(|a| !used.contains(a))
        .ok_or_else(|| NetworkError::Ipam(format!("no free address left in {subnet}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        parse_prefix(s).unwrap()
    }

    #[test]
    fn pool_skips_taken_and_overlapping_prefixes() {
        let pool = Pool::default();
        assert_eq!(pool.pick(&[]).unwrap(), p("10.89.0.0/24"));
        // A host route covering the first two /24s and a berth network on the third.
        let taken = [p("10.89.0.0/23"), p("10.89.2.0/24")];
        assert_eq!(pool.pick(&taken).unwrap(), p("10.89.3.0/24"));
        let all = [p("10.0.0.0/8")];
        let e = pool.pick(&all).unwrap_err().to_string();
        assert!(e.contains("10.89.0.0/16") && e.contains("BERTH_ADDRESS_POOL"), "{e}");
    }

    #[test]
    fn pool_parses_and_rejects() {
        let pool = Pool::parse("172.30.0.0/16/28").unwrap();
        assert_eq!(pool.size, 28);
        assert_eq!(pool.pick(&[p("172.30.0.0/28")]).unwrap(), p("172.30.0.16/28"));
        assert_eq!(Pool::parse("10.89.0.0/16").unwrap(), Pool::default());
        assert!(Pool::parse("10.89.0.0").is_err());
        assert!(Pool::parse("10.89.0.0/24/16").is_err());
        assert!(Pool::parse("10.89.0.1/16").is_err());
    }

    #[test]
    fn subnets_must_be_clean() {
        assert!(parse_prefix("10.1.2.0/24").is_ok());
        let e = parse_prefix("10.1.2.3/24").unwrap_err().to_string();
        assert!(e.contains("did you mean 10.1.2.0/24"), "{e}");
        assert!(parse_prefix("fd00::/64").is_err());
        assert!(parse_prefix("10.0.0.0/31").is_err());
    }

    #[test]
    fn hosts_are_allocated_lowest_first() {
        let s = p("10.1.2.0/30");
        let mut used = BTreeSet::from([nth(s, 1)]);
        assert_eq!(next_free(s, &used).unwrap(), Ipv4Addr::new(10, 1, 2, 2));
        used.insert(nth(s, 2));
        assert!(next_free(s, &used).unwrap_err().to_string().contains("no free address"));
        assert!(check_host(s, Ipv4Addr::new(10, 1, 2, 3), "address").is_err());
        assert!(check_host(s, Ipv4Addr::new(10, 1, 3, 1), "address").is_err());
        assert!(check_host(s, Ipv4Addr::new(10, 1, 2, 1), "address").is_ok());
    }
}
