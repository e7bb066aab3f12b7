//! The little of PulseAudio's native protocol the audio relay reads: the
//! 20-byte frame descriptor (length, channel, offset, flags; big-endian), and
//! of a control frame's tagstruct the command, its tag and, for a few
//! commands, one index. A sandboxed client may do what an application that
//! plays sound needs — create, drive and delete its own streams, set its own
//! streams' volume and mute, look up and list sinks and sources, ask the
//! server's defaults, subscribe to events — and nothing else: an allow-list,
//! so no command the list does not name (new ones included) gets through.
//! Refused: recording unless the profile asks for the microphone (a sink's
//! monitor is every other application's sound), anything that acts on the
//! server or on other clients (modules, defaults, device volume, suspend,
//! ports, card profiles, extensions, the sample cache, moving or killing
//! streams, exit), and listing other clients or their streams (their names
//! and media titles). With the microphone, any source may be recorded, a
//! sink's monitor too. The cookie of `AUTH` is replaced by the caller's and
//! its protocol flags asking for shared memory are cleared (a version below
//! 13, which has none, is refused; so are the shared-memory commands); a frame whose
//! descriptor flags say shared memory ends the connection (its length would
//! not say what follows). Tags must grow, so the reply naming a create's tag
//! is that create's; a client with [`MAX_INFLIGHT`] commands unanswered is
//! cut off. Everything else (audio data) passes unread.
//!
//! Used by the supervisor's relay (`supervisor/src/audio.rs`); it lives here,
//! with no I/O, so that a fuzz target can drive it (`fuzz/fuzz_targets/pulse.rs`).

#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};

/// Bytes of a frame descriptor.
pub const DESCRIPTOR: usize = 20;
/// Largest frame payload we relay (PulseAudio's own limit is far lower for
/// audio; control frames with large property lists stay well below it).
pub const MAX_PAYLOAD: usize = 4 << 20;
/// The channel of control frames (tagstructs), as opposed to audio data.
pub const CONTROL: u32 = u32::MAX;
/// `PA_TAG_U32`.
const TAG_U32: u8 = b'L';
/// `PA_TAG_ARBITRARY`.
const TAG_ARBITRARY: u8 = b'x';
/// `PA_TAG_STRING` (NUL-terminated) and `PA_TAG_STRING_NULL`.
const TAG_STRING: u8 = b't';
const TAG_STRING_NULL: u8 = b'N';
/// `PA_ERR_ACCESS`.
const ERR_ACCESS: u32 = 1;
/// `PA_FLAG_SEEKMASK`: the only descriptor flags of a frame without shared
/// memory (`PA_FLAG_SHM*` are above).
const SEEK_MASK: u32 = 0xff;
/// `PA_PROTOCOL_FLAG_SHM | PA_PROTOCOL_FLAG_MEMFD` in `AUTH`'s version.
const AUTH_SHM_FLAGS: u32 = 0xc000_0000;
/// Commands forwarded and not yet answered, per client; past this the
/// client is cut off (one that never reads its replies would grow the
/// server's send queue without end).
const MAX_INFLIGHT: usize = 1024;
/// Bytes of a cookie (`PA_NATIVE_COOKIE_LENGTH`).
pub const COOKIE_LEN: usize = 256;
/// Own streams remembered per client (a client that opens more forgets the
/// oldest ones' volume control, nothing else).
const MAX_OWN: usize = 256;

