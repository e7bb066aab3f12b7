//! The session's host-side masquerade, written as raw nf_tables netlink: one
//! batch creating an `inet` table owned by our socket (`NFT_TABLE_F_OWNER`), a
//! nat postrouting chain and `iifname <veth> masquerade`. The kernel deletes an
//! owned table when its socket closes, so the table lives exactly as long as
//! [`NftSession`] (and the netbroker process).

#![forbid(unsafe_code)]

use std::io;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

/// Why the masquerade table could not be created.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("open nf_tables netlink socket")]
    Socket(#[source] io::Error),
    #[error("send nf_tables batch creating table {table}")]
    Send {
        table: String,
        #[source]
        source: io::Error,
    },
    #[error("kernel refused {what} of table {table}")]
    Refused {
        what: &'static str,
        table: String,
        #[source]
        source: io::Error,
    },
    #[error("no answer from nf_tables for table {table}")]
    Receive {
        table: String,
        #[source]
        source: io::Error,
    },
}

/// A created table; dropping it (closing the socket) deletes the table.
#[derive(Debug)]
pub struct NftSession {
    _sock: Socket,
    pub table: String,
}

/// Create `table` with a masquerade rule for traffic coming in on `iifname`,
/// in the calling thread's network namespace.
pub fn masquerade(table: &str, iifname: &str) -> Result<NftSession, NftError> {
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(NftError::Socket)?;
    sock.bind_auto().map_err(NftError::Socket)?;
    set_recv_timeout(&sock, Duration::from_secs(5)).map_err(NftError::Socket)?;
    let batch = masquerade_batch(table, iifname, 1);
    sock.send_to(&batch, &SocketAddr::new(0, 0), 0)
        .map_err(|source| NftError::Send {
            table: table.into(),
            source,
        })?;
    // Sequence numbers 2, 3, 4 asked for ACKs (table, chain, rule).
    let mut acked = [false; 3];
    let what = [
        "creation",
        "the nat postrouting chain",
        "the masquerade rule",
    ];
    while !acked.iter().all(|a| *a) {
        let (data, _) = sock.recv_from_full().map_err(|source| NftError::Receive {
            table: table.into(),
            source,
        })?;
        for (seq, code) in acks(&data) {
            let Some(i) = seq.checked_sub(2).map(|i| i as usize).filter(|i| *i < 3) else {
                continue;
            };
            if code != 0 {
                return Err(NftError::Refused {
                    what: what[i],
                    table: table.into(),
                    source: io::Error::from_raw_os_error(-code),
                });
            }
            acked[i] = true;
        }
    }
    Ok(NftSession {
        _sock: sock,
        table: table.into(),
    })
}

fn set_recv_timeout(sock: &Socket, d: Duration) -> io::Result<()> {
    let tv = nix::sys::time::TimeVal::new(d.as_secs() as _, 0);
    nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
        .map_err(io::Error::from)
}

// nfnetlink / nf_tables constants (linux/netfilter/nfnetlink.h, nf_tables.h).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_INET: u8 = 1;
const NFT_TABLE_F_OWNER: u32 = 0x2;
const NF_INET_POST_ROUTING: u32 = 4;
const NAT_PRIORITY: i32 = 100;
const NFT_META_IIFNAME: u32 = 6;
const NFT_REG_1: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const IFNAMSIZ: usize = 16;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 2;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;

/// Name of the session's chain.
pub const CHAIN: &str = "postrouting";

