//! The only `unsafe` in proto: adopting descriptors the kernel handed us.
#![allow(unsafe_code)] // The one module of this crate that may: see the module doc.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Take ownership of a descriptor received with SCM_RIGHTS.
pub(crate) fn owned_from_received(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel installed `fd` in our table for this one message;
    // nothing else in the process refers to it, so it has exactly one owner.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