/// `PA_COMMAND_*` numbers (pulsecore/native-common.h).
pub mod command {
    pub const ERROR: u32 = 0;
    pub const REPLY: u32 = 2;
    pub const CREATE_PLAYBACK_STREAM: u32 = 3;
    pub const DELETE_PLAYBACK_STREAM: u32 = 4;
    pub const CREATE_RECORD_STREAM: u32 = 5;
    pub const DELETE_RECORD_STREAM: u32 = 6;
    pub const AUTH: u32 = 8;
    pub const SET_CLIENT_NAME: u32 = 9;
    pub const LOOKUP_SINK: u32 = 10;
    pub const LOOKUP_SOURCE: u32 = 11;
    pub const DRAIN_PLAYBACK_STREAM: u32 = 12;
    pub const STAT: u32 = 13;
    pub const GET_PLAYBACK_LATENCY: u32 = 14;
    pub const GET_SERVER_INFO: u32 = 20;
    pub const GET_SINK_INFO: u32 = 21;
    pub const GET_SINK_INFO_LIST: u32 = 22;
    pub const GET_SOURCE_INFO: u32 = 23;
    pub const GET_SOURCE_INFO_LIST: u32 = 24;
    pub const GET_SINK_INPUT_INFO: u32 = 29;
    pub const GET_SOURCE_OUTPUT_INFO: u32 = 31;
    pub const SUBSCRIBE: u32 = 35;
    pub const SET_SINK_INPUT_VOLUME: u32 = 37;
    pub const CORK_PLAYBACK_STREAM: u32 = 41;
    pub const FLUSH_PLAYBACK_STREAM: u32 = 42;
    pub const TRIGGER_PLAYBACK_STREAM: u32 = 43;
    pub const SET_PLAYBACK_STREAM_NAME: u32 = 46;
    pub const SET_RECORD_STREAM_NAME: u32 = 47;
    pub const GET_RECORD_LATENCY: u32 = 57;
    pub const CORK_RECORD_STREAM: u32 = 58;
    pub const FLUSH_RECORD_STREAM: u32 = 59;
    pub const PREBUF_PLAYBACK_STREAM: u32 = 60;
    pub const SET_SINK_INPUT_MUTE: u32 = 69;
    pub const SET_PLAYBACK_STREAM_BUFFER_ATTR: u32 = 72;
    pub const SET_RECORD_STREAM_BUFFER_ATTR: u32 = 73;
    pub const UPDATE_PLAYBACK_STREAM_SAMPLE_RATE: u32 = 74;
    pub const UPDATE_RECORD_STREAM_SAMPLE_RATE: u32 = 75;
    pub const UPDATE_RECORD_STREAM_PROPLIST: u32 = 80;
    pub const UPDATE_PLAYBACK_STREAM_PROPLIST: u32 = 81;
    pub const UPDATE_CLIENT_PROPLIST: u32 = 82;
    pub const REMOVE_RECORD_STREAM_PROPLIST: u32 = 83;
    pub const REMOVE_PLAYBACK_STREAM_PROPLIST: u32 = 84;
    pub const REMOVE_CLIENT_PROPLIST: u32 = 85;
    pub const SET_SOURCE_OUTPUT_VOLUME: u32 = 98;
    pub const SET_SOURCE_OUTPUT_MUTE: u32 = 99;
}

/// What a client may send, by command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Always (its own connection's state, its own streams by channel —
    /// the server resolves channels per connection — or read-only device
    /// information).
    Allowed,
    /// Only with the microphone.
    Record,
    /// Only for a sink input this client created (the index follows the tag).
    OwnSinkInput,
    /// Only for a source output this client created.
    OwnSourceOutput,
}

