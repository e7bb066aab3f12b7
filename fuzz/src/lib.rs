//! Shared checks of the fuzz targets (doc/FUZZING.md): the codec's frame
//! decode of one message type, with and without descriptors, and the
//! invariants it must keep on any input.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use proto::wire::{self, MAX_FDS};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Splits a fuzz input into a frame and the descriptors that come with it.
///
/// Byte 0: the low 5 bits, modulo `MAX_FDS + 1` (a channel never delivers
/// more), are how many descriptors (`/dev/null`) arrive with the frame; bit 7
/// set means the rest is a body whose length header is written here (so the
/// fuzzer need not find it).
pub fn frame_of(data: &[u8]) -> Option<(Vec<u8>, usize)> {
    let (&ctl, rest) = data.split_first()?;
    let nfds = usize::from(ctl & 0x1f) % (MAX_FDS + 1);
    let frame = if ctl & 0x80 != 0 {
        let mut f = (rest.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(rest);
        f
    } else {
        rest.to_vec()
    };
    Some((frame, nfds))
}

/// Decode `data` as a frame of `T`. A message that decodes must encode again,
/// the encoding must decode to a message that encodes to the same bytes (what
/// a helper accepts it can also send, and validation on decode accepts its
/// own output), it claims no more descriptors than came, and every descriptor
/// that came is closed once the message is gone.
pub fn frame<T: Serialize + DeserializeOwned>(data: &[u8]) {
    let Some((frame, nfds)) = frame_of(data) else {
        return;
    };
    let (fds, raws) = dev_nulls(nfds);
    if let Ok(msg) = wire::decode::<T>(&frame, fds) {
        let (bytes, sent) = wire::encode(&msg).expect("a decoded message encodes");
        assert!(
            sent.len() <= nfds,
            "{} fds claimed, {nfds} came",
            sent.len()
        );
        let (fds2, raws2) = dev_nulls(sent.len());
        let again: T = wire::decode(&bytes, fds2).expect("an encoded message decodes");
        let (bytes2, sent2) = wire::encode(&again).expect("a decoded message encodes");
        assert_eq!(bytes, bytes2, "encode(decode(encode(m))) differs");
        assert_eq!(sent.len(), sent2.len());
        drop(again);
        assert_closed(&raws2);
    }
    assert_closed(&raws);
}

fn dev_nulls(n: usize) -> (Vec<OwnedFd>, Vec<RawFd>) {
    let fds: Vec<OwnedFd> = (0..n)
        .map(|_| File::open("/dev/null").expect("open /dev/null").into())
        .collect();
    let raws = fds.iter().map(AsRawFd::as_raw_fd).collect();
    (fds, raws)
}

/// Single-threaded: nothing else opens a descriptor in between.
fn assert_closed(raws: &[RawFd]) {
    for raw in raws {
        assert!(
            std::fs::symlink_metadata(format!("/proc/self/fd/{raw}")).is_err(),
            "descriptor {raw} outlived its message"
        );
    }
}
