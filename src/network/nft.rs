//! A minimal nf_tables client that speaks netlink itself: it replaces the per-namespace egress
//! table (TCP from the bridges redirected to the userland proxy) in one atomic batch, and deletes it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use crate::network::{NetworkError, Result};

// Constants from the kernel's uapi headers. `libc` has only some of them (and none of the
// attribute numbers), so they are all spelled out here, grouped by header, for one place to read.

// linux/netlink.h
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_ACK: u16 = 0x04;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const NLA_HDRLEN: usize = 4;
const NLA_F_NESTED: u16 = 0x8000;

// linux/netfilter/nfnetlink.h
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNETLINK_V0: u8 = 0;

// linux/netfilter.h
const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_IPV4: u8 = 2;
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_ACCEPT: u32 = 1;
/// `NF_IP_PRI_NAT_DST`, what nft calls `dstnat`.
const NF_IP_PRI_NAT_DST: i32 = -100;

// linux/netfilter/nf_nat.h
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 0x02;

// linux/netfilter/nf_tables.h: message types.
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;

// linux/netfilter/nf_tables.h: attributes.
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_REDIR_REG_PROTO_MIN: u16 = 1;
const NFTA_REDIR_FLAGS: u16 = 3;

// linux/netfilter/nf_tables.h: values.
const NFT_REG_1: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
/// `NFT_NAME_MAXLEN`: table and chain names, NUL included.
const NFT_NAME_MAXLEN: usize = 256;

/// `IFNAMSIZ` from linux/if.h: an interface name, NUL included.
const IFNAMSIZ: usize = 16;
/// Offset of the destination address in an IPv4 header.
const IPV4_DADDR_OFFSET: u32 = 16;
/// Receive-buffer room per acknowledgement (the kernel charges each datagram about this much).
const RX_BUF_PER_STEP: usize = 1024;
/// The least send and receive buffer asked for: about Linux's default (`net.core.wmem_default`).
const MIN_SOCKET_BUF: usize = 256 * 1024;
/// The chain every egress rule goes in.
const CHAIN: &str = "prerouting";

/// One bridge whose containers get egress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressBridge {
    /// The bridge's interface name (at most 15 bytes).
    pub ifname: String,
    /// The network address of the bridge's subnet.
    pub subnet: Ipv4Addr,
    /// The subnet's prefix length (1 to 32).
    pub prefix_len: u8,
}

/// Replaces the table `ip <table>` in the current network namespace, atomically, with a nat chain
/// `prerouting` (hook prerouting, priority dstnat, policy accept) holding, for each bridge, the
/// rule `iifname "<ifname>" ip daddr != <subnet>/<prefix> meta l4proto tcp redirect to :<port>`.
/// With no bridges, the table holds just the empty chain.
pub fn apply_egress(table: &str, port: u16, bridges: &[EgressBridge]) -> Result<()> {
    check_name("table", table)?;
    for b in bridges {
        check_bridge(b)?;
    }
    let mut batch = Batch::new();
    // Create, delete, create: works whether or not the table existed, and the kernel applies the
    // whole batch or nothing, so the old rules stay in place until the new ones replace them.
    batch.push(NFT_MSG_NEWTABLE, NLM_F_CREATE, format!("create table {table}"), |a| {
        table_attrs(a, table)
    });
    batch.push(NFT_MSG_DELTABLE, 0, format!("delete old table {table}"), |a| {
        a.str(NFTA_TABLE_NAME, table)
    });
    batch.push(NFT_MSG_NEWTABLE, NLM_F_CREATE, format!("create table {table}"), |a| {
        table_attrs(a, table)
    });
    batch.push(
        NFT_MSG_NEWCHAIN,
        NLM_F_CREATE,
        format!("add chain {table} {CHAIN}"),
        |a| nat_prerouting_chain(a, table),
    );
    for b in bridges {
        batch.push(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            format!("add rule for {}", b.ifname),
            |a| redirect_rule(a, table, port, b),
        );
    }
    let done = batch.send(&format!("replace table {table}"))?;
    tracing::debug!(
        table,
        port,
        bridges = bridges.len(),
        messages = done,
        "egress table replaced"
    );
    Ok(())
}

