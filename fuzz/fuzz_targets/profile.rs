//! The profile parser (JSON text → profile), as `pallium run/exec/check`
//! use it: errors are one line with a position; a parsed profile can be
//! described and checked (`pallium check`'s plan and hidden-path rule),
//! its environment policy applied, and it crosses the wire to the helpers
//! unchanged (what the parser accepts, the helpers' validating decoders
//! accept too).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use proto::profile::{self, Endpoint, Profile};
use proto::wire;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() <= 300 {
        // The address parsers, straight (the profile reaches them too).
        let _ = Endpoint::parse(text, Some(1080));
        let _ = text.parse::<profile::Cidr>();
        let _ = text.parse::<profile::DnsServer>();
        let _ = text.parse::<profile::PortForward>();
        let _ = profile::IfName::try_from(text.to_string());
    }
    let parsed = match profile::parse("<fuzz>", text) {
        Ok(p) => p,
        Err(e) => {
            let line = e.to_string();
            assert!(!line.contains('\n'), "a multi-line error: {line:?}");
            let (l, c) = e.position();
            assert!(
                l >= 1 || matches!(e, profile::ProfileError::Syntax { .. }),
                "{line}"
            );
            let _ = c;
            return;
        }
    };
    for w in &parsed.warnings {
        assert!(w.starts_with("profile <fuzz>: "), "{w:?}");
        assert!(!w.contains('\n'), "a multi-line warning: {w:?}");
    }
    let p = &parsed.profile;
    let _ = p.describe();
    let _ = p.unsupported();
    if let Some(paths) = &p.sandbox.paths {
        let entries = paths.bind.iter().map(|b| b.src.as_str());
        for entry in entries.chain(paths.whitelist.iter().map(String::as_str)) {
            let _ = proto::hidden::exposed_by(Path::new(entry), &[]);
        }
    }
    let env = &p.sandbox.environment;
    let caller = [
        ("SSH_AUTH_SOCK", "/run/user/1000/ssh"),
        ("DISPLAY", ":0"),
        ("HOME", "/home/u"),
        ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/1000/bus"),
    ];
    let out = env.apply(caller.map(|(k, v)| (k.to_string(), v.to_string())));
    for (k, _) in &caller {
        let kept = out.iter().any(|(n, _)| n == k);
        assert!(
            !kept || !env.drops(k) || env.set.contains_key(*k),
            "{k} kept"
        );
    }
    for (k, v) in &env.set {
        assert!(out.iter().any(|(n, val)| n == k && val == v), "{k} not set");
    }
    // Over the wire, as BuildChain and Setup carry it.
    let (bytes, fds) = wire::encode(p).expect("a parsed profile encodes");
    assert!(fds.is_empty());
    let back: Profile = wire::decode(&bytes, vec![]).expect("a parsed profile decodes");
    assert_eq!(&back, p);
});
