//! The nf_tables netlink encoding of [`super`]'s tables: constants, the batch,
//! one encoder per expression kind, and the parser of the kernel's ACKs.

#![forbid(unsafe_code)]

use super::{chains, rules, Chain, Expr, Policy, Rule};

// nfnetlink / nf_tables constants (linux/netfilter/nfnetlink.h, nf_tables.h,
// linux/netfilter.h, linux/rtnetlink.h, linux/in.h, linux/icmpv6.h).
pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(super) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub(super) const NFNL_MSG_BATCH_END: u16 = 0x11;
pub(super) const NFT_MSG_NEWTABLE: u16 = 0;
pub(super) const NFT_MSG_NEWCHAIN: u16 = 3;
pub(super) const NFT_MSG_NEWRULE: u16 = 6;
pub(super) const NFPROTO_INET: u8 = 1;
pub(super) const NFPROTO_IPV4: u8 = 2;
pub(super) const NFPROTO_IPV6: u8 = 10;
pub(super) const NFT_TABLE_F_OWNER: u32 = 0x2;
pub(super) const NF_INET_PRE_ROUTING: u32 = 0;
pub(super) const NF_INET_FORWARD: u32 = 2;
pub(super) const NF_INET_LOCAL_OUT: u32 = 3;
pub(super) const NF_INET_POST_ROUTING: u32 = 4;
pub(super) const NF_DROP: u32 = 0;
pub(super) const NF_ACCEPT: u32 = 1;
pub(super) const NFT_META_IIFNAME: u32 = 6;
pub(super) const NFT_META_OIFNAME: u32 = 7;
pub(super) const NFT_META_NFPROTO: u32 = 15;
pub(super) const NFT_META_L4PROTO: u32 = 16;
pub(super) const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
pub(super) const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
pub(super) const NFT_REG_VERDICT: u32 = 0;
pub(super) const NFT_REG_1: u32 = 1;
pub(super) const NFT_CMP_EQ: u32 = 0;
pub(super) const NFT_CMP_NEQ: u32 = 1;
pub(super) const NFT_CMP_LTE: u32 = 3;
pub(super) const NFT_CMP_GTE: u32 = 5;
pub(super) const NFT_CT_DIRECTION: u32 = 1;
pub(super) const NFT_CT_DST_IP: u32 = 20;
pub(super) const NFT_CT_DST_IP6: u32 = 22;
pub(super) const IP_CT_DIR_ORIGINAL: u8 = 0;
pub(super) const IP_CT_DIR_REPLY: u8 = 1;
pub(super) const NFT_BYTEORDER_HTON: u32 = 1;
pub(super) const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
pub(super) const NFTA_FIB_F_DADDR: u32 = 1 << 1;
/// `RTN_LOCAL` ..= `RTN_MULTICAST`: local, broadcast, anycast, multicast.
pub(super) const RTN_LOCAL: u32 = 2;
pub(super) const RTN_MULTICAST: u32 = 5;
pub(super) const IPPROTO_TCP: u8 = 6;
pub(super) const IPPROTO_UDP: u8 = 17;
pub(super) const IPPROTO_ICMPV6: u8 = 58;
pub(super) const ND_ROUTER_SOLICIT: u8 = 133;
pub(super) const ND_NEIGHBOR_SOLICIT: u8 = 135;
pub(super) const ND_NEIGHBOR_ADVERT: u8 = 136;
pub(super) const IFNAMSIZ: usize = 16;

pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_ACK: u16 = 0x4;
pub(super) const NLM_F_EXCL: u16 = 0x200;
pub(super) const NLM_F_CREATE: u16 = 0x400;
pub(super) const NLM_F_APPEND: u16 = 0x800;
pub(super) const NLA_F_NESTED: u16 = 0x8000;
pub(super) const NLMSG_ERROR: u16 = 2;

