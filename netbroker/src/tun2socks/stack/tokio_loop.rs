//! A measurement variant of the engine loop (cargo feature `tokio-loop`):
//! the same engine — smoltcp stack, relay, dials, caps — on a current-thread
//! tokio runtime instead of its own epoll set. Built only to measure the two
//! against each other (issue 10, item 2); the figures and the choice are in
//! the module doc of [`super`].
//!
//! [`Registry`] stands in for the epoll set with the same calls
//! (`add`/`modify`/`delete` of a descriptor with an `EpollEvent`), so every
//! call site of the engine is unchanged: each registered descriptor gets a
//! tokio `AsyncFd` (the TUN, the wake-up eventfd, the dial, relay and UDP
//! sockets), and the loop ([`Engine::run`]) waits on their readiness and on a
//! `tokio::time` sleep for smoltcp's poll delay and the dial deadlines.
//! Readiness is reported once per edge, as the epoll loop's `EPOLLET`
//! registrations report it.
//!
//! The engine closes a socket by dropping it, as in the epoll loop; tokio
//! must deregister a descriptor before it is closed (else the deregistration
//! fails and the driver keeps its state for good: +8 MiB after 20,000
//! connections). So each `AsyncFd` owns a duplicate of the descriptor: the
//! socket is closed once both are, i.e. when the engine has dropped it and
//! its registration is forgotten — at the end of the same loop iteration,
//! once its connection, dial or flow is gone, or when its number is
//! registered again.

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{EpollCreateFlags, EpollEvent, EpollFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::Runtime;

use super::{now, Engine, Tun2socksError, TOKEN_TUN, TOKEN_WAKE};

struct Entry {
    /// A duplicate of the engine's descriptor.
    fd: AsyncFd<OwnedFd>,
    interest: Interest,
    token: u64,
    /// The read side's / write side's close was reported (tokio keeps
    /// reporting it: it is a state, not an edge).
    rd_closed: bool,
    wr_closed: bool,
}

/// The epoll set's stand-in: tokio registrations by the number of the
/// engine's descriptor.
pub(crate) struct Registry {
    // Before `rt`: they deregister from its driver when dropped.
    entries: RefCell<HashMap<RawFd, Entry>>,
    rt: Arc<Runtime>,
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

fn interest_of(f: EpollFlags) -> Interest {
    let rd = f.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP);
    match (rd, f.contains(EpollFlags::EPOLLOUT)) {
        (true, true) => Interest::READABLE | Interest::WRITABLE,
        (false, true) => Interest::WRITABLE,
        _ => Interest::READABLE,
    }
}

impl Registry {
    /// The runtime and an empty set (the flags of `Epoll::new` are moot).
    pub(crate) fn new(_: EpollCreateFlags) -> nix::Result<Registry> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(errno)?;
        Ok(Registry {
            entries: RefCell::new(HashMap::new()),
            rt: Arc::new(rt),
        })
    }

    pub(crate) fn add<F: AsFd>(&self, fd: F, ev: EpollEvent) -> nix::Result<()> {
        let raw = fd.as_fd().as_raw_fd();
        let mut map = self.entries.borrow_mut();
        // A number still here was closed by the engine and is reused: the
        // old registration (and with it the old socket) goes first.
        drop(map.remove(&raw));
        let interest = interest_of(ev.events());
        let dup = fd.as_fd().try_clone_to_owned().map_err(errno)?;
        let _rt = self.rt.enter();
        // Deprecated for descriptors that may close while registered; this
        // one is owned by the AsyncFd (the unsafe replacement,
        // `register_with_interest`, asks exactly that).
        #[allow(deprecated)]
        let afd = AsyncFd::with_interest(dup, interest).map_err(errno)?;
        map.insert(
            raw,
            Entry {
                fd: afd,
                interest,
                token: ev.data(),
                rd_closed: false,
                wr_closed: false,
            },
        );
        Ok(())
    }

    pub(crate) fn modify<F: AsFd>(&self, fd: F, ev: &mut EpollEvent) -> nix::Result<()> {
        let raw = fd.as_fd().as_raw_fd();
        let same = {
            let mut map = self.entries.borrow_mut();
            let e = map.get_mut(&raw).ok_or(Errno::ENOENT)?;
            e.token = ev.data();
            e.interest == interest_of(ev.events())
        };
        if same {
            Ok(())
        } else {
            self.add(fd, *ev)
        }
    }

    pub(crate) fn delete<F: AsFd>(&self, fd: F) -> nix::Result<()> {
        let raw = fd.as_fd().as_raw_fd();
        match self.entries.borrow_mut().remove(&raw) {
            Some(_) => Ok(()),
            None => Err(Errno::ENOENT),
        }
    }

    /// Forget the registrations whose token `live` no longer knows.
    fn retain(&self, live: impl Fn(u64) -> bool) {
        self.entries.borrow_mut().retain(|_, e| live(e.token));
    }

    fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    /// The readiness each descriptor gained since it was last reported, as
    /// the epoll flags the engine's event handler takes; registers `cx` for
    /// the rest.
    fn collect(&self, cx: &mut Context<'_>, out: &mut Vec<(u64, EpollFlags)>) {
        for e in self.entries.borrow_mut().values_mut() {
            let mut f = EpollFlags::empty();
            if e.interest.is_readable() {
                if let Poll::Ready(Ok(mut g)) = e.fd.poll_read_ready(cx) {
                    let r = g.ready();
                    if r.is_readable() {
                        f |= EpollFlags::EPOLLIN;
                    }
                    if r.is_read_closed() && !e.rd_closed {
                        e.rd_closed = true;
                        f |= EpollFlags::EPOLLRDHUP;
                    }
                    g.clear_ready();
                }
            }
            if e.interest.is_writable() {
                if let Poll::Ready(Ok(mut g)) = e.fd.poll_write_ready(cx) {
                    let r = g.ready();
                    if r.is_writable() {
                        f |= EpollFlags::EPOLLOUT;
                    }
                    if r.is_write_closed() && !e.wr_closed {
                        e.wr_closed = true;
                        f |= EpollFlags::EPOLLHUP;
                    }
                    g.clear_ready();
                }
            }
            if !f.is_empty() {
                out.push((e.token, f));
            }
        }
    }
}

