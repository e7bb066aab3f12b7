//! pallium's protocol crate: everything the three processes (supervisor,
//! netbroker, sandboxer) and the CLI client share.
//!
//! * [`wire`]: the one codec (length-prefixed bincode frames, fds by SCM_RIGHTS)
//!   and the typed [`wire::Channel`];
//! * [`broker`], [`sandbox`], [`control`], [`engine`]: one request and one event enum per channel;
//! * [`profile`]: the JSON profile types (the original pallium's format);
//! * [`policy`]: the capabilities each role may hold, as data;
//! * [`hidden`]: the host paths every sandbox view hides, as data;
//! * [`runtime`]: the runtime directory's layout and session liveness,
//!   [`sysctl`]: the host's forwarding sysctls and their restore, [`ids`]:
//!   the one id hash, [`log`]: the one log setup — shared runtime code every
//!   crate uses alike.
//!
//! This crate depends on nothing else of ours.

pub mod broker;
pub mod control;
pub mod engine;
pub mod error;
pub mod hidden;
pub mod ids;
pub mod log;
pub mod policy;
pub mod profile;
pub mod pulse;
pub mod runtime;
pub mod sandbox;
mod sys;
pub mod sysctl;
pub mod wire;

pub use error::{ErrorKind, RemoteError};
pub use wire::{Channel, Fd, WireError};

/// Bumped whenever a message changes shape; peers refuse a mismatch at hello.
pub const PROTOCOL_VERSION: u32 = 6;