pub(super) const NFTA_TABLE_NAME: u16 = 1;
pub(super) const NFTA_TABLE_FLAGS: u16 = 2;
pub(super) const NFTA_CHAIN_TABLE: u16 = 1;
pub(super) const NFTA_CHAIN_NAME: u16 = 3;
pub(super) const NFTA_CHAIN_HOOK: u16 = 4;
pub(super) const NFTA_CHAIN_TYPE: u16 = 7;
pub(super) const NFTA_HOOK_HOOKNUM: u16 = 1;
pub(super) const NFTA_HOOK_PRIORITY: u16 = 2;
pub(super) const NFTA_RULE_TABLE: u16 = 1;
pub(super) const NFTA_RULE_CHAIN: u16 = 2;
pub(super) const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub(super) const NFTA_LIST_ELEM: u16 = 1;
pub(super) const NFTA_EXPR_NAME: u16 = 1;
pub(super) const NFTA_EXPR_DATA: u16 = 2;
pub(super) const NFTA_META_DREG: u16 = 1;
pub(super) const NFTA_META_KEY: u16 = 2;
pub(super) const NFTA_PAYLOAD_DREG: u16 = 1;
pub(super) const NFTA_PAYLOAD_BASE: u16 = 2;
pub(super) const NFTA_PAYLOAD_OFFSET: u16 = 3;
pub(super) const NFTA_PAYLOAD_LEN: u16 = 4;
pub(super) const NFTA_FIB_DREG: u16 = 1;
pub(super) const NFTA_FIB_RESULT: u16 = 2;
pub(super) const NFTA_FIB_FLAGS: u16 = 3;
pub(super) const NFTA_CT_DREG: u16 = 1;
pub(super) const NFTA_CT_KEY: u16 = 2;
pub(super) const NFTA_CT_DIRECTION: u16 = 3;
pub(super) const NFTA_BYTEORDER_SREG: u16 = 1;
pub(super) const NFTA_BYTEORDER_DREG: u16 = 2;
pub(super) const NFTA_BYTEORDER_OP: u16 = 3;
pub(super) const NFTA_BYTEORDER_LEN: u16 = 4;
pub(super) const NFTA_BYTEORDER_SIZE: u16 = 5;
pub(super) const NFTA_CMP_SREG: u16 = 1;
pub(super) const NFTA_CMP_OP: u16 = 2;
pub(super) const NFTA_CMP_DATA: u16 = 3;
pub(super) const NFTA_IMMEDIATE_DREG: u16 = 1;
pub(super) const NFTA_IMMEDIATE_DATA: u16 = 2;
pub(super) const NFTA_DATA_VALUE: u16 = 1;
pub(super) const NFTA_DATA_VERDICT: u16 = 2;
pub(super) const NFTA_VERDICT_CODE: u16 = 1;

/// The session table's batch ([`table_batch`] of [`chains`] and [`rules`]).
pub fn batch(table: &str, policy: &Policy<'_>, seq: u32) -> (Vec<u8>, Vec<String>) {
    table_batch(table, &chains(policy), &rules(policy), seq)
}

/// The whole batch creating the owned `table` with `chains` and `rules`, as
/// bytes, and a description of each message that asks for an ACK (`what[i]`
/// is message `seq + 1 + i`). Messages are numbered from `seq` (BEGIN) to
/// `seq + what.len() + 1` (END).
pub(super) fn table_batch(
    table: &str,
    chains: &[Chain],
    rules: &[Rule],
    seq: u32,
) -> (Vec<u8>, Vec<String>) {
    let mut out = Vec::new();
    let mut what = Vec::new();
    let res_id = NFNL_SUBSYS_NFTABLES;
    message(
        &mut out,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        res_id,
        |_| {},
    );
    let new = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;
    let mut next = seq + 1;
    let mut msg = |out: &mut Vec<u8>, kind, flags, body: &dyn Fn(&mut Vec<u8>)| {
        message(out, nft_type(kind), flags, next, NFPROTO_INET, 0, body);
        next += 1;
    };
    msg(&mut out, NFT_MSG_NEWTABLE, new, &|b| {
        attr_str(b, NFTA_TABLE_NAME, table);
        attr(b, NFTA_TABLE_FLAGS, &NFT_TABLE_F_OWNER.to_be_bytes());
    });
    what.push("creation".to_string());
    for c in chains {
        msg(&mut out, NFT_MSG_NEWCHAIN, new, &|b| {
            attr_str(b, NFTA_CHAIN_TABLE, table);
            attr_str(b, NFTA_CHAIN_NAME, c.name);
            nested(b, NFTA_CHAIN_HOOK, |b| {
                attr(b, NFTA_HOOK_HOOKNUM, &c.hook.to_be_bytes());
                attr(b, NFTA_HOOK_PRIORITY, &c.priority.to_be_bytes());
            });
            attr_str(b, NFTA_CHAIN_TYPE, c.kind);
        });
        what.push(format!("the {} {} chain", c.kind, c.name));
    }
    // Without APPEND, each rule would go to the head of its chain: order
    // matters here (the accepts must come before the drop).
    let append = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK;
    for r in rules {
        msg(&mut out, NFT_MSG_NEWRULE, append, &|b| {
            attr_str(b, NFTA_RULE_TABLE, table);
            attr_str(b, NFTA_RULE_CHAIN, r.chain.name);
            nested(b, NFTA_RULE_EXPRESSIONS, |b| {
                for e in &r.exprs {
                    encode(b, e);
                }
            });
        });
        what.push(format!("{} ({} chain)", r.what, r.chain.name));
    }
    message(
        &mut out,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        next,
        0,
        res_id,
        |_| {},
    );
    (out, what)
}