impl Engine {
    /// Run until stopped (Ok) or the TUN device fails (Err).
    pub(crate) fn run(&mut self) -> Result<(), Tun2socksError> {
        let rt = self.epoll.rt.clone();
        rt.block_on(self.serve())
    }

    async fn serve(&mut self) -> Result<(), Tun2socksError> {
        let mut events: Vec<(u64, EpollFlags)> = Vec::with_capacity(256);
        let mut busy = true;
        let mut sleep = pin!(tokio::time::sleep(Duration::ZERO));
        let mut held = (0, 0, 0);
        let mut registered = 0;
        loop {
            events.clear();
            if busy {
                // Lets the driver poll its epoll set without waiting, as the
                // epoll loop's zero timeout does.
                tokio::task::yield_now().await;
                poll_fn(|cx| {
                    self.epoll.collect(cx, &mut events);
                    Poll::Ready(())
                })
                .await;
            } else {
                let d = self
                    .iface
                    .poll_delay(now(), &self.sockets)
                    .map(|d| d.total_millis())
                    .unwrap_or(1000)
                    .min(if self.dials.is_empty() { 1000 } else { 250 });
                sleep
                    .as_mut()
                    .reset(tokio::time::Instant::now() + Duration::from_millis(d));
                poll_fn(|cx| {
                    self.epoll.collect(cx, &mut events);
                    if !events.is_empty() || sleep.as_mut().poll(cx).is_ready() {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await;
            }
            if self.shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            for &(t, f) in &events {
                match t {
                    TOKEN_TUN => {}
                    TOKEN_WAKE => {
                        let _ = self.shared.wake.read();
                    }
                    _ => self.on_event(t >> 2, t & 3, f),
                }
            }
            self.finish_helpers();
            let more_tun = self.read_tun()?;
            let ts = now();
            let pumped = self.pump();
            while self.iface.poll_egress(ts, &mut self.dev, &mut self.sockets)
                != smoltcp::iface::PollResult::None
            {}
            self.reap();
            if !self.dials.is_empty() && self.last_expiry.elapsed() > Duration::from_millis(200) {
                self.expire_dials();
            }
            if self.last_sweep.elapsed() > Duration::from_secs(5) {
                self.sweep();
            }
            // Registrations of connections, dials and flows that are gone:
            // their sockets close now.
            let now_held = (self.conns.len(), self.dials.len(), self.flows.len());
            if now_held != held || self.epoll.len() != registered {
                held = now_held;
                let (conns, dials, flows) = (&self.conns, &self.dials, &self.flows);
                self.epoll.retain(|t| {
                    let id = t >> 2;
                    t == TOKEN_TUN
                        || t == TOKEN_WAKE
                        || conns.contains_key(&id)
                        || dials.contains_key(&id)
                        || flows.contains_key(&id)
                });
                registered = self.epoll.len();
            }
            busy = more_tun || pumped;
        }
    }
}
