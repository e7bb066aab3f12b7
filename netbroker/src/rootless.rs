//! Userspace uplinks: pasta (preferred) or slirp4netns serving a namespace
//! created by a short-lived holder child. Rootless, the holder also creates a
//! user namespace that maps the caller to root; the netbroker itself never
//! enters it. The daemon is our child with PR_SET_PDEATHSIG, so it dies with us.

#![forbid(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut, Read, Seek};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use proto::broker::Uplink;

use crate::netns::Netns;
use crate::rtnl::Rtnl;
use crate::sys;

/// What failed while building a userspace uplink.
#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    #[error("{tool} (Debian package \"{package}\") is not installed")]
    Missing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("/dev/net/tun is not accessible to uid {uid} (mode {mode:04o}); rootless networking needs it world read-write as Debian ships it: chmod 0666 /dev/net/tun")]
    Tun { uid: u32, mode: u32 },
    #[error("the session's uid {asked} is not the netbroker's uid {ours}")]
    WrongUid { asked: u32, ours: u32 },
    #[error("namespace holder: {step}")]
    Holder {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("write {path}")]
    IdMap {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("open {path}")]
    OpenNs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("start {tool}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{tool} exited ({status}) before the namespace was ready: {stderr}")]
    Exited {
        tool: &'static str,
        status: String,
        stderr: String,
    },
    #[error("{tool} did not bring up the namespace within {secs} s: {stderr}")]
    Timeout {
        tool: &'static str,
        secs: u64,
        stderr: String,
    },
}

/// A running userspace uplink. Dropping it kills the daemon.
#[derive(Debug)]
pub struct UserspaceUplink {
    pub netns: OwnedFd,
    /// Rootless: the session's user namespace.
    pub userns: Option<OwnedFd>,
    /// Rootless: the application's user namespace inside it, which owns
    /// `netns` (the empty chain's application namespace).
    pub app_userns: Option<OwnedFd>,
    pub resolv_conf: String,
    pub link: String,
    pub daemon: Child,
    pub role: &'static str,
    /// A route socket opened in `netns` by the holder: the netbroker may
    /// change its routes through it though it cannot enter `netns`
    /// (rootless: owned by a user namespace it is not in).
    pub rtnl: Rtnl,
    /// A nf_tables socket in `netns`, the same way (`network.routes`' wall).
    pub nft: Option<netlink_sys::Socket>,
}