fn rule(cmd: u32) -> Option<Rule> {
    use command::*;
    Some(match cmd {
        AUTH
        | SET_CLIENT_NAME
        | UPDATE_CLIENT_PROPLIST
        | REMOVE_CLIENT_PROPLIST
        | LOOKUP_SINK
        | LOOKUP_SOURCE
        | STAT
        | GET_SERVER_INFO
        | GET_SINK_INFO
        | GET_SINK_INFO_LIST
        | GET_SOURCE_INFO
        | GET_SOURCE_INFO_LIST
        | SUBSCRIBE
        | CREATE_PLAYBACK_STREAM
        | DELETE_PLAYBACK_STREAM
        | DRAIN_PLAYBACK_STREAM
        | GET_PLAYBACK_LATENCY
        | CORK_PLAYBACK_STREAM
        | FLUSH_PLAYBACK_STREAM
        | TRIGGER_PLAYBACK_STREAM
        | PREBUF_PLAYBACK_STREAM
        | SET_PLAYBACK_STREAM_NAME
        | SET_PLAYBACK_STREAM_BUFFER_ATTR
        | UPDATE_PLAYBACK_STREAM_SAMPLE_RATE
        | UPDATE_PLAYBACK_STREAM_PROPLIST
        | REMOVE_PLAYBACK_STREAM_PROPLIST
        | DELETE_RECORD_STREAM
        | GET_RECORD_LATENCY
        | CORK_RECORD_STREAM
        | FLUSH_RECORD_STREAM
        | SET_RECORD_STREAM_NAME
        | SET_RECORD_STREAM_BUFFER_ATTR
        | UPDATE_RECORD_STREAM_SAMPLE_RATE
        | UPDATE_RECORD_STREAM_PROPLIST
        | REMOVE_RECORD_STREAM_PROPLIST => Rule::Allowed,
        CREATE_RECORD_STREAM => Rule::Record,
        GET_SINK_INPUT_INFO | SET_SINK_INPUT_VOLUME | SET_SINK_INPUT_MUTE => Rule::OwnSinkInput,
        GET_SOURCE_OUTPUT_INFO | SET_SOURCE_OUTPUT_VOLUME | SET_SOURCE_OUTPUT_MUTE => {
            Rule::OwnSourceOutput
        }
        _ => return None,
    })
}

/// Whether the filter forwards command `cmd` at all (the own-stream
/// commands: for some stream; recording: with the microphone).
pub fn permitted(cmd: u32, microphone: bool) -> bool {
    match rule(cmd) {
        Some(Rule::Record) => microphone,
        Some(_) => true,
        None => false,
    }
}

/// A frame descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    pub length: usize,
    pub channel: u32,
}

/// The descriptor at the start of `d`; None when its length is over
/// [`MAX_PAYLOAD`] or its flags carry more than a seek mode. Shared memory
/// is off on every relayed connection (the client's configuration, and
/// `AUTH`'s protocol flags cleared), and a shared-memory frame's length does
/// not say what follows it: a client sending one (a "release" with a length)
/// would have the server read its payload as frames the filter never saw.
pub fn descriptor(d: &[u8; DESCRIPTOR]) -> Option<Descriptor> {
    let length = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
    let channel = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
    let flags = u32::from_be_bytes([d[16], d[17], d[18], d[19]]);
    (length <= MAX_PAYLOAD && flags & !SEEK_MASK == 0).then_some(Descriptor { length, channel })
}

/// What to do with a frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it on to the server.
    Forward,
    /// Send it on with the relay's credentials (`SCM_CREDENTIALS`), as
    /// libpulse sends `AUTH`: the server authorises a client of its own uid
    /// by them. Without them the kernel attaches credentials only if the
    /// server's socket already asks for them, which it does a moment after
    /// accepting: an `AUTH` written in that moment was refused.
    Authenticate,
    /// Drop it and send the client this frame (an access error) instead.
    Refuse(Vec<u8>),
    /// End the connection (too many commands unanswered).
    Close,
}

/// One client connection's filter: what it may do, and the streams it made
/// (learnt from the server's replies to its create commands).
#[derive(Debug)]
pub struct Filter {
    microphone: bool,
    cookie: Option<[u8; COOKIE_LEN]>,
    /// Tags of create commands awaiting the server's reply (true: record).
    pending: HashMap<u32, bool>,
    sink_inputs: HashSet<u32>,
    source_outputs: HashSet<u32>,
    /// The last command's tag: tags must grow (libpulse counts them up), so
    /// a reply with a create's tag answers that create and nothing else.
    last_tag: Option<u32>,
    /// Commands forwarded and not answered yet.
    inflight: usize,
    /// The names the sandbox goes by (user — None: the server's own —,
    /// host), put into the server's answer to `GET_SERVER_INFO`.
    identity: Option<(Option<String>, String)>,
    /// Tags of `GET_SERVER_INFO` awaiting the server's reply.
    info_pending: HashSet<u32>,
}

