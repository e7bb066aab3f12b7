//! pallium's sandboxer: builds the application's namespaces and file view,
//! runs its init, and spawns, signals and reaps its processes on behalf of
//! the supervisor, which talks to it over the socket on fd 3
//! (`proto::sandbox`). Single-threaded by design: it enters user and mount
//! namespaces.
//!
//! * [`server`]: channel, request state machine, poll loop;
//! * [`setup`]: namespaces, then [`plan`] (the file view as data) run by
//!   [`mount`], and the [`init`];
//! * [`spawn`]: the application's processes, under the [`seccomp`] filter
//!   and the [`landlock`] ruleset that mirrors the file view, or under
//!   gVisor's runsc ([`gvisor`]);
//!   [`procs`]: `ListPids`;
//! * `sys`: every `unsafe` syscall wrapper.

// Every module but `sys` forbids unsafe code itself.
#![deny(unsafe_code)]

pub mod gvisor;
pub mod init;
pub mod landlock;
pub mod mount;
pub mod paths;
pub mod plan;
pub mod procs;
pub mod seccomp;
pub mod server;
pub mod setup;
pub mod spawn;
#[allow(unsafe_code)] // the one module with raw syscalls, each with a SAFETY note
mod sys;
pub mod virtuser;

pub use server::{run, ServerError};
