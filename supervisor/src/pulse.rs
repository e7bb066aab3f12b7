//! The little of PulseAudio's native protocol the audio relay reads: the
//! 20-byte frame descriptor (length, channel, offset, flags; big-endian), and
//! of a control frame's tagstruct only the command and its tag, so that it
//! can refuse what a sandboxed client must not do (record — the microphone
//! and every other application's sound through a sink's monitor — unless
//! the profile asks; load or unload server modules; kill other clients'
//! streams; end the server) and put the caller's cookie into `AUTH`.
//! Everything else passes unread.

#![forbid(unsafe_code)]

/// Bytes of a frame descriptor.
pub(crate) const DESCRIPTOR: usize = 20;
/// Largest frame payload we relay (PulseAudio's own limit is far lower for
/// audio; control frames with large property lists stay well below it).
pub(crate) const MAX_PAYLOAD: usize = 4 << 20;
/// The channel of control frames (tagstructs), as opposed to audio data.
const CONTROL: u32 = u32::MAX;
/// `PA_TAG_U32`.
const TAG_U32: u8 = b'L';
/// `PA_TAG_ARBITRARY`.
const TAG_ARBITRARY: u8 = b'x';
/// `PA_ERR_ACCESS`.
const ERR_ACCESS: u32 = 1;
/// Bytes of a cookie (`PA_NATIVE_COOKIE_LENGTH`).
pub(crate) const COOKIE_LEN: usize = 256;

/// `PA_COMMAND_*` numbers we look at (pulsecore/native-common.h).
mod command {
    pub(super) const ERROR: u32 = 0;
    pub(super) const CREATE_RECORD_STREAM: u32 = 5;
    pub(super) const EXIT: u32 = 7;
    pub(super) const AUTH: u32 = 8;
    pub(super) const KILL_CLIENT: u32 = 48;
    pub(super) const KILL_SINK_INPUT: u32 = 49;
    pub(super) const KILL_SOURCE_OUTPUT: u32 = 50;
    pub(super) const LOAD_MODULE: u32 = 51;
    pub(super) const UNLOAD_MODULE: u32 = 52;
    pub(super) const MOVE_SINK_INPUT: u32 = 67;
    pub(super) const MOVE_SOURCE_OUTPUT: u32 = 68;
}

/// Commands a sandboxed client never gets through: they act on the server
/// or on other applications' streams.
const ALWAYS_REFUSED: &[u32] = &[
    command::EXIT,
    command::KILL_CLIENT,
    command::KILL_SINK_INPUT,
    command::KILL_SOURCE_OUTPUT,
    command::LOAD_MODULE,
    command::UNLOAD_MODULE,
    command::MOVE_SINK_INPUT,
    command::MOVE_SOURCE_OUTPUT,
];

/// A frame descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Descriptor {
    pub(crate) length: usize,
    pub(crate) channel: u32,
}

/// The descriptor at the start of `d`; None when its length is over
/// [`MAX_PAYLOAD`].
pub(crate) fn descriptor(d: &[u8; DESCRIPTOR]) -> Option<Descriptor> {
    let length = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
    let channel = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
    (length <= MAX_PAYLOAD).then_some(Descriptor { length, channel })
}

/// What to do with a frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Send it on to the server.
    Forward,
    /// Drop it and send the client this frame (an access error) instead.
    Refuse(Vec<u8>),
}

/// Judge the client's frame (`payload` of a frame on `channel`), and put
/// `cookie` into an `AUTH` command's cookie.
pub(crate) fn filter(
    channel: u32,
    payload: &mut [u8],
    microphone: bool,
    cookie: Option<&[u8; COOKIE_LEN]>,
) -> Verdict {
    let Some((cmd, tag)) = command_and_tag(channel, payload) else {
        return Verdict::Forward;
    };
    let refused =
        ALWAYS_REFUSED.contains(&cmd) || (cmd == command::CREATE_RECORD_STREAM && !microphone);
    if refused {
        return Verdict::Refuse(access_error(tag));
    }
    if let (command::AUTH, Some(cookie)) = (cmd, cookie) {
        // AUTH: 'L' version, then 'x' length(256) and the cookie.
        let at = 10 + 5;
        if payload.len() >= at + 5 + COOKIE_LEN
            && payload[at] == TAG_ARBITRARY
            && payload[at + 1..at + 5] == (COOKIE_LEN as u32).to_be_bytes()
        {
            payload[at + 5..at + 5 + COOKIE_LEN].copy_from_slice(cookie);
        }
    }
    Verdict::Forward
}

