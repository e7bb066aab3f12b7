//! The audio relay's filter (`proto::pulse`), fed what a hostile sandboxed
//! client sends, frame by frame, as the relay reads it. The first byte
//! chooses the microphone (bit 0) and whether each frame is also shown to
//! the filter as if the server had sent it (bit 1: replies that teach it
//! streams, and server-info replies it rewrites). Asserted besides "no panic": the bytes the relay forwards read
//! as the same frames when parsed the way PulseAudio's server parses them
//! (no shared-memory frame, whose length the server ignores, ever passes),
//! every control frame the server gets names a command the allow-list
//! permits, `AUTH` never asks for shared memory, and a refusal is one
//! well-formed `ERROR` frame answering the refused tag.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::pulse::{command, descriptor, permitted, u32_at, Filter, Verdict, CONTROL, DESCRIPTOR};

/// `PA_FLAG_SHMMASK` and what pstream.c does with it: release and revoke
/// frames carry no payload, whatever their length says.
fn server_payload_len(length: usize, flags: u32) -> usize {
    match flags & 0xff00_0000 {
        0x4000_0000 | 0xc000_0000 => 0,
        _ => length,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut input)) = data.split_first() else {
        return;
    };
    let microphone = mode & 1 != 0;
    let mut filter = Filter::new(microphone, Some([7; proto::pulse::COOKIE_LEN]))
        .with_identity(Some("user".into()), "host".into());
    let mut forwarded = Vec::new();
    while let Some(head) = input.get(..DESCRIPTOR) {
        let d: [u8; DESCRIPTOR] = head.try_into().unwrap();
        // The relay ends the connection on a descriptor it refuses.
        let Some(desc) = descriptor(&d) else {
            break;
        };
        let Some(whole) = input.get(..DESCRIPTOR + desc.length) else {
            break;
        };
        let mut frame = whole.to_vec();
        input = &input[whole.len()..];
        if mode & 2 != 0 {
            // A rewritten server-info reply keeps its command and tag.
            if let Some(new) = filter.server(desc.channel, &frame[DESCRIPTOR..]) {
                assert_eq!(new[..10], frame[DESCRIPTOR..DESCRIPTOR + 10]);
            }
        }
        let tag = u32_at(&frame[DESCRIPTOR..], 5);
        match filter.client(desc.channel, &mut frame[DESCRIPTOR..]) {
            Verdict::Forward | Verdict::Authenticate => forwarded.extend_from_slice(&frame),
            Verdict::Refuse(reply) => {
                let d: [u8; DESCRIPTOR] = reply[..DESCRIPTOR].try_into().unwrap();
                let r = descriptor(&d).expect("a refusal's descriptor");
                assert_eq!(r.channel, CONTROL);
                assert_eq!(reply.len(), DESCRIPTOR + r.length);
                let p = &reply[DESCRIPTOR..];
                assert_eq!(u32_at(p, 0), Some(command::ERROR));
                assert_eq!(u32_at(p, 5), Some(tag.unwrap_or(0)));
            }
            Verdict::Close => break,
        }
    }
    // What the server reads.
    let mut at = 0;
    while let Some(d) = forwarded.get(at..at + DESCRIPTOR) {
        let length = u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize;
        let channel = u32::from_be_bytes(d[4..8].try_into().unwrap());
        let flags = u32::from_be_bytes(d[16..20].try_into().unwrap());
        let len = server_payload_len(length, flags);
        assert_eq!(
            len, length,
            "the server would read a frame the filter never saw"
        );
        let payload = &forwarded[at + DESCRIPTOR..at + DESCRIPTOR + len];
        if channel == CONTROL {
            let cmd = u32_at(payload, 0).expect("a forwarded control frame has a command");
            assert!(
                permitted(cmd, microphone),
                "command {cmd} reached the server"
            );
            if cmd == command::AUTH {
                let version = u32_at(payload, 10).unwrap_or(0);
                assert_eq!(version & 0xc000_0000, 0, "AUTH asks for shared memory");
            }
        }
        at += DESCRIPTOR + len;
    }
    assert_eq!(at, forwarded.len());
});