impl Drop for UserspaceUplink {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// The address pasta maps to the host's first resolver (pasta's own default
/// in later versions).
pub const PASTA_DNS: &str = "169.254.1.1";
/// slirp4netns's built-in DNS forwarder.
pub const SLIRP_DNS: &str = "10.0.2.3";
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Build the uplink. `rootless`: also create a user namespace mapping `uid`
/// and `gid` to root; otherwise a bare network namespace (root + force_slirp).
pub fn build(
    uplink: Uplink,
    rootless: bool,
    uid: u32,
    gid: u32,
) -> Result<UserspaceUplink, RootlessError> {
    let (tool, package) = match uplink {
        Uplink::Slirp4netns => ("slirp4netns", "slirp4netns"),
        _ => ("pasta", "passt"),
    };
    let exe = find_in_path(tool).ok_or(RootlessError::Missing { tool, package })?;
    if rootless {
        check_caller(uid)?;
    }
    let mut holder = Holder::start(rootless, uid, gid)?;
    let pid = holder.pid;
    let proc_ns = |ns: &str| PathBuf::from(format!("/proc/{pid}/ns/{ns}"));
    let netns = holder.open_ns("net")?;
    // Rootless: the session's user namespace, and inside it the
    // application's, which owns the network namespace (pasta joins it).
    let (userns, app_userns) = if rootless {
        (holder.session_userns.take(), Some(holder.open_ns("user")?))
    } else {
        (None, None)
    };
    let mut rtnl = Rtnl::from_socket(sys::netlink_socket_from(holder.rtnl_fd()?));
    let nft = Some(holder.nft_socket()?);

    let stderr = stderr_file().map_err(|source| RootlessError::Spawn { tool, source })?;
    let mut cmd = Command::new(&exe);
    let mut ready_pipe = None;
    match uplink {
        Uplink::Slirp4netns => {
            let (r, w) = nix::unistd::pipe().map_err(|e| RootlessError::Spawn {
                tool,
                source: e.into(),
            })?;
            cmd.args(["--configure", "--mtu=65520", "--disable-host-loopback"])
                // No --enable-sandbox: it needs CAP_SETPCAP as root (dropped by
                // our policy) and fails when run from outside the user
                // namespace rootless; seccomp still applies.
                .args(["--enable-ipv6", "--enable-seccomp"])
                .arg(format!("--ready-fd={}", w.as_raw_fd()))
                .arg("--netns-type=path");
            if rootless {
                cmd.arg(format!("--userns-path={}", proc_ns("user").display()));
            }
            cmd.arg(proc_ns("net")).arg("tap0");
            ready_pipe = Some((r, w));
        }
        _ => {
            cmd.args(["--foreground", "--quiet", "--config-net", "--no-map-gw"])
                .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
                .args(["--dns-forward", PASTA_DNS, "--ns-ifname", "eth0"])
                .arg("--netns")
                .arg(proc_ns("net"));
            if let Some(_u) = &userns {
                cmd.arg("--userns").arg(proc_ns("user"));
            } else {
                // As root pasta would switch to "nobody", which clears
                // PDEATHSIG; stay uid 0 (pasta still drops its capabilities).
                cmd.args(["--runas", "0:0"]);
            }
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            stderr
                .try_clone()
                .map_err(|source| RootlessError::Spawn { tool, source })?,
        ));
    sys::die_with_parent(&mut cmd, Signal::SIGKILL);
    tracing::debug!("starting {cmd:?}");
    let mut daemon = cmd
        .spawn()
        .map_err(|source| RootlessError::Spawn { tool, source })?;
    let ready_fd = ready_pipe.map(|(r, w)| {
        drop(w);
        r
    });
    let waited = wait_ready(&mut daemon, &mut rtnl, ready_fd.as_ref().map(|f| f.as_fd()));
    if let Err(e) = waited {
        let _ = daemon.kill();
        let status = daemon
            .wait()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        let stderr = tail(stderr);
        return Err(match e {
            Wait::Exited => RootlessError::Exited {
                tool,
                status,
                stderr,
            },
            Wait::Timeout => RootlessError::Timeout {
                tool,
                secs: READY_TIMEOUT.as_secs(),
                stderr,
            },
        });
    }
    holder.finish();
    let (resolv_conf, link) = match uplink {
        Uplink::Slirp4netns => (
            format!("nameserver {SLIRP_DNS}\n"),
            "slirp4netns ⇄ tap0 10.0.2.100/24 fd00::100/64".to_string(),
        ),
        _ => (
            format!("nameserver {PASTA_DNS}\n"),
            "pasta ⇄ eth0 (host addresses)".to_string(),
        ),
    };
    Ok(UserspaceUplink {
        netns,
        userns,
        app_userns,
        resolv_conf,
        link,
        daemon,
        role: if tool == "pasta" {
            "hop:pasta"
        } else {
            "hop:slirp4netns"
        },
        rtnl,
        nft,
    })
}

/// Fail early and clearly if the tun device cannot be opened by `uid`.
fn check_tun(uid: u32) -> Result<(), RootlessError> {
    const TUN: &str = "/dev/net/tun";
    match OpenOptions::new().read(true).write(true).open(TUN) {
        Ok(_) => Ok(()),
        Err(_) => {
            let mode = fs::metadata(TUN).map(|m| m.mode() & 0o7777).unwrap_or(0);
            Err(RootlessError::Tun { uid, mode })
        }
    }
}

/// `tool` in `$PATH`, then in the usual system directories
/// ([`proto::runtime::find_program_or_system`]).
pub fn find_in_path(tool: &str) -> Option<PathBuf> {
    proto::runtime::find_program_or_system(tool)
}

enum Wait {
    Exited,
    Timeout,
}

/// Ready when slirp4netns writes its ready fd, or (pasta) when the namespace
/// has a default route; fails at once if the daemon exits.
fn wait_ready(
    daemon: &mut Child,
    rtnl: &mut Rtnl,
    ready_fd: Option<std::os::fd::BorrowedFd<'_>>,
) -> Result<(), Wait> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut delay = Duration::from_millis(1);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = daemon.try_wait() {
            return Err(Wait::Exited);
        }
        let ready = match ready_fd {
            Some(fd) => {
                let mut pfd = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
                let n = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(10u8)).unwrap_or(0);
                n > 0 && nix::unistd::read(fd, &mut [0u8; 1]).unwrap_or(0) == 1
            }
            // pasta configures addresses and routes itself: ready once a
            // default route (IPv4 or, on a v6-only host, IPv6) is in place.
            None => [false, true].into_iter().any(|v6| {
                rtnl.routes(v6)
                    .map(|r| r.iter().any(|p| p.len == 0))
                    .unwrap_or(false)
            }),
        };
        if ready {
            return Ok(());
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    }
    Err(Wait::Timeout)
}

