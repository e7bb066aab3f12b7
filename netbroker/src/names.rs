//! Names derived from a session id: the host-side veth and the nftables table
//! (both carry the same 8 hex digits so `ip link` and `nft list tables` output
//! can be matched to a session), and root mode's application uid.

#![forbid(unsafe_code)]

/// The session's 8 hex digits: the one id hash ([`proto::ids::fnv1a`]).
pub fn session_hash(session_id: &str) -> u32 {
    proto::ids::fnv1a(session_id)
}

/// What every session's host-side veth name starts with.
pub const HOST_IFNAME_PREFIX: &str = "pallium";

/// Host side of the session's veth pair: `pallium` + 8 hex digits (15 bytes,
/// the kernel's IFNAMSIZ limit).
/// Root mode: the host uid that is uid 0 of the session's application
/// ([`proto::profile::session_uid`], past the uids the host's `passwd` names).
pub fn app_uid(session_id: &str) -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    proto::profile::session_uid(session_id, &passwd)
}

pub fn host_ifname(session_id: &str) -> String {
    format!("{HOST_IFNAME_PREFIX}{:08x}", session_hash(session_id))
}

/// The session's nftables table: `pallium_` + 8 hex digits.
pub fn nft_table(session_id: &str) -> String {
    format!("pallium_{:08x}", session_hash(session_id))
}

/// The application side of the veth pair.
pub const APP_IFNAME: &str = "eth0";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ifname_fits_ifnamsiz() {
        for id in ["", "a-0", "some-very-long-profile-identifier-1234"] {
            let n = host_ifname(id);
            assert_eq!(n.len(), 15, "{n}");
            assert!(n.starts_with("pallium"));
            assert!(n[7..].chars().all(|c| c.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn names_are_stable_and_distinct_per_session() {
        assert_eq!(host_ifname("web-0"), host_ifname("web-0"));
        assert_ne!(host_ifname("web-0"), host_ifname("web-1"));
        assert_eq!(&host_ifname("web-0")[7..], &nft_table("web-0")[8..]);
    }

    #[test]
    fn fnv1a_matches_reference_vector() {
        // FNV-1a 32 of "a" is 0xe40c292c.
        assert_eq!(session_hash("a"), 0xe40c_292c);
    }
}