/// The whole batch as bytes; messages are numbered from `seq` (BEGIN) to
/// `seq + 4` (END).
pub fn masquerade_batch(table: &str, iifname: &str, seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
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
    message(
        &mut out,
        nft_type(NFT_MSG_NEWTABLE),
        new,
        seq + 1,
        NFPROTO_INET,
        0,
        |b| {
            attr_str(b, NFTA_TABLE_NAME, table);
            attr(b, NFTA_TABLE_FLAGS, &NFT_TABLE_F_OWNER.to_be_bytes());
        },
    );
    message(
        &mut out,
        nft_type(NFT_MSG_NEWCHAIN),
        new,
        seq + 2,
        NFPROTO_INET,
        0,
        |b| {
            attr_str(b, NFTA_CHAIN_TABLE, table);
            attr_str(b, NFTA_CHAIN_NAME, CHAIN);
            nested(b, NFTA_CHAIN_HOOK, |b| {
                attr(b, NFTA_HOOK_HOOKNUM, &NF_INET_POST_ROUTING.to_be_bytes());
                attr(b, NFTA_HOOK_PRIORITY, &NAT_PRIORITY.to_be_bytes());
            });
            attr_str(b, NFTA_CHAIN_TYPE, "nat");
        },
    );
    let rule = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK;
    message(
        &mut out,
        nft_type(NFT_MSG_NEWRULE),
        rule,
        seq + 3,
        NFPROTO_INET,
        0,
        |b| {
            attr_str(b, NFTA_RULE_TABLE, table);
            attr_str(b, NFTA_RULE_CHAIN, CHAIN);
            nested(b, NFTA_RULE_EXPRESSIONS, |b| {
                expr(b, "meta", |b| {
                    attr(b, NFTA_META_KEY, &NFT_META_IIFNAME.to_be_bytes());
                    attr(b, NFTA_META_DREG, &NFT_REG_1.to_be_bytes());
                });
                expr(b, "cmp", |b| {
                    attr(b, NFTA_CMP_SREG, &NFT_REG_1.to_be_bytes());
                    attr(b, NFTA_CMP_OP, &NFT_CMP_EQ.to_be_bytes());
                    nested(b, NFTA_CMP_DATA, |b| {
                        attr(b, NFTA_DATA_VALUE, &ifname_bytes(iifname));
                    });
                });
                // masq takes no arguments: no NFTA_EXPR_DATA at all.
                nested(b, NFTA_LIST_ELEM, |b| attr_str(b, NFTA_EXPR_NAME, "masq"));
            });
        },
    );
    message(
        &mut out,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq + 4,
        0,
        res_id,
        |_| {},
    );
    out
}

/// `(sequence, error code)` of every NLMSG_ERROR (ACK when 0) in `data`.
fn acks(data: &[u8]) -> Vec<(u32, i32)> {
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
fn ifname_bytes(name: &str) -> [u8; IFNAMSIZ] {
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

    #[test]
    fn batch_is_begin_table_chain_rule_end() {
        let msgs = split(&masquerade_batch("pallium_0123abcd", "pallium0123abcd", 7));
        let kinds: Vec<u16> = msgs.iter().map(|m| m.0).collect();
        assert_eq!(kinds, vec![0x10, 0x0a00, 0x0a03, 0x0a06, 0x11]);
        let seqs: Vec<u32> = msgs.iter().map(|m| m.2).collect();
        assert_eq!(seqs, vec![7, 8, 9, 10, 11]);
        for m in &msgs[1..4] {
            assert_eq!(m.3, NFPROTO_INET);
            assert_ne!(m.1 & NLM_F_ACK, 0, "ACK requested");
        }
    }

    #[test]
    fn table_is_owner_bound() {
        let msgs = split(&masquerade_batch("pallium_0123abcd", "x", 1));
        let table = &msgs[1].4;
        // NFTA_TABLE_FLAGS = 0x2 big endian.
        let mut flags = vec![8, 0, 2, 0];
        flags.extend_from_slice(&2u32.to_be_bytes());
        assert!(contains(table, &flags));
        assert!(contains(table, b"pallium_0123abcd\0"));
    }

    #[test]
    fn chain_hook_is_nested_postrouting_prio_100_nat() {
        let msgs = split(&masquerade_batch("t", "x", 1));
        let chain = &msgs[2].4;
        let mut hook = vec![20, 0];
        hook.extend_from_slice(&(NFTA_CHAIN_HOOK | NLA_F_NESTED).to_ne_bytes());
        hook.extend_from_slice(&[8, 0, 1, 0, 0, 0, 0, 4, 8, 0, 2, 0, 0, 0, 0, 100]);
        assert!(contains(chain, &hook));
        assert!(contains(chain, b"nat\0"));
    }

    #[test]
    fn rule_compares_padded_ifname_and_masquerades() {
        let msgs = split(&masquerade_batch("t", "pallium0123abcd", 1));
        let rule = &msgs[3].4;
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

    /// In a fresh network namespace (forked child, root only): the table shows
    /// up in `nft list tables` and disappears when the socket is dropped.
    #[test]
    fn owner_table_lives_with_its_socket() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let status = crate::testutil::in_child(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
            let list = || {
                let o = std::process::Command::new("nft")
                    .args(["list", "tables"])
                    .output()
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(String::from_utf8_lossy(&o.stdout).into_owned())
            };
            let t =
                masquerade("pallium_test0001", "pallium0test0001").map_err(|e| format!("{e:?}"))?;
            let before = list()?;
            if !before.contains("table inet pallium_test0001") {
                return Err(format!("table missing: {before}"));
            }
            drop(t);
            // Release is processed synchronously on close, but allow a moment.
            for _ in 0..50 {
                if !list()?.contains("pallium_test0001") {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err("table survived its socket".into())
        });
        assert_eq!(status, Ok(()));
    }
}