/// An unlinked file for the daemon's stderr, read back if it fails.
fn stderr_file() -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(std::env::temp_dir())
}

fn tail(mut f: File) -> String {
    let mut s = String::new();
    let _ = f.rewind();
    let _ = f.read_to_string(&mut s);
    let lines: Vec<&str> = s.lines().filter(|l| !l.contains("to syslog")).collect();
    let tail = lines[lines.len().saturating_sub(8)..].join(" | ");
    if tail.is_empty() {
        "(no output)".into()
    } else {
        tail
    }
}

/// A fresh network namespace owned by a fresh user namespace of its own, in
/// which uid and gid 0 are our `uid`/`gid` (root mode: the session's
/// unprivileged uid; rootless: the session namespace's root, the caller).
/// The application joins that user namespace: `exec --root` gets
/// capabilities over its network namespace and nothing else, and every
/// other process is uid 0 there but an unprivileged uid on the host. Made by
/// a short-lived holder child, so the netbroker's threads stay where they are.
pub fn owned_netns(uid: u32, gid: u32, count: u32) -> Result<(Netns, OwnedFd), RootlessError> {
    let holder = Holder::start_mapped(uid, gid, count)?;
    let fd = holder.open_ns("net")?;
    let userns = holder.open_ns("user")?;
    let rtnl = Rtnl::from_socket(sys::netlink_socket_from(holder.rtnl_fd()?));
    holder.finish();
    Ok((Netns { fd, rtnl }, userns))
}

/// The rootless empty chain's direct uplink: the session's user namespace,
/// inside it the application's, which owns a fresh network namespace with
/// `lo` up and one TUN device, `tun0`, addressed and routed as a proxy hop's
/// (every packet goes to the engine). Nothing runs in it but the
/// application: the packet engine, in direct mode, serves the TUN from the
/// caller's own namespace.
#[derive(Debug)]
pub struct DirectUplink {
    pub netns: OwnedFd,
    pub userns: OwnedFd,
    pub app_userns: OwnedFd,
    pub tun: crate::tun::Tun,
    /// The holder's route socket in `netns` (see [`UserspaceUplink::rtnl`]).
    pub rtnl: Rtnl,
    /// Its nf_tables socket there (see [`UserspaceUplink::nft`]).
    pub nft: Option<netlink_sys::Socket>,
}

/// Build [`DirectUplink`] for `uid`/`gid` (the caller, whom the netbroker
/// runs as).
pub fn direct(uid: u32, gid: u32, tun: &str, mtu: u32) -> Result<DirectUplink, RootlessError> {
    check_caller(uid)?;
    let mut holder = Holder::start_with(&[(uid, gid, 1), (0, 0, 1)], Some((tun, mtu)))?;
    let netns = holder.open_ns("net")?;
    let app_userns = holder.open_ns("user")?;
    let userns = holder.take_session_userns()?;
    let fd = holder.tun_fd()?;
    let mut rtnl = Rtnl::from_socket(sys::netlink_socket_from(holder.rtnl_fd()?));
    let nft = Some(holder.nft_socket()?);
    let index = rtnl
        .link_index(tun)
        .map_err(|source| RootlessError::Holder {
            step: "find the TUN device",
            source,
        })?;
    holder.finish();
    Ok(DirectUplink {
        netns,
        userns,
        app_userns,
        tun: crate::tun::Tun {
            fd,
            name: tun.to_string(),
            index,
            mtu,
        },
        rtnl,
        nft,
    })
}

/// A rootless chain whose hop 1 runs in the caller's own network namespace
/// (no pasta): the session's user namespace (the caller mapped to root),
/// and inside it the application's, which owns a fresh network namespace,
/// the application's; the netbroker then enters the first and that
/// namespace ([`crate::netns::enter_session`]). Returns (session user
/// namespace, application user namespace, network namespace).
pub fn session_namespaces(uid: u32, gid: u32) -> Result<(OwnedFd, OwnedFd, Netns), RootlessError> {
    check_caller(uid)?;
    let mut holder = Holder::start(true, uid, gid)?;
    let fd = holder.open_ns("net")?;
    let app_userns = holder.open_ns("user")?;
    let session_userns = holder.take_session_userns()?;
    let rtnl = Rtnl::from_socket(sys::netlink_socket_from(holder.rtnl_fd()?));
    holder.finish();
    Ok((session_userns, app_userns, Netns { fd, rtnl }))
}