impl Filter {
    pub fn new(microphone: bool, cookie: Option<[u8; COOKIE_LEN]>) -> Filter {
        Filter {
            microphone,
            cookie,
            pending: HashMap::new(),
            sink_inputs: HashSet::new(),
            source_outputs: HashSet::new(),
            last_tag: None,
            inflight: 0,
            identity: None,
            info_pending: HashSet::new(),
        }
    }

    /// Answer `GET_SERVER_INFO` with the sandbox's names — `host`, and
    /// `user` if given (a virtual user's) — instead of the server's user and
    /// host names, which the sandbox's own view hides.
    pub fn with_identity(mut self, user: Option<String>, host: String) -> Filter {
        self.identity = Some((user, host));
        self
    }

    /// Judge the client's frame (`payload` of a frame on `channel`), and put
    /// the caller's cookie into an `AUTH` command's cookie.
    pub fn client(&mut self, channel: u32, payload: &mut [u8]) -> Verdict {
        if channel != CONTROL {
            return Verdict::Forward;
        }
        // A control frame we cannot read is one we cannot judge.
        let (Some(cmd), Some(tag)) = (u32_at(payload, 0), u32_at(payload, 5)) else {
            return Verdict::Refuse(access_error(u32_at(payload, 5).unwrap_or(0)));
        };
        // A tag used again would let the reply to another command (say,
        // buffer attributes that read like an index) pass for a create's.
        if self.last_tag.is_some_and(|last| tag <= last) {
            return Verdict::Refuse(access_error(tag));
        }
        self.last_tag = Some(tag);
        let index = u32_at(payload, 10);
        let allowed = match rule(cmd) {
            Some(Rule::Allowed) => true,
            Some(Rule::Record) => self.microphone,
            Some(Rule::OwnSinkInput) => index.is_some_and(|i| self.sink_inputs.contains(&i)),
            Some(Rule::OwnSourceOutput) => index.is_some_and(|i| self.source_outputs.contains(&i)),
            None => false,
        };
        if !allowed {
            return Verdict::Refuse(access_error(tag));
        }
        match cmd {
            command::GET_SERVER_INFO if self.identity.is_some() => {
                if self.info_pending.len() >= MAX_OWN {
                    self.info_pending.clear();
                }
                self.info_pending.insert(tag);
            }
            command::CREATE_PLAYBACK_STREAM | command::CREATE_RECORD_STREAM => {
                if self.pending.len() >= MAX_OWN {
                    self.pending.clear();
                }
                self.pending
                    .insert(tag, cmd == command::CREATE_RECORD_STREAM);
            }
            command::AUTH => {
                // No shared memory: the relay carries bytes only. Below
                // version 13 the server reads no flags and would share
                // memory with a client of its own uid (the relay's).
                let Some(version) = u32_at(payload, 10).filter(|v| v & 0xffff >= 13) else {
                    return Verdict::Refuse(access_error(tag));
                };
                payload[11..15].copy_from_slice(&(version & !AUTH_SHM_FLAGS).to_be_bytes());
                if let Some(cookie) = &self.cookie {
                    // AUTH: 'L' version, then 'x' length(256) and the cookie.
                    let at = 10 + 5;
                    if payload.len() >= at + 5 + COOKIE_LEN
                        && payload[at] == TAG_ARBITRARY
                        && payload[at + 1..at + 5] == (COOKIE_LEN as u32).to_be_bytes()
                    {
                        payload[at + 5..at + 5 + COOKIE_LEN].copy_from_slice(cookie);
                    }
                }
            }
            _ => {}
        }
        self.inflight += 1;
        if self.inflight > MAX_INFLIGHT {
            return Verdict::Close;
        }
        if cmd == command::AUTH {
            Verdict::Authenticate
        } else {
            Verdict::Forward
        }
    }