/// Deletes the table `ip <table>` from the current network namespace if it exists (no error when
/// absent).
pub fn delete_table(table: &str) -> Result<()> {
    check_name("table", table)?;
    let mut batch = Batch::new();
    // Creating first makes the delete succeed when the table is absent (the kernel's
    // NFT_MSG_DESTROYTABLE would too, but only from Linux 6.3).
    batch.push(NFT_MSG_NEWTABLE, NLM_F_CREATE, format!("create table {table}"), |a| {
        table_attrs(a, table)
    });
    batch.push(NFT_MSG_DELTABLE, 0, format!("delete table {table}"), |a| {
        a.str(NFTA_TABLE_NAME, table)
    });
    batch.send(&format!("delete table {table}"))?;
    tracing::debug!(table, "table deleted");
    Ok(())
}

/// Rejects a table name the kernel would refuse, with a clearer message than `EINVAL`.
fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() >= NFT_NAME_MAXLEN || name.contains('\0') {
        return Err(NetworkError::Invalid(format!(
            "invalid nftables {what} name {name:?}: it must be 1 to {} bytes with no NUL",
            NFT_NAME_MAXLEN - 1
        )));
    }
    Ok(())
}

/// Rejects a bridge whose name or subnet cannot be matched.
fn check_bridge(b: &EgressBridge) -> Result<()> {
    if b.ifname.is_empty() || b.ifname.len() >= IFNAMSIZ || b.ifname.contains('\0') {
        return Err(NetworkError::Invalid(format!(
            "invalid interface name {:?}: it must be 1 to {} bytes with no NUL",
            b.ifname,
            IFNAMSIZ - 1
        )));
    }
    if b.prefix_len == 0 || b.prefix_len > 32 {
        return Err(NetworkError::Invalid(format!(
            "invalid prefix length /{} for bridge {}: egress needs 1 to 32",
            b.prefix_len, b.ifname
        )));
    }
    Ok(())
}

/// The attributes of `NFT_MSG_NEWTABLE`.
fn table_attrs(a: &mut Attrs<'_>, table: &str) {
    a.str(NFTA_TABLE_NAME, table);
    a.u32(NFTA_TABLE_FLAGS, 0);
}

/// The attributes of the base chain: `type nat hook prerouting priority dstnat; policy accept;`.
fn nat_prerouting_chain(a: &mut Attrs<'_>, table: &str) {
    a.str(NFTA_CHAIN_TABLE, table);
    a.str(NFTA_CHAIN_NAME, CHAIN);
    a.str(NFTA_CHAIN_TYPE, "nat");
    a.u32(NFTA_CHAIN_POLICY, NF_ACCEPT);
    a.nested(NFTA_CHAIN_HOOK, |h| {
        h.u32(NFTA_HOOK_HOOKNUM, NF_INET_PRE_ROUTING);
        h.u32(NFTA_HOOK_PRIORITY, NF_IP_PRI_NAT_DST as u32);
    });
}

/// The attributes of one rule, the expressions nft generates for
/// `iifname "<if>" ip daddr != <net>/<len> meta l4proto tcp redirect to :<port>`.
fn redirect_rule(a: &mut Attrs<'_>, table: &str, port: u16, b: &EgressBridge) {
    a.str(NFTA_RULE_TABLE, table);
    a.str(NFTA_RULE_CHAIN, CHAIN);
    a.nested(NFTA_RULE_EXPRESSIONS, |e| {
        // iifname "<if>": the name as the kernel stores it, zero-padded to IFNAMSIZ.
        let mut ifname = [0u8; IFNAMSIZ];
        ifname[..b.ifname.len()].copy_from_slice(b.ifname.as_bytes());
        meta(e, NFT_META_IIFNAME);
        cmp(e, NFT_CMP_EQ, &ifname);

        // ip daddr != net/len: a whole-byte prefix compares just those bytes; any other masks
        // the address first.
        let mask = u32::MAX << (32 - u32::from(b.prefix_len));
        let net = (u32::from(b.subnet) & mask).to_be_bytes();
        if b.prefix_len.is_multiple_of(8) {
            let len = usize::from(b.prefix_len / 8);
            payload(e, IPV4_DADDR_OFFSET, len as u32);
            cmp(e, NFT_CMP_NEQ, &net[..len]);
        } else {
            payload(e, IPV4_DADDR_OFFSET, 4);
            bitwise(e, &mask.to_be_bytes(), &[0; 4]);
            cmp(e, NFT_CMP_NEQ, &net);
        }

        // meta l4proto tcp
        meta(e, NFT_META_L4PROTO);
        cmp(e, NFT_CMP_EQ, &[libc::IPPROTO_TCP as u8]);

        // redirect to :<port>
        expr(e, "immediate", |d| {
            d.u32(NFTA_IMMEDIATE_DREG, NFT_REG_1);
            d.nested(NFTA_IMMEDIATE_DATA, |v| v.bytes(NFTA_DATA_VALUE, &port.to_be_bytes()));
        });
        expr(e, "redir", |d| {
            d.u32(NFTA_REDIR_REG_PROTO_MIN, NFT_REG_1);
            d.u32(NFTA_REDIR_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
        });
    });
}

/// One expression of a rule: a list element with a name and its data.
fn expr(e: &mut Attrs<'_>, name: &str, data: impl FnOnce(&mut Attrs<'_>)) {
    e.nested(NFTA_LIST_ELEM, |x| {
        x.str(NFTA_EXPR_NAME, name);
        x.nested(NFTA_EXPR_DATA, data);
    });
}