/// A forked child that creates the namespaces and keeps them reachable by
/// `/proc/<pid>/ns/*` until the daemon has joined them.
struct Holder {
    pid: Pid,
    sock: OwnedFd,
    /// With nested user namespaces: the outermost (the session's).
    session_userns: Option<OwnedFd>,
}

/// Rootless: the netbroker must be the session's `uid` (it writes the user
/// namespace's maps as itself), and `/dev/net/tun` must be open to it.
fn check_caller(uid: u32) -> Result<(), RootlessError> {
    let ours = nix::unistd::geteuid().as_raw();
    if ours != uid {
        return Err(RootlessError::WrongUid { asked: uid, ours });
    }
    check_tun(uid)
}

impl Holder {
    /// Open the holder's namespace of kind `ns` ("net", "user": its
    /// innermost user namespace).
    fn open_ns(&self, ns: &str) -> Result<OwnedFd, RootlessError> {
        let path = PathBuf::from(format!("/proc/{}/ns/{ns}", self.pid));
        File::open(&path)
            .map(OwnedFd::from)
            .map_err(|source| RootlessError::OpenNs { path, source })
    }

    /// The session's (outermost) user namespace of a nested holder.
    fn take_session_userns(&mut self) -> Result<OwnedFd, RootlessError> {
        self.session_userns.take().ok_or(RootlessError::Holder {
            step: "open the session's user namespace",
            source: io::Error::other("not made"),
        })
    }

    /// Rootless: the session's user namespace (`uid`/`gid` mapped to 0),
    /// and inside it the application's (its root mapped to 0 again), which
    /// owns the network namespace; [`Holder::session_userns`] is the first.
    /// Otherwise (root, `force_slirp`): a bare network namespace.
    fn start(userns: bool, uid: u32, gid: u32) -> Result<Self, RootlessError> {
        if userns {
            Self::start_with(&[(uid, gid, 1), (0, 0, 1)], None)
        } else {
            Self::start_with(&[], None)
        }
    }

    /// A user and a network namespace, ids 0…`count`−1 mapped to ours from
    /// `uid`/`gid` on. With more than one, the mapping needs CAP_SETUID and
    /// CAP_SETGID (root mode), and `setgroups` stays allowed inside.
    fn start_mapped(uid: u32, gid: u32, count: u32) -> Result<Self, RootlessError> {
        Self::start_with(&[(uid, gid, count)], None)
    }

