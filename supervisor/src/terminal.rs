//! The caller's terminal: when standard input is a terminal, the command gets
//! a fresh PTY (its own session and controlling terminal, so job control works
//! and it cannot inject keystrokes into ours) and we relay bytes, with our
//! terminal in raw mode and window-size changes forwarded. Otherwise the
//! command gets our standard descriptors directly, with no copying at all.
//!
//! Under gVisor the first command's PTY belongs to `runsc run`, which relays
//! no signal from it (and would die of one): there the relay also turns the
//! interrupt and quit keys into SIGINT/SIGQUIT for this process, which
//! relays them to the command like any other signal it gets. And gVisor
//! writes a regular file it is given as stdout or stderr at offsets of its
//! own, from 0, over what the file's shared offset says was written before
//! (`(echo a; cmd) > log` would lose `a`): such a file gets a pipe, copied
//! into it here with plain writes.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::termios::{self, SetArg, Termios};
use proto::Fd;

/// Where the command runs, as far as its stdio is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runner {
    Direct,
    /// A gVisor session's first command (`runsc run`).
    GvisorFirst,
    /// A command joining a gVisor session (`runsc exec`).
    GvisorJoin,
}

/// The command's stdio and whatever keeps it working.
pub(crate) struct Stdio {
    pub(crate) fds: [Fd; 3],
    pub(crate) tty: bool,
    pty: Option<PtyRelay>,
    /// Copies from a pipe into a regular file (under gVisor).
    files: Vec<JoinHandle<()>>,
}

struct PtyRelay {
    master: Arc<OwnedFd>,
    saved: Option<Termios>,
    output: JoinHandle<()>,
}

/// Prepare stdio for a command run from this process by `runner`.
pub(crate) fn setup(runner: Runner) -> Result<Stdio> {
    let keys_as_signals = runner == Runner::GvisorFirst;
    let stdin = std::io::stdin();
    if !nix::unistd::isatty(stdin.as_fd()).unwrap_or(false) {
        let dup = |fd: std::os::fd::BorrowedFd<'_>| -> Result<Fd> {
            Ok(Fd(fd.try_clone_to_owned().context("dup stdio")?))
        };
        let mut files = Vec::new();
        // Each file gets one pipe, so `> log 2>&1` keeps the order the
        // command wrote in: (file's dev and inode, the pipe's write end).
        let mut piped: Vec<((u64, u64), OwnedFd)> = Vec::new();
        let mut out = |fd: std::os::fd::BorrowedFd<'_>| -> Result<Fd> {
            let Some(id) = overwritable_file(fd).filter(|_| runner != Runner::Direct) else {
                return dup(fd);
            };
            if let Some((_, w)) = piped.iter().find(|(f, _)| *f == id) {
                return Ok(Fd(w.try_clone().context("dup a pipe")?));
            }
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .context("a pipe for a gVisor command's output file")?;
            let file = fd.try_clone_to_owned().context("dup stdio")?;
            files.push(std::thread::spawn(move || copy_all(&r, &file)));
            piped.push((id, w.try_clone().context("dup a pipe")?));
            Ok(Fd(w))
        };
        let fds = [
            dup(stdin.as_fd())?,
            out(std::io::stdout().as_fd())?,
            out(std::io::stderr().as_fd())?,
        ];
        // Only the command may hold the write ends, or the copies never end.
        drop(piped);
        return Ok(Stdio {
            fds,
            tty: false,
            pty: None,
            files,
        });
    }
    let pty = nix::pty::openpty(None, None).context("cannot allocate a pseudo-terminal")?;
    let master = Arc::new(pty.master);
    if let Some(ws) = crate::sys::get_winsize(stdin.as_fd()) {
        crate::sys::set_winsize(master.as_fd(), &ws);
    }
    let saved = termios::tcgetattr(stdin.as_fd()).ok();
    if let Some(orig) = &saved {
        let mut raw = orig.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
    }
    // Keystrokes → PTY. This thread may block in read() until we exit.
    let m = Arc::clone(&master);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin().lock();
        while let Ok(n @ 1..) = stdin.read(&mut buf) {
            if keys_as_signals {
                raise_for_keys(&m, &buf[..n]);
            }
            if nix::unistd::write(&*m, &buf[..n]).is_err() {
                break;
            }
        }
    });
    // PTY → screen, until every holder of the slave has closed it (EIO).
    let m = Arc::clone(&master);
    let output = std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        let mut out = std::io::stdout().lock();
        while let Ok(n @ 1..) = nix::unistd::read(&*m, &mut buf) {
            if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                break;
            }
        }
    });
    let slave = pty.slave;
    let fds = [Fd(slave.try_clone()?), Fd(slave.try_clone()?), Fd(slave)];
    Ok(Stdio {
        fds,
        tty: true,
        pty: Some(PtyRelay {
            master,
            saved,
            output,
        }),
        files: Vec::new(),
    })
}