/// `meta load <key> => reg 1`.
fn meta(e: &mut Attrs<'_>, key: u32) {
    expr(e, "meta", |d| {
        d.u32(NFTA_META_KEY, key);
        d.u32(NFTA_META_DREG, NFT_REG_1);
    });
}

/// `payload load <len>b @ network header + <offset> => reg 1`.
fn payload(e: &mut Attrs<'_>, offset: u32, len: u32) {
    expr(e, "payload", |d| {
        d.u32(NFTA_PAYLOAD_DREG, NFT_REG_1);
        d.u32(NFTA_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER);
        d.u32(NFTA_PAYLOAD_OFFSET, offset);
        d.u32(NFTA_PAYLOAD_LEN, len);
    });
}

/// `bitwise reg 1 = (reg 1 & <mask>) ^ <xor>`.
fn bitwise(e: &mut Attrs<'_>, mask: &[u8], xor: &[u8]) {
    expr(e, "bitwise", |d| {
        d.u32(NFTA_BITWISE_SREG, NFT_REG_1);
        d.u32(NFTA_BITWISE_DREG, NFT_REG_1);
        d.u32(NFTA_BITWISE_LEN, mask.len() as u32);
        d.nested(NFTA_BITWISE_MASK, |v| v.bytes(NFTA_DATA_VALUE, mask));
        d.nested(NFTA_BITWISE_XOR, |v| v.bytes(NFTA_DATA_VALUE, xor));
    });
}

/// `cmp <op> reg 1 <data>`.
fn cmp(e: &mut Attrs<'_>, op: u32, data: &[u8]) {
    expr(e, "cmp", |d| {
        d.u32(NFTA_CMP_SREG, NFT_REG_1);
        d.u32(NFTA_CMP_OP, op);
        d.nested(NFTA_CMP_DATA, |v| v.bytes(NFTA_DATA_VALUE, data));
    });
}

/// Rounds `len` up to netlink's 4-byte alignment.
const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Appends netlink attributes (`struct nlattr` + payload, each padded to 4 bytes) to a buffer.
struct Attrs<'a> {
    buf: &'a mut Vec<u8>,
}

impl Attrs<'_> {
    /// An attribute holding raw bytes.
    fn bytes(&mut self, ty: u16, data: &[u8]) {
        let len = NLA_HDRLEN + data.len();
        self.buf.extend_from_slice(&attr_len(len).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len() + align(len) - len, 0);
    }

    /// A NUL-terminated string attribute.
    fn str(&mut self, ty: u16, s: &str) {
        let mut data = Vec::with_capacity(s.len() + 1);
        data.extend_from_slice(s.as_bytes());
        data.push(0);
        self.bytes(ty, &data);
    }

    /// A 32-bit attribute in network byte order, as nf_tables expects all of them.
    fn u32(&mut self, ty: u16, v: u32) {
        self.bytes(ty, &v.to_be_bytes());
    }

    /// A nested attribute (flagged `NLA_F_NESTED`) whose children `f` writes.
    fn nested(&mut self, ty: u16, f: impl FnOnce(&mut Attrs<'_>)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; NLA_HDRLEN]);
        f(&mut Attrs { buf: self.buf });
        let len = attr_len(self.buf.len() - start);
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }
}

/// An attribute's length as its 16-bit header field.
fn attr_len(len: usize) -> u16 {
    // The messages built here are a few hundred bytes; a bigger one is a bug in this file.
    u16::try_from(len).expect("netlink attribute longer than 64 KiB")
}