/// One expression as a `NFTA_LIST_ELEM`.
fn encode(b: &mut Vec<u8>, e: &Expr) {
    let reg = NFT_REG_1.to_be_bytes();
    match e {
        Expr::Meta(key) => expr(b, "meta", |b| {
            attr(b, NFTA_META_KEY, &key.to_be_bytes());
            attr(b, NFTA_META_DREG, &reg);
        }),
        Expr::Payload { base, offset, len } => expr(b, "payload", |b| {
            attr(b, NFTA_PAYLOAD_DREG, &reg);
            attr(b, NFTA_PAYLOAD_BASE, &base.to_be_bytes());
            attr(b, NFTA_PAYLOAD_OFFSET, &offset.to_be_bytes());
            attr(b, NFTA_PAYLOAD_LEN, &len.to_be_bytes());
        }),
        Expr::FibDaddrType => expr(b, "fib", |b| {
            attr(b, NFTA_FIB_DREG, &reg);
            attr(b, NFTA_FIB_RESULT, &NFT_FIB_RESULT_ADDRTYPE.to_be_bytes());
            attr(b, NFTA_FIB_FLAGS, &NFTA_FIB_F_DADDR.to_be_bytes());
        }),
        Expr::CtDirection => expr(b, "ct", |b| {
            attr(b, NFTA_CT_DREG, &reg);
            attr(b, NFTA_CT_KEY, &NFT_CT_DIRECTION.to_be_bytes());
        }),
        Expr::CtOriginal(key) => expr(b, "ct", |b| {
            attr(b, NFTA_CT_DREG, &reg);
            attr(b, NFTA_CT_KEY, &key.to_be_bytes());
            attr(b, NFTA_CT_DIRECTION, &[IP_CT_DIR_ORIGINAL]);
        }),
        Expr::Hton4 => expr(b, "byteorder", |b| {
            attr(b, NFTA_BYTEORDER_SREG, &reg);
            attr(b, NFTA_BYTEORDER_DREG, &reg);
            attr(b, NFTA_BYTEORDER_OP, &NFT_BYTEORDER_HTON.to_be_bytes());
            attr(b, NFTA_BYTEORDER_LEN, &4u32.to_be_bytes());
            attr(b, NFTA_BYTEORDER_SIZE, &4u32.to_be_bytes());
        }),
        Expr::Cmp(op, data) => expr(b, "cmp", |b| {
            attr(b, NFTA_CMP_SREG, &reg);
            attr(b, NFTA_CMP_OP, &op.to_be_bytes());
            nested(b, NFTA_CMP_DATA, |b| attr(b, NFTA_DATA_VALUE, data));
        }),
        // masq takes no arguments: no NFTA_EXPR_DATA at all.
        Expr::Masquerade => nested(b, NFTA_LIST_ELEM, |b| attr_str(b, NFTA_EXPR_NAME, "masq")),
        Expr::Verdict(code) => expr(b, "immediate", |b| {
            attr(b, NFTA_IMMEDIATE_DREG, &NFT_REG_VERDICT.to_be_bytes());
            nested(b, NFTA_IMMEDIATE_DATA, |b| {
                nested(b, NFTA_DATA_VERDICT, |b| {
                    attr(b, NFTA_VERDICT_CODE, &code.to_be_bytes())
                })
            });
        }),
    }
}