/// A control frame's command and tag (its first two `u32` tags).
fn command_and_tag(channel: u32, p: &[u8]) -> Option<(u32, u32)> {
    if channel != CONTROL || p.len() < 10 || p[0] != TAG_U32 || p[5] != TAG_U32 {
        return None;
    }
    let cmd = u32::from_be_bytes([p[1], p[2], p[3], p[4]]);
    let tag = u32::from_be_bytes([p[6], p[7], p[8], p[9]]);
    Some((cmd, tag))
}

/// A whole `ERROR` frame answering `tag` with `PA_ERR_ACCESS`.
fn access_error(tag: u32) -> Vec<u8> {
    let mut payload = Vec::with_capacity(15);
    for v in [command::ERROR, tag, ERR_ACCESS] {
        payload.push(TAG_U32);
        payload.extend_from_slice(&v.to_be_bytes());
    }
    let mut frame = Vec::with_capacity(DESCRIPTOR + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&CONTROL.to_be_bytes());
    frame.extend_from_slice(&[0; 12]);
    frame.extend_from_slice(&payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(cmd: u32, tag: u32, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![TAG_U32];
        p.extend_from_slice(&cmd.to_be_bytes());
        p.push(TAG_U32);
        p.extend_from_slice(&tag.to_be_bytes());
        p.extend_from_slice(rest);
        p
    }

    #[test]
    fn record_stream_is_refused_without_the_microphone() {
        let mut p = control(command::CREATE_RECORD_STREAM, 7, b"more");
        let Verdict::Refuse(frame) = filter(CONTROL, &mut p, false, None) else {
            panic!("forwarded");
        };
        let d = descriptor(frame[..DESCRIPTOR].try_into().unwrap()).unwrap();
        assert_eq!((d.length, d.channel), (15, CONTROL));
        assert_eq!(
            command_and_tag(CONTROL, &frame[DESCRIPTOR..]),
            Some((command::ERROR, 7))
        );
        assert_eq!(frame[DESCRIPTOR + 11..], ERR_ACCESS.to_be_bytes());
        assert_eq!(filter(CONTROL, &mut p, true, None), Verdict::Forward);
    }

    #[test]
    fn module_loading_is_always_refused_and_playback_passes() {
        let mut p = control(command::LOAD_MODULE, 1, b"");
        assert!(matches!(
            filter(CONTROL, &mut p, true, None),
            Verdict::Refuse(_)
        ));
        let mut p = control(3, 2, b""); // CREATE_PLAYBACK_STREAM
        assert_eq!(filter(CONTROL, &mut p, false, None), Verdict::Forward);
        // Audio data on a stream channel is never read as a command.
        let mut p = control(command::LOAD_MODULE, 1, b"");
        assert_eq!(filter(0, &mut p, false, None), Verdict::Forward);
    }

    #[test]
    fn auth_gets_the_callers_cookie() {
        let mut rest = vec![TAG_U32, 0, 0, 0, 35, TAG_ARBITRARY, 0, 0, 1, 0];
        rest.extend_from_slice(&[0; COOKIE_LEN]);
        let mut p = control(command::AUTH, 0, &rest);
        let cookie = [0xab; COOKIE_LEN];
        assert_eq!(
            filter(CONTROL, &mut p, false, Some(&cookie)),
            Verdict::Forward
        );
        assert_eq!(p[p.len() - COOKIE_LEN..], cookie);
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut d = [0u8; DESCRIPTOR];
        d[..4].copy_from_slice(&((MAX_PAYLOAD + 1) as u32).to_be_bytes());
        assert_eq!(descriptor(&d), None);
    }
}
