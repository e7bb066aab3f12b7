//! The rules for strings that name things — paths, host names, user names,
//! session ids — written once and used twice: by the profile parser (which
//! adds the JSON path to the message) and when a message is decoded from the
//! wire (`#[serde(deserialize_with)]`), so a compromised supervisor cannot
//! send a helper what no profile could say ("parse, don't validate").

#![forbid(unsafe_code)]

use serde::de::{Deserialize, Deserializer, Error};

/// An absolute, normalized path: starts with `/`, no `.` or `..` component,
/// no empty component (`//`) except a trailing `/`, no NUL, at most 4096
/// bytes. Globs (`*`) are fine: they are matched, never resolved.
pub fn abs_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} is not an absolute path"));
    }
    if s.len() > 4096 || s.contains('\0') {
        return Err(format!("{s:?} is not a valid path"));
    }
    if s == "/" {
        return Ok(());
    }
    let inner = s[1..].strip_suffix('/').unwrap_or(&s[1..]);
    if inner
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "{s:?} must not contain '.', '..' or empty components"
        ));
    }
    Ok(())
}

/// A path below `/tmp/` ([`abs_path`]'s rules): where a session's own binds
/// go in the sandbox (`proto::sandbox::SessionBind`), a fresh tmpfs in every
/// view.
pub fn tmp_path(s: &str) -> Result<(), String> {
    abs_path(s)?;
    if !s.starts_with("/tmp/") || s.len() <= "/tmp/".len() {
        return Err(format!("{s:?} is not below /tmp"));
    }
    Ok(())
}

/// A host name: 1–64 bytes (the UTS limit), letters, digits, `-`, `_`, `.`.
pub fn hostname(s: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid host name {s:?} (1-64 letters, digits, '-', '_' or '.')"
        ))
    }
}

/// A local account a hop daemon runs as (root mode): a POSIX-style name,
/// and never `root`. A hop daemon parses what a remote server sends; as the
/// host's uid 0 its compromise would be the host's (the netbroker also
/// refuses any name that resolves to uid 0, whatever it is called).
pub fn hop_user(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = (1..=32).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'));
    if !ok {
        return Err(format!("invalid user name {s:?}"));
    }
    if s == "root" {
        return Err(
            "a hop daemon never runs as root (it talks to remote servers); name an unprivileged account"
                .into(),
        );
    }
    Ok(())
}

/// A session id, `<profile id>-<index>-<nonce>`: it names links, tables and
/// directories, so 1–128 bytes of letters, digits, `-`, `_` and `.`, not
/// `.` or `..`.
pub fn session_id(s: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid session id {s:?}"))
    }
}

/// A value the application or a tool gets as text (an argument, a user name
/// for a proxy, an environment value): no NUL, which would cut it short.
pub fn text(s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err(format!("{s:?} contains a NUL byte"));
    }
    Ok(())
}

/// Decoding helpers for `#[serde(deserialize_with = "…")]`: the field keeps
/// its plain type, the rule runs as it is decoded.
pub mod de {
    use super::*;

    fn checked<'de, D: Deserializer<'de>>(
        d: D,
        rule: fn(&str) -> Result<(), String>,
    ) -> Result<String, D::Error> {
        let s = String::deserialize(d)?;
        rule(&s).map_err(D::Error::custom)?;
        Ok(s)
    }

