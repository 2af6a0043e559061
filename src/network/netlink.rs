//! A small synchronous rtnetlink client: links (bridges, veth pairs), addresses and routes in the
//! network namespace of the calling thread. Messages come from `netlink-packet-route`; the socket
//! from `netlink-sys`. No async runtime and no `ip` program.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};

use super::{NetworkError, Result};

/// The kernel's local routing table (addresses of this host), left out of `used_prefixes`.
const RT_TABLE_LOCAL: u8 = 255;

/// A route of the host, as far as address planning cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Prefix {
    /// The network address.
    pub addr: Ipv4Addr,
    /// The prefix length.
    pub len: u8,
}

impl Prefix {
    /// Whether two prefixes share any address.
    pub fn overlaps(&self, other: &Prefix) -> bool {
        let len = self.len.min(other.len);
        mask(self.addr, len) == mask(other.addr, len)
    }

    /// Whether `addr` lies inside the prefix.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        mask(addr, self.len) == mask(self.addr, self.len)
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl From<Prefix> for String {
    fn from(p: Prefix) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for Prefix {
    type Error = NetworkError;

    fn try_from(s: String) -> Result<Prefix> {
        super::ipam::parse_prefix(&s)
    }
}

/// `addr` with all but the first `len` bits cleared.
pub fn mask(addr: Ipv4Addr, len: u8) -> Ipv4Addr {
    let bits = u32::from(addr);
    let m = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    };
    Ipv4Addr::from(bits & m)
}

/// A netlink route socket bound in the calling thread's network namespace.
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// Opens a socket in the current thread's network namespace.
    pub fn open() -> Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| NetworkError::sys("open netlink socket", e))?;
        socket
            .bind_auto()
            .map_err(|e| NetworkError::sys("bind netlink socket", e))?;
        socket.set_ext_ack(true).ok();
        Ok(Netlink { socket, seq: 0 })
    }

    /// Sends one request and collects the replies until the ACK (or the end of a dump).
    fn request(&mut self, op: &str, message: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        let fail = |error: std::io::Error| NetworkError::Netlink {
            op: op.to_string(),
            error,
        };
        self.socket.send(&buf, 0).map_err(fail)?;
        let mut replies = Vec::new();
        let mut rx = vec![0u8; 64 * 1024];
        loop {
            let n = self.socket.recv(&mut &mut rx[..], 0).map_err(fail)?;
            let mut offset = 0;
            while offset < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[offset..n])
                    .map_err(|e| fail(std::io::Error::other(e.to_string())))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(fail(std::io::Error::other("zero-length netlink message")));
                }
                offset += len.next_multiple_of(4);
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(_) => Err(fail(e.to_io())),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(m) => {
                        replies.push(m);
                        if flags & NLM_F_DUMP != NLM_F_DUMP {
                            // A plain get answers with one message and no ACK.
                            if flags & NLM_F_ACK == 0 {
                                return Ok(replies);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends a change and waits for its ACK.
    fn change(&mut self, op: &str, message: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.request(op, message, NLM_F_ACK | flags).map(drop)
    }

    /// The index of the link called `name`, if there is one.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(&format!("get link {name}"), RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(NetworkError::Netlink { error, .. }) if error.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The index of `name`, or an error naming it.
    pub fn require_link(&mut self, name: &str) -> Result<u32> {
        self.link_index(name)?
            .ok_or_else(|| NetworkError::NotFound(format!("no such network interface {name}")))
    }

    /// Creates a bridge (down).
    pub fn create_bridge(&mut self, name: &str) -> Result<u32> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.change(
            &format!("create bridge {name}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        self.require_link(name)
    }

    /// Creates a veth pair: `name` here, `peer` in the namespace `peer_netns` (an open namespace
    /// fd), or here when `None`. Returns the index of `name`.
    pub fn create_veth(&mut self, name: &str, peer: &str, peer_netns: Option<RawFd>) -> Result<u32> {
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes.push(LinkAttribute::IfName(peer.to_string()));
        if let Some(fd) = peer_netns {
            peer_msg.attributes.push(LinkAttribute::NetNsFd(fd));
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.change(
            &format!("create veth pair {name}/{peer}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        self.require_link(name)
    }

    /// Sets a link up, and optionally puts it under a bridge first.
    pub fn set_up(&mut self, index: u32, controller: Option<u32>) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        if let Some(c) = controller {
            msg.attributes.push(LinkAttribute::Controller(c));
        }
        self.change(&format!("set link {index} up"), RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Deletes a link (and, for a veth, its peer).
    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.change(&format!("delete link {index}"), RouteNetlinkMessage::DelLink(msg), 0)
    }

    /// Adds an IPv4 address with its prefix length to a link.
    pub fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix_len;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(IpAddr::V4(addr)));
        msg.attributes.push(AddressAttribute::Address(IpAddr::V4(addr)));
        let broadcast = Ipv4Addr::from(u32::from(mask(addr, prefix_len)) | (u32::MAX >> prefix_len.min(31)));
        if prefix_len < 31 {
            msg.attributes.push(AddressAttribute::Broadcast(broadcast));
        }
        self.change(
            &format!("add address {addr}/{prefix_len} to link {index}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Adds a default route through `gateway`.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> Result<()> {
        let mut msg = RouteMessage::default();
        msg.header = RouteHeader {
            address_family: AddressFamily::Inet,
            table: RouteHeader::RT_TABLE_MAIN,
            protocol: RouteProtocol::Boot,
            scope: RouteScope::Universe,
            kind: RouteType::Unicast,
            ..msg.header
        };
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        self.change(
            &format!("add default route via {gateway}"),
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Every IPv4 prefix this namespace has a route or an address for (the main and local tables,
    /// without default routes and loopback).
    pub fn used_prefixes(&mut self) -> Result<Vec<Prefix>> {
        let mut out = Vec::new();
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        for reply in self.request("list routes", RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)? {
            let RouteNetlinkMessage::NewRoute(r) = reply else {
                continue;
            };
            if r.header.destination_prefix_length == 0 || r.header.table == RT_TABLE_LOCAL {
                continue;
            }
            for a in &r.attributes {
                if let RouteAttribute::Destination(RouteAddress::Inet(d)) = a
                    && !d.is_loopback()
                {
                    out.push(Prefix {
                        addr: *d,
                        len: r.header.destination_prefix_length,
                    });
                }
            }
        }
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        for reply in self.request("list addresses", RouteNetlinkMessage::GetAddress(msg), NLM_F_DUMP)? {
            let RouteNetlinkMessage::NewAddress(a) = reply else {
                continue;
            };
            for attr in &a.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip)) = attr
                    && !ip.is_loopback()
                {
                    out.push(Prefix {
                        addr: mask(*ip, a.header.prefix_len),
                        len: a.header.prefix_len,
                    });
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_overlap_and_contain() {
        let p = |a: [u8; 4], len| Prefix {
            addr: Ipv4Addr::from(a),
            len,
        };
        assert!(p([10, 89, 0, 0], 16).overlaps(&p([10, 89, 3, 0], 24)));
        assert!(p([10, 89, 3, 0], 24).overlaps(&p([10, 89, 0, 0], 16)));
        assert!(!p([10, 89, 3, 0], 24).overlaps(&p([10, 89, 4, 0], 24)));
        assert!(p([10, 89, 3, 0], 24).contains(Ipv4Addr::new(10, 89, 3, 200)));
        assert!(!p([10, 89, 3, 0], 24).contains(Ipv4Addr::new(10, 89, 4, 1)));
        assert_eq!(mask(Ipv4Addr::new(10, 1, 2, 3), 0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(mask(Ipv4Addr::new(10, 1, 2, 3), 32), Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(p([10, 89, 3, 0], 24).to_string(), "10.89.3.0/24");
    }
}
