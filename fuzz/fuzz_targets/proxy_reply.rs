//! A hostile proxy's replies to the engine's handshakes (SOCKS4, SOCKS4a,
//! SOCKS5 with and without credentials, HTTP CONNECT), fed in chunks the
//! fuzzer chooses: never a panic, never more bytes taken than given, and a
//! finished handshake takes nothing more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netbroker::tun2socks::proxy::{Handshake, Progress, Request, Target};
use netbroker::tun2socks::Protocol;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let protocol = match sel % 4 {
        0 => Protocol::Socks4,
        1 => Protocol::Socks4a,
        2 => Protocol::Socks5,
        _ => Protocol::HttpConnect,
    };
    let creds = sel & 4 != 0;
    let request = match (sel >> 3) % 3 {
        0 => Request::Connect(Target::Ip("203.0.113.10:80".parse().unwrap())),
        1 => Request::Connect(Target::Name("example.test".into(), 443)),
        _ if protocol == Protocol::Socks5 => {
            Request::UdpAssociate("198.18.0.1:5353".parse().unwrap())
        }
        _ => Request::Auth,
    };
    let (user, pass) = if creds {
        (Some("user"), Some("secret"))
    } else {
        (None, None)
    };
    let Ok((mut hs, _first)) = Handshake::start(protocol, user, pass, request) else {
        return;
    };
    // The chunk size: the reply arrives in pieces of 1..=8 bytes or whole.
    let chunk = usize::from(sel >> 5).max(1);
    let mut out = Vec::new();
    let mut done = false;
    for piece in rest.chunks(if sel >> 5 == 7 {
        rest.len().max(1)
    } else {
        chunk
    }) {
        if done {
            break;
        }
        match hs.input(piece, &mut out) {
            Ok((used, progress)) => {
                assert!(used <= piece.len());
                if let Progress::Done(_) = progress {
                    done = true;
                    let mut again = Vec::new();
                    let (more, _) = hs.input(b"tunnel bytes", &mut again).unwrap();
                    assert_eq!(more, 0, "a finished handshake took tunnel bytes");
                } else {
                    assert_eq!(used, piece.len(), "an unfinished handshake left bytes");
                }
            }
            Err(e) => {
                assert!(!e.to_string().contains('\n'), "a multi-line error: {e}");
                break;
            }
        }
    }
});