    /// One user namespace per entry of `maps`, each inside the one before
    /// (ids 0…count−1 mapped to the parent's from uid/gid on), then the
    /// network namespace, owned by the last. We write the first level's
    /// maps; the holder writes the nested ones itself (the kernel takes a
    /// map only from a process in the namespace or its parent), which needs
    /// a single id, its own.
    /// With `tun` (name, MTU), the holder also creates and configures that
    /// TUN device in the network namespace and sends its descriptor
    /// ([`Holder::tun_fd`]) before the route socket.
    fn start_with(
        maps: &[(u32, u32, u32)],
        tun: Option<(&str, u32)>,
    ) -> Result<Self, RootlessError> {
        let tun = tun.map(|(n, m)| (n.to_string(), m));
        let levels = maps.len();
        let nested: Vec<(u32, u32)> = maps.iter().skip(1).map(|&(u, g, _)| (u, g)).collect();
        // Every group of the innermost user namespace (the application's).
        let ping_max = maps.last().map(|&(_, _, count)| count.saturating_sub(1));
        let err = |step| {
            move |e: nix::Error| RootlessError::Holder {
                step,
                source: e.into(),
            }
        };
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(err("socketpair"))?;
        // The closure owns `theirs`: the parent's copy closes when fork
        // returns. The holder dies with us and keeps nothing else of ours.
        let keep = theirs.as_raw_fd();
        let pid = sys::fork_dying_child(keep, move || {
            match holder_main(theirs, levels, &nested, ping_max, tun) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("pallium-netbroker: namespace holder: {e}");
                    1
                }
            }
        })
        .map_err(err("fork"))?;
        let mut holder = Holder {
            pid,
            sock: ours,
            session_userns: None,
        };
        if let Some(&(uid, gid, count)) = maps.first() {
            holder.expect(b'U', "create namespaces")?;
            let map = |name: &str, text: String| {
                let path = PathBuf::from(format!("/proc/{pid}/{name}"));
                fs::write(&path, text).map_err(|source| RootlessError::IdMap { path, source })
            };
            if count == 1 {
                map("setgroups", "deny".into())?;
            }
            map("uid_map", format!("0 {uid} {count}\n"))?;
            map("gid_map", format!("0 {gid} {count}\n"))?;
            if levels > 1 {
                let path = PathBuf::from(format!("/proc/{pid}/ns/user"));
                holder.session_userns = Some(
                    File::open(&path)
                        .map(OwnedFd::from)
                        .map_err(|source| RootlessError::OpenNs { path, source })?,
                );
            }
            holder.send(b'M', None)?;
        }
        // The holder's own steps: nested user namespaces or, without any,
        // the network namespace.
        holder.expect(b'U', "create namespaces")?;
        holder.send(b'M', None)?;
        Ok(holder)
    }

    /// The TUN device the holder made (with `tun` at its start).
    fn tun_fd(&self) -> Result<OwnedFd, RootlessError> {
        match self.recv()? {
            (b'T', Some(fd)) => Ok(fd),
            _ => Err(self.failed("create the TUN device")),
        }
    }

    /// The route socket the holder opened inside the namespace.
    fn rtnl_fd(&self) -> Result<OwnedFd, RootlessError> {
        let (byte, fd) = self.recv()?;
        match (byte, fd) {
            (b'S', Some(fd)) => Ok(fd),
            _ => Err(self.failed("receive route socket")),
        }
    }

    /// The nf_tables socket the holder opened in its network namespace
    /// (sent after the route socket).
    fn nft_socket(&self) -> Result<netlink_sys::Socket, RootlessError> {
        match self.recv()? {
            (b'F', Some(fd)) => Ok(sys::netlink_socket_from(fd)),
            _ => Err(self.failed("receive nf_tables socket")),
        }
    }

    /// Let the holder exit and reap it.
    fn finish(self) {
        let _ = self.send(b'X', None);
        let _ = waitpid(self.pid, None);
    }

    fn expect(&self, want: u8, step: &'static str) -> Result<(), RootlessError> {
        match self.recv() {
            Ok((b, _)) if b == want => Ok(()),
            _ => Err(self.failed(step)),
        }
    }

    fn failed(&self, step: &'static str) -> RootlessError {
        let _ = kill(self.pid, Signal::SIGKILL);
        let status = waitpid(self.pid, None);
        RootlessError::Holder {
            step,
            source: io::Error::other(format!("holder ended: {status:?}")),
        }
    }

    fn send(&self, b: u8, fd: Option<RawFd>) -> Result<(), RootlessError> {
        send_byte(&self.sock, b, fd).map_err(|e| RootlessError::Holder {
            step: "talk to holder",
            source: e.into(),
        })
    }

    fn recv(&self) -> Result<(u8, Option<OwnedFd>), RootlessError> {
        recv_byte(&self.sock).map_err(|e| RootlessError::Holder {
            step: "talk to holder",
            source: e.into(),
        })
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Only reached on error paths before `finish`.
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = waitpid(self.pid, None);
    }
}