/// Appends one netfilter message (`nlmsghdr` + `nfgenmsg` + attributes) to `buf`.
fn message(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16, f: impl FnOnce(&mut Attrs<'_>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]); // nlmsg_len, patched below
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel
    buf.push(family);
    buf.push(NFNETLINK_V0);
    buf.extend_from_slice(&res_id.to_be_bytes());
    f(&mut Attrs { buf });
    let len = u32::try_from(buf.len() - start).expect("netlink message longer than 4 GiB");
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// A transaction: nf_tables messages between a batch begin and a batch end, sent in one datagram
/// so the kernel applies all of them or none.
struct Batch {
    /// The encoded messages, batch begin included.
    buf: Vec<u8>,
    /// The next sequence number.
    seq: u32,
    /// What each acknowledged message does, by sequence number, for error messages.
    steps: BTreeMap<u32, String>,
}

impl Batch {
    /// A batch holding just its begin marker.
    fn new() -> Self {
        let mut buf = Vec::with_capacity(1024);
        message(
            &mut buf,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            0,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
            |_| {},
        );
        Batch {
            buf,
            seq: 1,
            steps: BTreeMap::new(),
        }
    }

    /// Adds an nf_tables message for the `ip` family; `step` names it in errors.
    fn push(&mut self, msg: u16, flags: u16, step: String, f: impl FnOnce(&mut Attrs<'_>)) {
        let ty = (NFNL_SUBSYS_NFTABLES << 8) | msg;
        message(
            &mut self.buf,
            ty,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            self.seq,
            NFPROTO_IPV4,
            0,
            f,
        );
        self.steps.insert(self.seq, step);
        self.seq += 1;
    }

    /// The whole batch, end marker included.
    fn finish(mut self) -> (Vec<u8>, BTreeMap<u32, String>) {
        let seq = self.seq;
        message(
            &mut self.buf,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            seq,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
            |_| {},
        );
        (self.buf, self.steps)
    }

    /// Sends the batch on a fresh socket of the current namespace and checks every answer;
    /// `what` names the whole transaction. Returns how many messages the kernel acknowledged.
    fn send(self, what: &str) -> Result<usize> {
        let (buf, steps) = self.finish();
        let mut sock =
            Socket::new(NETLINK_NETFILTER).map_err(|e| NetworkError::sys("open nf_tables netlink socket", e))?;
        sock.bind_auto()
            .map_err(|e| NetworkError::sys("bind nf_tables netlink socket", e))?;
        grow_buffers(&sock, buf.len(), RX_BUF_PER_STEP * (steps.len() + 1));
        let sent = sock.send(&buf, 0).map_err(|e| NetworkError::Netlink {
            op: what.to_string(),
            error: e,
        })?;
        if sent != buf.len() {
            return Err(NetworkError::Netlink {
                op: what.to_string(),
                error: std::io::Error::other(format!("short send: {sent} of {} bytes", buf.len())),
            });
        }
        // The kernel handles the batch inside `send`, so every answer is already queued: read
        // without waiting until the queue is empty.
        let mut acked = BTreeMap::new();
        let mut rx = Vec::with_capacity(64 * 1024);
        loop {
            rx.clear();
            match sock.recv(&mut rx, libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NetworkError::sys(format!("read nf_tables answers to {what}"), e)),
            }
            for (seq, errno) in parse_acks(&rx) {
                acked.entry(seq).or_insert(errno);
            }
        }
        // Report the first refusal: later ones are usually its consequences.
        if let Some((seq, errno)) = acked.iter().find(|(_, e)| **e != 0) {
            let op = steps.get(seq).cloned().unwrap_or_else(|| what.to_string());
            return Err(NetworkError::Netlink {
                op,
                error: std::io::Error::from_raw_os_error(*errno),
            });
        }
        if let Some((_, step)) = steps.iter().find(|(seq, _)| !acked.contains_key(seq)) {
            return Err(NetworkError::Netlink {
                op: step.clone(),
                error: std::io::Error::other("the kernel did not acknowledge the request"),
            });
        }
        Ok(acked.len())
    }
}

/// Makes room for a batch of `tx` bytes (sent as one datagram, so it must fit the send buffer
/// whole) and for `rx` bytes of acknowledgements (one datagram each, all queued before `send`
/// returns), and keeps refusals short (no echo of the request). The `…FORCE` options pass the
/// system-wide caps, which only a batch of hundreds of rules reaches; everything is best effort,
/// an oversized batch then fails with the kernel's `EMSGSIZE` or `ENOBUFS`.
fn grow_buffers(sock: &Socket, tx: usize, rx: usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    // Never below the usual default (so small batches change nothing), and with room for the
    // kernel's own bookkeeping on top of the payload.
    let tx = (tx + 64 * 1024).max(MIN_SOCKET_BUF);
    let rx = rx.max(MIN_SOCKET_BUF);
    if setsockopt(sock, sockopt::SndBufForce, &tx).is_err()
        && let Err(e) = setsockopt(sock, sockopt::SndBuf, &tx)
    {
        tracing::debug!(error = %e, tx, "cannot grow the netlink send buffer");
    }
    if setsockopt(sock, sockopt::RcvBufForce, &rx).is_err()
        && let Err(e) = setsockopt(sock, sockopt::RcvBuf, &rx)
    {
        tracing::debug!(error = %e, rx, "cannot grow the netlink receive buffer");
    }
    if let Err(e) = sock.set_cap_ack(true) {
        tracing::debug!(error = %e, "NETLINK_CAP_ACK unavailable");
    }
}

/// The `(sequence number, errno)` of every `NLMSG_ERROR` (an acknowledgement when errno is 0) in
/// one datagram from the kernel; other messages are skipped.
fn parse_acks(mut buf: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        // struct nlmsgerr: a negative errno, then the header of the request it answers.
        if ty == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 {
            let p = &buf[NLMSG_HDRLEN..NLMSG_HDRLEN + 4];
            let error = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
            out.push((seq, -error));
        }
        buf = &buf[align(len).min(buf.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a hex string (whitespace ignored) into bytes.
    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Encodes attributes the way `message` does, without the headers.
    fn attrs(f: impl FnOnce(&mut Attrs<'_>)) -> Vec<u8> {
        let mut buf = Vec::new();
        f(&mut Attrs { buf: &mut buf });
        buf
    }

    /// The header fields of the `i`th message in `buf`: (offset, len, type, flags, seq).
    fn headers(buf: &[u8]) -> Vec<(usize, usize, u16, u16, u32)> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < buf.len() {
            let b = &buf[off..];
            let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(b[4..6].try_into().unwrap());
            let flags = u16::from_ne_bytes(b[6..8].try_into().unwrap());
            let seq = u32::from_ne_bytes(b[8..12].try_into().unwrap());
            out.push((off, len, ty, flags, seq));
            off += len;
        }
        out
    }

    #[test]
    fn attributes_are_padded_to_four_bytes() {
        let b = attrs(|a| {
            a.bytes(1, &[0xaa]);
            a.str(2, "abcd");
            a.bytes(3, &[]);
        });
        let mut want = Vec::new();
        want.extend_from_slice(&5u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&[0xaa, 0, 0, 0]);
        want.extend_from_slice(&9u16.to_ne_bytes()); // 4 + "abcd" + NUL
        want.extend_from_slice(&2u16.to_ne_bytes());
        want.extend_from_slice(b"abcd\0\0\0\0");
        want.extend_from_slice(&4u16.to_ne_bytes());
        want.extend_from_slice(&3u16.to_ne_bytes());
        assert_eq!(b, want);
        assert!(b.len().is_multiple_of(4));
    }

    #[test]
    fn nested_attributes_carry_the_flag_and_the_padded_length_of_their_children() {
        let b = attrs(|a| {
            a.nested(7, |n| {
                n.u32(1, 0x0102_0304);
                n.nested(2, |m| m.bytes(1, &[9, 9]));
            })
        });
        let mut want = Vec::new();
        want.extend_from_slice(&24u16.to_ne_bytes());
        want.extend_from_slice(&(7 | NLA_F_NESTED).to_ne_bytes());
        want.extend_from_slice(&8u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&[1, 2, 3, 4]); // big-endian, as nf_tables wants
        want.extend_from_slice(&12u16.to_ne_bytes());
        want.extend_from_slice(&(2 | NLA_F_NESTED).to_ne_bytes());
        want.extend_from_slice(&6u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&[9, 9, 0, 0]);
        assert_eq!(b, want);
    }

    /// The body after `nfgenmsg` of what `nft --debug=mnl` 1.0.6 sent for
    /// `add chain ip t prerouting { type nat hook prerouting priority dstnat; policy accept; }`.
    const NFT_CHAIN: &str = "06000100740000000f000300707265726f7574696e670000080007006e6174000800050000000001\
                             14000480080001000000000008000200ffffff9c";

    /// The same for `add rule ip t prerouting iifname "br-abc" ip daddr != 10.1.16.0/20
    /// meta l4proto tcp redirect to :15001` (a mask is needed).
    const NFT_RULE_20: &str = "06000100740000000f000200707265726f7574696e670000a4010480\
        24000180090001006d6574610000000014000280080002000000000608000100000000013800018008000100636d7000\
        2c00028008000100000000010800020000000000180003801400010062722d61626300000000000000000000\
        340001800c0001007061796c6f616400240002800800010000000001080002000000000108000300000000100800040000000004\
        440001800c0001006269747769736500340002800800010000000001080002000000000108000300000000040c000480\
        08000100fffff0000c00058008000100000000002c00018008000100636d7000200002800800010000000001080002000000\
        00010c000380080001000a01100024000180090001006d657461000000001400028008000200000000100800010000000001\
        2c00018008000100636d700020000280080001000000000108000200000000000c0003800500010006000000\
        2c0001800e000100696d6d6564696174650000001800028008000100000000010c000280060001003a990000\
        240001800a00010072656469720000001400028008000100000000010800030000000002";

    /// The same for a whole-byte prefix, `ip daddr != 10.1.0.0/16` (no mask, two bytes compared).
    const NFT_RULE_16: &str = "06000100740000000f000200707265726f7574696e6700006001048024000180090001006d6574610000\
        000014000280080002000000000608000100000000013800018008000100636d70002c000280080001000000000108000200\
        00000000180003801400010062722d61626300000000000000000000340001800c0001007061796c6f616400240002800800\
        0100000000010800020000000001080003000000001008000400000000022c00018008000100636d70002000028008000100\
        0000000108000200000000010c000380060001000a01000024000180090001006d6574610000000014000280080002000000\
        001008000100000000012c00018008000100636d700020000280080001000000000108000200000000000c00038005000100\
        060000002c0001800e000100696d6d6564696174650000001800028008000100000000010c000280060001003a9900002400\
        01800a00010072656469720000001400028008000100000000010800030000000002";

    // The recorded headers are little-endian, as nft printed them on x86-64.
    #[cfg(target_endian = "little")]
    #[test]
    fn chain_matches_what_nft_sends() {
        assert_eq!(attrs(|a| nat_prerouting_chain(a, "t")), hex(NFT_CHAIN));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn rule_matches_what_nft_sends() {
        let b = EgressBridge {
            ifname: "br-abc".into(),
            subnet: Ipv4Addr::new(10, 1, 16, 0),
            prefix_len: 20,
        };
        assert_eq!(attrs(|a| redirect_rule(a, "t", 15001, &b)), hex(NFT_RULE_20));
        let b = EgressBridge {
            ifname: "br-abc".into(),
            subnet: Ipv4Addr::new(10, 1, 0, 0),
            prefix_len: 16,
        };
        assert_eq!(attrs(|a| redirect_rule(a, "t", 15001, &b)), hex(NFT_RULE_16));
    }

    #[test]
    fn host_bits_of_the_subnet_are_masked_off() {
        let a = EgressBridge {
            ifname: "br-1".into(),
            subnet: Ipv4Addr::new(10, 1, 16, 0),
            prefix_len: 20,
        };
        let b = EgressBridge {
            subnet: Ipv4Addr::new(10, 1, 17, 9),
            ..a.clone()
        };
        assert_eq!(
            attrs(|x| redirect_rule(x, "t", 1, &a)),
            attrs(|x| redirect_rule(x, "t", 1, &b))
        );
    }

    #[test]
    fn batch_is_framed_by_begin_and_end_with_acks_on_every_step() {
        let mut batch = Batch::new();
        batch.push(NFT_MSG_NEWTABLE, NLM_F_CREATE, "a".into(), |a| table_attrs(a, "t"));
        batch.push(NFT_MSG_DELTABLE, 0, "b".into(), |a| a.str(NFTA_TABLE_NAME, "t"));
        let (buf, steps) = batch.finish();
        let h = headers(&buf);
        assert_eq!(h.len(), 4);
        let (_, len, ty, flags, seq) = h[0];
        assert_eq!((len, ty, flags, seq), (20, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0));
        assert_eq!(
            &buf[16..20],
            &[0, 0, 0, 10],
            "nfgenmsg: AF_UNSPEC, v0, res_id NFTABLES big-endian"
        );
        let (off, len, ty, flags, seq) = h[1];
        assert_eq!((ty, flags, seq), (0x0a00, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, 1));
        assert_eq!(&buf[off + 16..off + 20], &[NFPROTO_IPV4, 0, 0, 0]);
        assert_eq!(len, 16 + 4 + 8 + 8);
        let (_, _, ty, flags, seq) = h[2];
        assert_eq!((ty, flags, seq), (0x0a02, NLM_F_REQUEST | NLM_F_ACK, 2));
        let (_, len, ty, flags, seq) = h[3];
        assert_eq!((len, ty, flags, seq), (20, NFNL_MSG_BATCH_END, NLM_F_REQUEST, 3));
        assert_eq!(
            steps.into_iter().collect::<Vec<_>>(),
            [(1, "a".to_string()), (2, "b".to_string())]
        );
        assert!(
            h.iter()
                .all(|(off, len, ..)| off.is_multiple_of(4) && len.is_multiple_of(4))
        );
    }

    #[test]
    fn acks_and_errors_are_parsed() {
        let mut buf = Vec::new();
        for (seq, errno) in [(1u32, 0i32), (2, -libc::ENOENT)] {
            buf.extend_from_slice(&36u32.to_ne_bytes());
            buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&errno.to_ne_bytes());
            buf.extend_from_slice(&[0; 16]); // the request's header
        }
        assert_eq!(parse_acks(&buf), [(1, 0), (2, libc::ENOENT)]);
        // A truncated message at the end is ignored.
        assert_eq!(parse_acks(&buf[..50]), [(1, 0)]);
    }

    /// Needs root (it enters a fresh network namespace on its own thread) and fails without it.
    #[test]
    fn a_refused_batch_names_its_step_and_changes_nothing() {
        let t = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare: this test needs root");
            let b = EgressBridge {
                ifname: "br-1".into(),
                subnet: Ipv4Addr::new(10, 0, 0, 0),
                prefix_len: 24,
            };
            let mut batch = Batch::new();
            batch.push(NFT_MSG_NEWTABLE, NLM_F_CREATE, "create table t".into(), |a| {
                table_attrs(a, "t")
            });
            // No chain `prerouting` in table t: the kernel refuses the rule.
            batch.push(
                NFT_MSG_NEWRULE,
                NLM_F_CREATE | NLM_F_APPEND,
                "add rule for br-1".into(),
                |a| redirect_rule(a, "t", 1, &b),
            );
            let refused = batch.send("test batch");
            let listed = std::process::Command::new("nft")
                .args(["list", "tables"])
                .output()
                .expect("run nft");
            (refused, String::from_utf8_lossy(&listed.stdout).into_owned())
        });
        let (refused, tables) = t.join().expect("namespace thread");
        match refused {
            Err(NetworkError::Netlink { op, error }) => {
                assert_eq!(op, "add rule for br-1");
                assert_eq!(error.raw_os_error(), Some(libc::ENOENT));
            }
            other => panic!("expected a netlink refusal, got {other:?}"),
        }
        assert_eq!(tables.trim(), "", "the table of a refused batch was kept");
    }

    #[test]
    fn bad_names_and_prefixes_are_refused_before_any_netlink() {
        let ok = EgressBridge {
            ifname: "br-1".into(),
            subnet: Ipv4Addr::new(10, 0, 0, 0),
            prefix_len: 24,
        };
        assert!(check_bridge(&ok).is_ok());
        for bad in [
            EgressBridge {
                ifname: "".into(),
                ..ok.clone()
            },
            EgressBridge {
                ifname: "sixteen-bytes-xx".into(),
                ..ok.clone()
            },
            EgressBridge {
                prefix_len: 0,
                ..ok.clone()
            },
            EgressBridge {
                prefix_len: 33,
                ..ok.clone()
            },
        ] {
            assert!(matches!(check_bridge(&bad), Err(NetworkError::Invalid(_))), "{bad:?}");
        }
        assert!(matches!(apply_egress("", 1, &[]), Err(NetworkError::Invalid(_))));
        assert!(matches!(delete_table("a\0b"), Err(NetworkError::Invalid(_))));
    }
}