/// A regular file opened without O_APPEND, which gVisor would write from
/// its own offset: its device and inode.
fn overwritable_file(fd: std::os::fd::BorrowedFd<'_>) -> Option<(u64, u64)> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use nix::sys::stat::{fstat, SFlag};
    let st = fstat(fd).ok()?;
    let regular = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
    let append = fcntl(fd, FcntlArg::F_GETFL)
        .is_ok_and(|fl| OFlag::from_bits_truncate(fl).contains(OFlag::O_APPEND));
    (regular && !append).then_some((st.st_dev, st.st_ino))
}

/// Copy everything from `from` to `to` (plain writes, at its offset).
fn copy_all(from: &OwnedFd, to: &OwnedFd) {
    let mut buf = [0u8; 16384];
    while let Ok(n @ 1..) = nix::unistd::read(from, &mut buf) {
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            match nix::unistd::write(to, rest) {
                Ok(w) => rest = &rest[w..],
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }
}

/// Wait until `t` has finished, or `deadline`.
fn wait_finished(t: &JoinHandle<()>, deadline: std::time::Instant) {
    while !t.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGINT/SIGQUIT to this process for each interrupt/quit key in `keys`,
/// when the PTY (whose settings the command controls) generates signals.
fn raise_for_keys(master: &OwnedFd, keys: &[u8]) {
    use nix::sys::signal::{kill, Signal};
    use nix::sys::termios::{LocalFlags, SpecialCharacterIndices as Cc};
    let Ok(t) = termios::tcgetattr(master.as_fd()) else {
        return;
    };
    if !t.local_flags.contains(LocalFlags::ISIG) {
        return;
    }
    let (intr, quit) = (
        t.control_chars[Cc::VINTR as usize],
        t.control_chars[Cc::VQUIT as usize],
    );
    for &k in keys.iter().filter(|&&k| k != 0) {
        let sig = if k == intr {
            Signal::SIGINT
        } else if k == quit {
            Signal::SIGQUIT
        } else {
            continue;
        };
        let _ = kill(nix::unistd::Pid::this(), sig);
    }
}

impl Stdio {
    /// Take the descriptors to send (ours close once sent).
    pub(crate) fn take_fds(&mut self) -> [Fd; 3] {
        let null = || Fd(std::fs::File::open("/dev/null").expect("/dev/null").into());
        std::mem::replace(&mut self.fds, [null(), null(), null()])
    }

    /// Copy our terminal's size to the command's PTY (on SIGWINCH).
    pub(crate) fn resize(&self) {
        if let Some(p) = &self.pty {
            if let Some(ws) = crate::sys::get_winsize(std::io::stdin().as_fd()) {
                crate::sys::set_winsize(p.master.as_fd(), &ws);
            }
        }
    }

    /// The command has exited: let the last output through, restore our terminal.
    pub(crate) fn finish(mut self) {
        // The copies end when gVisor's last process holding the pipe does,
        // right after the command.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        for copy in std::mem::take(&mut self.files) {
            wait_finished(&copy, deadline);
        }
        if let Some(p) = self.pty.take() {
            wait_finished(
                &p.output,
                std::time::Instant::now() + Duration::from_millis(500),
            );
            if let Some(orig) = &p.saved {
                let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, orig);
            }
        }
    }
}

impl Drop for Stdio {
    fn drop(&mut self) {
        if let Some(p) = self.pty.take() {
            if let Some(orig) = &p.saved {
                let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, orig);
            }
        }
    }
}