    /// Read a frame from the server before it goes to the client: a reply
    /// to one of the client's create commands names the stream's index
    /// (after the stream's channel), which the client may then control.
    ///
    /// Returns the payload to send instead, if it changes it (the answer to
    /// `GET_SERVER_INFO`, with the sandbox's names).
    pub fn server(&mut self, channel: u32, payload: &[u8]) -> Option<Vec<u8>> {
        if channel != CONTROL {
            return None;
        }
        let (Some(cmd), Some(tag)) = (u32_at(payload, 0), u32_at(payload, 5)) else {
            return None;
        };
        if cmd != command::REPLY && cmd != command::ERROR {
            return None;
        }
        self.inflight = self.inflight.saturating_sub(1);
        if self.info_pending.remove(&tag) && cmd == command::REPLY {
            let (user, host) = self.identity.as_ref()?;
            return with_names(payload, user.as_deref(), host);
        }
        let record = self.pending.remove(&tag)?;
        let (Some(_channel), Some(index)) = (u32_at(payload, 10), u32_at(payload, 15)) else {
            return None;
        };
        if cmd == command::REPLY {
            let own = if record {
                &mut self.source_outputs
            } else {
                &mut self.sink_inputs
            };
            if own.len() >= MAX_OWN {
                own.clear();
            }
            own.insert(index);
        }
        None
    }
}

/// The end of the tagstruct string at byte `at` (`'t'`, bytes, NUL; or
/// `'N'`).
fn string_end(p: &[u8], at: usize) -> Option<usize> {
    match *p.get(at)? {
        TAG_STRING => {
            let nul = p.get(at + 1..)?.iter().position(|b| *b == 0)?;
            Some(at + 1 + nul + 1)
        }
        TAG_STRING_NULL => Some(at + 1),
        _ => None,
    }
}

/// A `GET_SERVER_INFO` reply (`REPLY`, tag, then the server's name,
/// version, user name and host name, …) with `user` (if given) and `host`
/// in place of the third and fourth strings; None if it does not read that
/// way.
fn with_names(reply: &[u8], user: Option<&str>, host: &str) -> Option<Vec<u8>> {
    let mut out = reply.get(..10)?.to_vec();
    let mut at = 10;
    for i in 0..4 {
        let end = string_end(reply, at)?;
        let name = match i {
            2 => user,
            3 => Some(host),
            _ => None,
        };
        match name {
            Some(name) => {
                out.push(TAG_STRING);
                out.extend(name.bytes().filter(|b| *b != 0));
                out.push(0);
            }
            None => out.extend_from_slice(&reply[at..end]),
        }
        at = end;
    }
    out.extend_from_slice(&reply[at..]);
    Some(out)
}

/// The tagstruct `u32` at byte `at` (its tag byte, then 4 bytes).
pub fn u32_at(p: &[u8], at: usize) -> Option<u32> {
    let b = p.get(at..at + 5)?;
    (b[0] == TAG_U32).then(|| u32::from_be_bytes([b[1], b[2], b[3], b[4]]))
}

/// A whole `ERROR` frame answering `tag` with `PA_ERR_ACCESS`.
fn access_error(tag: u32) -> Vec<u8> {
    let mut payload = Vec::with_capacity(15);
    for v in [command::ERROR, tag, ERR_ACCESS] {
        payload.push(TAG_U32);
        payload.extend_from_slice(&v.to_be_bytes());
    }
    frame(CONTROL, &payload)
}