/// `(sequence, error code)` of every NLMSG_ERROR (ACK when 0) in `data`.
pub(super) fn acks(data: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= data.len() {
        let len =
            u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
        if len < 16 || off + len > data.len() {
            break;
        }
        let kind = u16::from_ne_bytes([data[off + 4], data[off + 5]]);
        let seq =
            u32::from_ne_bytes([data[off + 8], data[off + 9], data[off + 10], data[off + 11]]);
        if kind == NLMSG_ERROR && len >= 20 {
            let c = &data[off + 16..off + 20];
            out.push((seq, i32::from_ne_bytes([c[0], c[1], c[2], c[3]])));
        }
        off += (len + 3) & !3;
    }
    out
}

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// The interface name as the kernel compares it: NUL-padded to IFNAMSIZ.
pub(super) fn ifname_bytes(name: &str) -> [u8; IFNAMSIZ] {
    let mut b = [0u8; IFNAMSIZ];
    let n = name.len().min(IFNAMSIZ - 1);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    b
}

/// One netlink message: nlmsghdr + nfgenmsg + attributes from `body`.
fn message(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    body: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family, version NFNETLINK_V0, resource id (big endian).
    out.push(family);
    out.push(0);
    out.extend_from_slice(&res_id.to_be_bytes());
    body(out);
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn attr(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(data);
    pad(out);
}

fn attr_str(out: &mut Vec<u8>, kind: u16, s: &str) {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    attr(out, kind, &v);
}

fn nested(out: &mut Vec<u8>, kind: u16, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    body(out);
    let len = (out.len() - start) as u16;
    out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

fn expr(out: &mut Vec<u8>, name: &str, data: impl FnOnce(&mut Vec<u8>)) {
    nested(out, NFTA_LIST_ELEM, |b| {
        attr_str(b, NFTA_EXPR_NAME, name);
        nested(b, NFTA_EXPR_DATA, data);
    });
}

fn pad(out: &mut Vec<u8>) {
    while out.len() & 3 != 0 {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Split a batch into (type, flags, seq, nfgenmsg family, payload) tuples.
    fn split(b: &[u8]) -> Vec<(u16, u16, u32, u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < b.len() {
            let len = u32::from_ne_bytes(b[off..off + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(b[off + 4..off + 6].try_into().unwrap());
            let flags = u16::from_ne_bytes(b[off + 6..off + 8].try_into().unwrap());
            let seq = u32::from_ne_bytes(b[off + 8..off + 12].try_into().unwrap());
            out.push((
                kind,
                flags,
                seq,
                b[off + 16],
                b[off + 20..off + len].to_vec(),
            ));
            off += len;
        }
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn policy(veth: &str) -> Policy<'_> {
        Policy {
            veth,
            app_v4: std::net::Ipv4Addr::new(10, 0, 0, 2),
            app_v6: std::net::Ipv6Addr::LOCALHOST,
            relay: None,
            host_access: false,
        }
    }

    #[test]
    fn batch_is_begin_table_chains_rules_end() {
        let (b, what) = batch("pallium_0123abcd", &policy("pallium0123abcd"), 7);
        let msgs = split(&b);
        let kinds: Vec<u16> = msgs.iter().map(|m| m.0).collect();
        // Table, 3 chains, masquerade + 6 prerouting + 2 forward rules.
        let mut want = vec![0x10, 0x0a00, 0x0a03, 0x0a03, 0x0a03];
        want.extend([0x0a06; 9]);
        want.push(0x11);
        assert_eq!(kinds, want);
        let seqs: Vec<u32> = msgs.iter().map(|m| m.2).collect();
        assert_eq!(seqs, (7..7 + 15).collect::<Vec<u32>>());
        assert_eq!(what.len(), 13);
        assert_eq!(what[0], "creation");
        assert_eq!(what[2], "the filter prerouting chain");
        for m in &msgs[1..13] {
            assert_eq!(m.3, NFPROTO_INET);
            assert_ne!(m.1 & NLM_F_ACK, 0, "ACK requested");
        }
        for m in &msgs[5..13] {
            assert_ne!(m.1 & NLM_F_APPEND, 0, "rules keep their order");
        }
    }

    #[test]
    fn table_is_owner_bound() {
        let (b, _) = batch("pallium_0123abcd", &policy("x"), 1);
        let table = &split(&b)[1].4;
        // NFTA_TABLE_FLAGS = 0x2 big endian.
        let mut flags = vec![8, 0, 2, 0];
        flags.extend_from_slice(&2u32.to_be_bytes());
        assert!(contains(table, &flags));
        assert!(contains(table, b"pallium_0123abcd\0"));
    }

    #[test]
    fn chain_hooks_are_nested_with_priorities() {
        let (b, _) = batch("t", &policy("x"), 1);
        let msgs = split(&b);
        for (m, hook, prio, kind) in [
            (&msgs[2], 4u32, 100i32, &b"nat\0"[..]),
            (&msgs[3], 0, -150, b"filter\0"),
            (&msgs[4], 2, 0, b"filter\0"),
        ] {
            let mut want = vec![20, 0];
            want.extend_from_slice(&(NFTA_CHAIN_HOOK | NLA_F_NESTED).to_ne_bytes());
            want.extend_from_slice(&[8, 0, 1, 0]);
            want.extend_from_slice(&hook.to_be_bytes());
            want.extend_from_slice(&[8, 0, 2, 0]);
            want.extend_from_slice(&prio.to_be_bytes());
            assert!(contains(&m.4, &want), "hook {hook}");
            assert!(contains(&m.4, kind));
        }
    }

    #[test]
    fn masquerade_rule_compares_padded_ifname() {
        let (b, _) = batch("t", &policy("pallium0123abcd"), 1);
        let rule = &split(&b)[5].4;
        let mut value = vec![20, 0, 1, 0];
        value.extend_from_slice(b"pallium0123abcd\0");
        assert!(contains(rule, &value), "16-byte NUL-padded name");
        assert!(contains(rule, b"meta\0"));
        assert!(contains(rule, b"masq\0"));
        // meta key iifname into register 1.
        assert!(contains(
            rule,
            &[8, 0, 2, 0, 0, 0, 0, 6, 8, 0, 1, 0, 0, 0, 0, 1]
        ));
    }

    #[test]
    fn drop_rule_is_fib_byteorder_and_a_verdict() {
        let (b, _) = batch("t", &policy("x"), 1);
        let rule = &split(&b)[11].4;
        assert!(contains(rule, b"fib\0") && contains(rule, b"byteorder\0"));
        // fib result addrtype (3), flags daddr (2).
        assert!(contains(
            rule,
            &[8, 0, 2, 0, 0, 0, 0, 3, 8, 0, 3, 0, 0, 0, 0, 2]
        ));
        // immediate: verdict register, NF_DROP (0) nested twice.
        let mut verdict = vec![16, 0];
        verdict.extend_from_slice(&(NFTA_IMMEDIATE_DATA | NLA_F_NESTED).to_ne_bytes());
        verdict.extend_from_slice(&[12, 0]);
        verdict.extend_from_slice(&(NFTA_DATA_VERDICT | NLA_F_NESTED).to_ne_bytes());
        verdict.extend_from_slice(&[8, 0, 1, 0, 0, 0, 0, 0]);
        assert!(contains(rule, &verdict));
    }

    #[test]
    fn ifname_is_padded_and_truncated() {
        assert_eq!(&ifname_bytes("eth0")[..5], b"eth0\0");
        assert_eq!(ifname_bytes("a-name-that-is-too-long")[15], 0);
    }

    #[test]
    fn acks_are_parsed() {
        let mut b = Vec::new();
        message(&mut b, NLMSG_ERROR, 0, 3, 0, 0, |_| {});
        // Turn the nfgenmsg into an error code of -17 (EEXIST).
        let len = b.len();
        b[16..20].copy_from_slice(&(-17i32).to_ne_bytes());
        assert_eq!(len, 20);
        assert_eq!(acks(&b), vec![(3, -17)]);
    }
}