/// The holder child: unshare `levels` nested user namespaces, each once its
/// id maps are written, then the network namespace; admit groups
/// 0…`ping_max` of the innermost user namespace to ICMP datagram sockets
/// there; bring `lo` up, hand a route socket back, wait to be released.
fn holder_main(
    sock: OwnedFd,
    levels: usize,
    nested: &[(u32, u32)],
    ping_max: Option<u32>,
    tun: Option<(String, u32)>,
) -> Result<(), String> {
    let handshake = || -> Result<(), String> {
        send_byte(&sock, b'U', None).map_err(|e| e.to_string())?;
        if recv_byte(&sock).map_err(|e| e.to_string())?.0 != b'M' {
            return Err("unexpected message".into());
        }
        Ok(())
    };
    let unshare_ = |flags| unshare(flags).map_err(|e| format!("unshare: {e}"));
    if levels > 0 {
        // The first level's maps are the parent's to write.
        unshare_(CloneFlags::CLONE_NEWUSER)?;
        handshake()?;
    }
    for &(uid, gid) in nested {
        unshare_(CloneFlags::CLONE_NEWUSER)?;
        let write = |file: &str, text: String| {
            fs::write(format!("/proc/self/{file}"), text).map_err(|e| format!("{file}: {e}"))
        };
        write("setgroups", "deny".into())?;
        write("uid_map", format!("0 {uid} 1\n"))?;
        write("gid_map", format!("0 {gid} 1\n"))?;
    }
    unshare_(CloneFlags::CLONE_NEWNET)?;
    // The application's ping (an ICMP datagram socket: Debian's ping needs
    // its file capability otherwise, which no_new_privs ignores) works when
    // its group is in this namespace's range, "1 0" (none) by default. The
    // range is read in our user namespace, the application's: all its
    // groups, whichever the sandbox runs it as (a virtual user's too). Only
    // with a user namespace of the session's: a bare one is the host's ids.
    if let Some(max) = ping_max {
        fs::write("/proc/sys/net/ipv4/ping_group_range", format!("0 {max}"))
            .map_err(|e| format!("write net.ipv4.ping_group_range: {e}"))?;
    }
    handshake()?;
    let mut rtnl = Rtnl::open().map_err(|e| format!("netlink: {e}"))?;
    let lo = rtnl.link_index("lo").map_err(|e| format!("lo: {e}"))?;
    rtnl.set_up(lo).map_err(|e| format!("lo up: {e}"))?;
    if let Some((name, mtu)) = tun {
        let why = |e: crate::tun::TunError| match std::error::Error::source(&e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        };
        let (fd, name) = crate::tun::open_here(&name).map_err(why)?;
        let t = crate::tun::configure(&mut rtnl, fd, name, mtu).map_err(why)?;
        send_byte(&sock, b'T', Some(t.fd.as_raw_fd())).map_err(|e| e.to_string())?;
    }
    let fd = sys::netlink_socket_into_fd(rtnl.into_socket());
    // A nf_tables socket too (`network.routes`' wall): opened while we hold
    // the namespace's capabilities, which the kernel checks against the
    // opener's as well as the sender's.
    let nft = crate::nft::split::socket()
        .map(sys::netlink_socket_into_fd)
        .map_err(|e| format!("nf_tables socket: {e}"))?;
    // The daemon opens /proc/<holder>/ns/*: the kernel lets it only if its
    // permitted capabilities are a superset of ours, so keep none.
    for set in [caps::CapSet::Effective, caps::CapSet::Permitted] {
        caps::clear(None, set).map_err(|e| format!("drop capabilities: {e}"))?;
    }
    send_byte(&sock, b'S', Some(fd.as_raw_fd())).map_err(|e| e.to_string())?;
    drop(fd);
    send_byte(&sock, b'F', Some(nft.as_raw_fd())).map_err(|e| e.to_string())?;
    drop(nft);
    // Wait for 'X' or the parent's end closing.
    let _ = recv_byte(&sock);
    Ok(())
}

fn send_byte(sock: &OwnedFd, b: u8, fd: Option<RawFd>) -> nix::Result<()> {
    let iov = [IoSlice::new(std::slice::from_ref(&b))];
    let fds: Vec<RawFd> = fd.into_iter().collect();
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None).map(drop)
}

fn recv_byte(sock: &OwnedFd) -> nix::Result<(u8, Option<OwnedFd>)> {
    let mut b = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut b)];
    let mut cspace = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cspace),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    if msg.bytes == 0 {
        return Err(nix::Error::EPIPE);
    }
    let mut fd = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for r in raw {
                let owned = sys::owned_from_received(r);
                fd.get_or_insert(owned);
            }
        }
    }
    Ok((b[0], fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_error_names_the_debian_package() {
        let e = RootlessError::Missing {
            tool: "pasta",
            package: "passt",
        };
        assert_eq!(
            e.to_string(),
            "pasta (Debian package \"passt\") is not installed"
        );
    }

    #[test]
    fn tun_error_is_one_actionable_line() {
        let e = RootlessError::Tun {
            uid: 1000,
            mode: 0o600,
        };
        assert_eq!(
            e.to_string(),
            "/dev/net/tun is not accessible to uid 1000 (mode 0600); rootless networking needs it world read-write as Debian ships it: chmod 0666 /dev/net/tun"
        );
    }

    #[test]
    fn find_in_path_finds_sh() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("definitely-not-a-pallium-tool").is_none());
    }
}