/// A whole frame (descriptor: length, `channel`, no offset, no flags) of
/// `payload`.
pub fn frame(channel: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(DESCRIPTOR + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&channel.to_be_bytes());
    frame.extend_from_slice(&[0; 12]);
    frame.extend_from_slice(payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    // Commands the filter never names (it allows, it does not deny).
    const EXIT: u32 = 7;
    const GET_CLIENT_INFO_LIST: u32 = 28;
    const GET_SINK_INPUT_INFO_LIST: u32 = 30;
    const SET_SINK_VOLUME: u32 = 36;
    const SET_DEFAULT_SINK: u32 = 44;
    const KILL_SINK_INPUT: u32 = 49;
    const LOAD_MODULE: u32 = 51;
    const MOVE_SINK_INPUT: u32 = 67;
    const SUSPEND_SINK: u32 = 70;

    fn control(cmd: u32, tag: u32, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![TAG_U32];
        p.extend_from_slice(&cmd.to_be_bytes());
        p.push(TAG_U32);
        p.extend_from_slice(&tag.to_be_bytes());
        p.extend_from_slice(rest);
        p
    }

    fn u32s(values: &[u32]) -> Vec<u8> {
        values
            .iter()
            .flat_map(|v| std::iter::once(TAG_U32).chain(v.to_be_bytes()))
            .collect()
    }

    /// The tag a well-behaved client would use next (libpulse counts up).
    fn next_tag(f: &Filter) -> u32 {
        f.last_tag.map_or(0, |t| t + 1)
    }

    fn refused(f: &mut Filter, cmd: u32, rest: &[u8]) -> bool {
        let mut p = control(cmd, next_tag(f), rest);
        matches!(f.client(CONTROL, &mut p), Verdict::Refuse(_))
    }

    #[test]
    fn record_stream_is_refused_without_the_microphone() {
        let mut p = control(command::CREATE_RECORD_STREAM, 7, b"more");
        let Verdict::Refuse(frame) = Filter::new(false, None).client(CONTROL, &mut p) else {
            panic!("forwarded");
        };
        let d = descriptor(frame[..DESCRIPTOR].try_into().unwrap()).unwrap();
        assert_eq!((d.length, d.channel), (15, CONTROL));
        let payload = &frame[DESCRIPTOR..];
        assert_eq!(u32_at(payload, 0), Some(command::ERROR));
        assert_eq!(u32_at(payload, 5), Some(7));
        assert_eq!(payload[11..], ERR_ACCESS.to_be_bytes());
        assert_eq!(
            Filter::new(true, None).client(CONTROL, &mut p),
            Verdict::Forward
        );
    }

    #[test]
    fn a_tag_used_again_is_refused_so_no_other_reply_passes_for_a_create() {
        let mut f = Filter::new(false, None);
        // Buffer attributes with tag 5, whose reply (maxlength, tlength)
        // would read like a create's (channel, index), then a create with
        // the same tag: refused, and the reply teaches nothing.
        let mut attr = control(
            command::SET_PLAYBACK_STREAM_BUFFER_ATTR,
            5,
            &u32s(&[0, 1, 2]),
        );
        assert_eq!(f.client(CONTROL, &mut attr), Verdict::Forward);
        let mut create = control(command::CREATE_PLAYBACK_STREAM, 5, b"");
        assert!(matches!(f.client(CONTROL, &mut create), Verdict::Refuse(_)));
        let mut older = control(command::CREATE_PLAYBACK_STREAM, 4, b"");
        assert!(matches!(f.client(CONTROL, &mut older), Verdict::Refuse(_)));
        f.server(CONTROL, &control(command::REPLY, 5, &u32s(&[0, 42])));
        assert!(refused(
            &mut f,
            command::SET_SINK_INPUT_VOLUME,
            &u32s(&[42])
        ));
    }

    #[test]
    fn shared_memory_frames_end_the_connection_and_auth_cannot_ask_for_it() {
        // A "release" frame's length does not say what follows: never relayed.
        for flags in [
            0x4000_0000u32,
            0x8000_0000,
            0xc000_0000,
            0x2000_0000,
            0x0080_0000,
        ] {
            let mut d = [0u8; DESCRIPTOR];
            d[..4].copy_from_slice(&64u32.to_be_bytes());
            d[16..].copy_from_slice(&flags.to_be_bytes());
            assert_eq!(descriptor(&d), None, "flags {flags:#x}");
        }
        // A seek mode is fine.
        let mut d = [0u8; DESCRIPTOR];
        d[19] = 1;
        assert!(descriptor(&d).is_some());
        // AUTH's protocol flags asking for shm and memfd are cleared.
        let mut rest = u32s(&[35 | 0xc000_0000]);
        rest.extend_from_slice(&[TAG_ARBITRARY, 0, 0, 1, 0]);
        rest.extend_from_slice(&[0; COOKIE_LEN]);
        let mut p = control(command::AUTH, 0, &rest);
        assert_eq!(
            Filter::new(false, None).client(CONTROL, &mut p),
            Verdict::Authenticate
        );
        assert_eq!(u32_at(&p, 10), Some(35));
        // A version without protocol flags (< 13) would get shared memory
        // anyway: refused; so are the shared-memory commands.
        let mut rest = u32s(&[12]);
        rest.extend_from_slice(&[TAG_ARBITRARY, 0, 0, 1, 0]);
        rest.extend_from_slice(&[0; COOKIE_LEN]);
        let mut old = control(command::AUTH, 0, &rest);
        let mut f = Filter::new(false, None);
        assert!(matches!(f.client(CONTROL, &mut old), Verdict::Refuse(_)));
        for cmd in [101, 102, 103] {
            assert!(refused(&mut f, cmd, &u32s(&[0])), "command {cmd}");
        }
    }

    #[test]
    fn a_client_that_never_reads_its_replies_is_cut_off() {
        let mut f = Filter::new(false, None);
        let ask = |f: &mut Filter| {
            let mut p = control(command::GET_SINK_INFO_LIST, next_tag(f), b"");
            f.client(CONTROL, &mut p)
        };
        for _ in 0..MAX_INFLIGHT {
            assert_eq!(ask(&mut f), Verdict::Forward);
        }
        // Answered, it may go on.
        f.server(CONTROL, &control(command::REPLY, 0, b""));
        assert_eq!(ask(&mut f), Verdict::Forward);
        assert_eq!(ask(&mut f), Verdict::Close);
        // AUTH counts too: sent again and again, it is no way around the cap.
        let mut rest = u32s(&[35]);
        rest.extend_from_slice(&[TAG_ARBITRARY, 0, 0, 1, 0]);
        rest.extend_from_slice(&[0; COOKIE_LEN]);
        let mut auth = control(command::AUTH, next_tag(&f), &rest);
        assert_eq!(f.client(CONTROL, &mut auth), Verdict::Close);
    }

    #[test]
    fn what_acts_on_the_server_or_other_clients_is_refused_and_playback_passes() {
        let mut f = Filter::new(true, None);
        for cmd in [
            LOAD_MODULE,
            EXIT,
            SET_DEFAULT_SINK,
            SET_SINK_VOLUME,
            SUSPEND_SINK,
            MOVE_SINK_INPUT,
            KILL_SINK_INPUT,
            GET_CLIENT_INFO_LIST,
            GET_SINK_INPUT_INFO_LIST,
            104, // SEND_OBJECT_MESSAGE
            87,  // EXTENSION
            15,  // CREATE_UPLOAD_STREAM (the shared sample cache)
            500, // unknown
        ] {
            assert!(refused(&mut f, cmd, &u32s(&[0, 1])), "command {cmd}");
        }
        for cmd in [
            command::CREATE_PLAYBACK_STREAM,
            command::GET_SERVER_INFO,
            command::GET_SINK_INFO_LIST,
            command::SUBSCRIBE,
            command::CORK_PLAYBACK_STREAM,
        ] {
            assert!(!refused(&mut f, cmd, b""), "command {cmd}");
        }
        // Audio data on a stream channel is never read as a command.
        let mut p = control(LOAD_MODULE, 1, b"");
        assert_eq!(f.client(0, &mut p), Verdict::Forward);
        // A control frame that is no tagstruct is not judged: refused.
        assert!(matches!(
            f.client(CONTROL, &mut b"junk".to_vec()),
            Verdict::Refuse(_)
        ));
    }

    #[test]
    fn a_client_controls_its_own_streams_only() {
        let mut f = Filter::new(false, None);
        // Another application's sink input 5: no volume, mute or info.
        for cmd in [
            command::SET_SINK_INPUT_VOLUME,
            command::SET_SINK_INPUT_MUTE,
            command::GET_SINK_INPUT_INFO,
        ] {
            assert!(refused(&mut f, cmd, &u32s(&[5])), "command {cmd}");
        }
        // Its own: the server's reply to its create names channel 0, sink
        // input 7.
        let tag = next_tag(&f);
        let mut create = control(command::CREATE_PLAYBACK_STREAM, tag, b"");
        assert_eq!(f.client(CONTROL, &mut create), Verdict::Forward);
        f.server(CONTROL, &control(command::REPLY, tag, &u32s(&[0, 7, 4096])));
        assert!(!refused(
            &mut f,
            command::SET_SINK_INPUT_VOLUME,
            &u32s(&[7])
        ));
        assert!(!refused(&mut f, command::SET_SINK_INPUT_MUTE, &u32s(&[7])));
        assert!(refused(&mut f, command::SET_SINK_INPUT_VOLUME, &u32s(&[5])));
        // A reply to a tag that was no create teaches nothing.
        f.server(CONTROL, &control(command::REPLY, tag + 1, &u32s(&[0, 5])));
        assert!(refused(&mut f, command::SET_SINK_INPUT_MUTE, &u32s(&[5])));
        // Source outputs only with the microphone, and only its own.
        assert!(refused(
            &mut f,
            command::SET_SOURCE_OUTPUT_MUTE,
            &u32s(&[7])
        ));
    }

    #[test]
    fn auth_gets_the_callers_cookie_and_credentials() {
        let mut rest = vec![TAG_U32, 0, 0, 0, 35, TAG_ARBITRARY, 0, 0, 1, 0];
        rest.extend_from_slice(&[0; COOKIE_LEN]);
        let mut p = control(command::AUTH, 0, &rest);
        let cookie = [0xab; COOKIE_LEN];
        assert_eq!(
            Filter::new(false, Some(cookie)).client(CONTROL, &mut p),
            Verdict::Authenticate
        );
        assert_eq!(p[p.len() - COOKIE_LEN..], cookie);
    }

    #[test]
    fn server_info_names_the_sandbox_not_the_caller() {
        let mut f = Filter::new(false, None).with_identity(Some("browser".into()), "box".into());
        let mut ask = control(command::GET_SERVER_INFO, 3, b"");
        assert_eq!(f.client(CONTROL, &mut ask), Verdict::Forward);
        let mut rest = Vec::new();
        for s in ["pulseaudio", "16.1", "alice", "alices-laptop"] {
            rest.push(TAG_STRING);
            rest.extend_from_slice(s.as_bytes());
            rest.push(0);
        }
        rest.extend_from_slice(&u32s(&[44100]));
        let reply = control(command::REPLY, 3, &rest);
        let new = f.server(CONTROL, &reply).expect("rewritten");
        let text = String::from_utf8_lossy(&new);
        assert!(
            text.contains("pulseaudio\0") && text.contains("16.1\0"),
            "{text:?}"
        );
        assert!(text.contains("tbrowser\0tbox\0"), "{text:?}");
        assert!(!text.contains("alice"), "{text:?}");
        assert!(new.ends_with(&u32s(&[44100])));
        // Other replies pass as they are.
        assert_eq!(f.server(CONTROL, &control(command::REPLY, 4, &rest)), None);
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut d = [0u8; DESCRIPTOR];
        d[..4].copy_from_slice(&((MAX_PAYLOAD + 1) as u32).to_be_bytes());
        assert_eq!(descriptor(&d), None);
    }
}