    pub fn abs_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        checked(d, super::abs_path)
    }

    pub fn tmp_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        checked(d, super::tmp_path)
    }

    pub fn opt_abs_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        if let Some(s) = &s {
            super::abs_path(s).map_err(D::Error::custom)?;
        }
        Ok(s)
    }

    pub fn abs_paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        for s in &v {
            super::abs_path(s).map_err(D::Error::custom)?;
        }
        Ok(v)
    }

    /// `sandbox.workdir`: absolute, or `""` (the caller's working directory).
    pub fn opt_workdir<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        match s.as_deref() {
            None | Some("") => {}
            Some(w) => super::abs_path(w).map_err(D::Error::custom)?,
        }
        Ok(s)
    }

    pub fn hostname<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        checked(d, super::hostname)
    }

    pub fn session_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        checked(d, super::session_id)
    }

    pub fn hop_user<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        checked(d, super::hop_user)
    }

    pub fn opt_hop_user<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        if let Some(s) = &s {
            super::hop_user(s).map_err(D::Error::custom)?;
        }
        Ok(s)
    }

    /// An argv: not empty, no NUL in any element.
    pub fn argv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        if v.is_empty() {
            return Err(D::Error::custom("empty argv"));
        }
        for s in &v {
            super::text(s).map_err(D::Error::custom)?;
        }
        Ok(v)
    }

    /// An environment: names without `=` or NUL (and not empty), values
    /// without NUL.
    pub fn env<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        let v = Vec::<(String, String)>::deserialize(d)?;
        for (k, val) in &v {
            if k.is_empty() || k.contains('=') {
                return Err(D::Error::custom(format!(
                    "invalid environment variable name {k:?}"
                )));
            }
            super::text(k).map_err(D::Error::custom)?;
            super::text(val).map_err(D::Error::custom)?;
        }
        Ok(v)
    }

    pub fn texts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        for s in &v {
            super::text(s).map_err(D::Error::custom)?;
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abs_path_accepts_normalized_absolute_paths_only() {
        for good in ["/", "/etc", "/home/you/", "/dev/video*", "/a/.hidden"] {
            assert!(abs_path(good).is_ok(), "{good}");
        }
        for bad in [
            "", "etc", "./x", "/a/../b", "/..", "/a/./b", "/a//b", "//", "/a\0b",
        ] {
            assert!(abs_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hop_users_are_names_and_never_root() {
        for good in ["nobody", "debian-tor", "_tor", "pallium-test", "a.b"] {
            assert!(hop_user(good).is_ok(), "{good}");
        }
        for bad in ["root", "", "../x", "a b", "Root:", &"a".repeat(33)] {
            assert!(hop_user(bad).is_err(), "{bad:?}");
        }
    }

    fn decodes<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> bool {
        let (buf, _) = crate::wire::encode(v).unwrap();
        crate::wire::decode::<T>(&buf, vec![]).is_ok()
    }

    #[test]
    fn decoding_applies_the_same_rules() {
        use crate::profile::{parse, BindMount, HopKind, Paths, Sandbox, Ssh, Virtuser};
        let bind = |dst: &str| BindMount {
            dst: dst.into(),
            src: "x".into(),
        };
        assert!(decodes(&bind("/mnt")));
        assert!(!decodes(&bind("/mnt/../etc")));
        let paths = |w: &str| Paths {
            whitelist: vec![w.into()],
            ..Default::default()
        };
        assert!(decodes(&paths("/opt/*")) && !decodes(&paths("opt")));
        let skel = |s: &str| Sandbox {
            virtuser: Some(Virtuser {
                name: crate::profile::VirtuserName::Temporary,
                skeleton: Some(s.into()),
            }),
            ..Default::default()
        };
        assert!(decodes(&skel("/etc/skel")) && !decodes(&skel("../../root")));
        let wd = |w: &str| Sandbox {
            workdir: Some(w.into()),
            ..Default::default()
        };
        assert!(decodes(&wd("")) && decodes(&wd("/tmp")) && !decodes(&wd("tmp")));
        let host = Sandbox {
            hostname: "a/b".into(),
            ..Default::default()
        };
        assert!(!decodes(&host));
        let ssh = |user: &str| {
            HopKind::Ssh(Ssh {
                destination: "u@h".into(),
                user: Some(user.into()),
                ssh_args: vec![],
                timeout: std::time::Duration::from_secs(1),
            })
        };
        assert!(decodes(&ssh("nobody")) && !decodes(&ssh("root")));
        use crate::profile::{Endpoint, Host};
        let ep = |host: &str, port| Endpoint {
            host: Host::Name(host.into()),
            port,
        };
        assert!(decodes(&ep("proxy.example", 1080)));
        assert!(!decodes(&ep("proxy.example", 0)));
        assert!(!decodes(&ep("a/b", 1080)) && !decodes(&ep("", 1080)));
        // The profile parser says the same.
        let e = parse(
            "p.json",
            r#"{"network": {"chain": [{"type": "ssh", "destination": "h", "user": "root"}]}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("chain[0].user") && e.contains("never runs as root"),
            "{e}"
        );
        let e = parse(
            "p.json",
            r#"{"sandbox": {"virtuser": {"name": "a", "skeleton": "etc"}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("skeleton") && e.contains("absolute"), "{e}");
    }

    #[test]
    fn session_ids_and_hostnames() {
        assert!(session_id("work-0-1234").is_ok());
        for bad in ["", "..", "a/b", "a b", &"a".repeat(129)] {
            assert!(session_id(bad).is_err(), "{bad:?}");
        }
        assert!(hostname("box.example").is_ok());
        for bad in ["", "a/b", "a b", &"a".repeat(65)] {
            assert!(hostname(bad).is_err(), "{bad:?}");
        }
    }
}
