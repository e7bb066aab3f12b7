//! `script`: the user's own program makes the tunnel (as in the
//! original pallium). It runs in N(i−1), so its transport travels through the hops
//! before it, with the hop's other keys as `PALLIUM_SCRIPT_<KEY>` in its
//! environment (`PALLIUM_SCRIPT_INTERFACE` always set); pallium waits for it
//! to exit (status 0, as the original's blocking call did: a VPN client
//! backgrounds itself once connected, `openconnect -b`, `wireguard-go`),
//! then for the `interface` it made, moves that device into Ni, puts its
//! addresses back there (a move drops them) with default routes through it,
//! and gives Ni the nameservers the script wrote to `/etc/resolv.conf`.
//!
//! Confinement: the program runs under a holder, the netbroker binary in
//! its script-init mode ([`SCRIPT_INIT_ARG`]), which gives it a mount
//! namespace of its own (its `/etc/resolv.conf` is the hop's file, so a
//! vpnc-script writing DNS never touches the host's) and a pid namespace
//! whose init the holder's child is: whatever the script leaves running, its
//! daemons included, dies with the holder — on teardown, and when the
//! netbroker is killed (the holder's parent-death signal, then the pid
//! namespace's). Teardown first sends SIGTERM to everything in that
//! namespace (wireguard-go removes its control socket then), then SIGKILL.
//! Privileges: root mode, uid 0 (the original's contract: a VPN client
//! makes TUN devices and routes) with CAP_NET_ADMIN only — every other
//! capability leaves its bounding set, no_new_privs is set, and that
//! capability reaches only N(i−1), a session namespace, or the host's
//! network for hop 1. Rootless, the session's user namespace's root, which
//! holds nothing on the host. The holder (the pid `pallium audit` sees)
//! keeps no capability once the script runs.

#![forbid(unsafe_code)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use proto::broker::ProcEntry;
use proto::profile::{HopKind, Script};

use super::daemon::Daemon;
use super::{HopCx, HopError, HopType, RunningHop};
use crate::netns;
use crate::rtnl::{Prefix, Rtnl};
use crate::sys;

/// The hidden first argument that makes the netbroker binary a script
/// hop's holder: `--script-init RESOLV_CONF CAPS -- ARGV…`.
pub const SCRIPT_INIT_ARG: &str = "--script-init";

/// The holder's second argument: which capabilities the program keeps.
const CAPS_NET_ADMIN: &str = "net_admin";
const CAPS_NET_RAW: &str = "net_admin,net_raw";

/// How long the script may run before it must have exited (its
/// `timeout` key, in seconds, which it also sees as
/// `PALLIUM_SCRIPT_TIMEOUT`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the interface may take to appear once the script exited 0.
const INTERFACE_GRACE: Duration = Duration::from_secs(5);

/// The `PATH` the script gets (the netbroker's own environment is not the
/// caller's).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(super) struct ScriptHop;

impl HopType for ScriptHop {
    fn start(&self, cx: &mut HopCx<'_>) -> Result<Box<dyn RunningHop>, HopError> {
        let HopKind::Script(script) = &cx.hop.kind else {
            return Err(HopError::Unsupported(cx.hop.kind.name()));
        };
        let program = program(&script.path[0])?;
        let timeout = timeout(script)?;
        let ifname = script.interface.to_string();
        let resolv = cx.work_dir.join("resolv.conf");
        write_file(&resolv, "")?;
        let log = cx.work_dir.join("script.log");
        let mut holder = spawn(cx, script, &program, &resolv, &log)?;
        (cx.progress)(format!(
            "running script {} (waiting for {ifname})",
            program.display()
        ));
        let status = holder.wait_status(cx, timeout)?;
        if status != 0 {
            let how = if status < 0 {
                format!("was killed by signal {}", -status)
            } else {
                format!("exited with status {status}")
            };
            return Err(HopError::Failed(format!(
                "script {} {how}: {}",
                program.display(),
                holder.daemon.tail()
            )));
        }
        let (index, addrs) = find_interface(cx, &ifname, &program).map_err(|e| match e {
            // What the script and its daemons said last (a VPN client that died after it
            // backgrounded itself takes its device with it).
            HopError::Failed(m) => HopError::Failed(format!("{m}: {}", holder.daemon.tail())),
            e => e,
        })?;
        let inner = cx.inner.get()?;
        let moved = netns::run_in(cx.outer, || -> std::io::Result<()> {
            Rtnl::open()?.move_link(index, inner.fd.as_fd())
        })
        .and_then(|r| r);
        moved.map_err(|e| {
            HopError::Failed(format!(
                "move {ifname} into the hop's namespace: {e}; the script must make a device pallium can move (a TUN, a WireGuard link), not the namespace's uplink"
            ))
        })?;
        configure(&mut inner.rtnl, &ifname, &addrs).map_err(|e| {
            HopError::Failed(format!("configure {ifname} in the hop's namespace: {e}"))
        })?;
        let resolv_conf = std::fs::read_to_string(&resolv).unwrap_or_default();
        let what = format!(
            "script {} → {ifname} ({})",
            program.display(),
            addrs
                .iter()
                .map(|p| format!("{}/{}", p.addr, p.len))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(Box::new(RunningScript {
            holder,
            resolv_conf,
            what,
        }))
    }
}

/// The script's program: a path must be an executable file; a bare name is
/// looked up in `$PATH` and the system directories.
fn program(arg0: &str) -> Result<PathBuf, HopError> {
    let path = if arg0.contains('/') {
        PathBuf::from(arg0)
    } else {
        crate::rootless::find_in_path(arg0).ok_or_else(|| {
            HopError::Failed(format!(
                "script {arg0} not found in PATH; give the hop's \"path\" as an absolute path"
            ))
        })?
    };
    let meta = std::fs::metadata(&path).map_err(|e| {
        HopError::Failed(format!(
            "script {}: {e}; fix the hop's \"path\"",
            path.display()
        ))
    })?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(HopError::Failed(format!(
            "script {} is not an executable file; chmod +x it or fix the hop's \"path\"",
            path.display()
        )));
    }
    Ok(path)
}

fn timeout(script: &Script) -> Result<Duration, HopError> {
    match script.env.get("PALLIUM_SCRIPT_TIMEOUT") {
        None => Ok(DEFAULT_TIMEOUT),
        Some(t) => t
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .ok_or_else(|| {
                HopError::Failed(format!(
                    "script hop \"timeout\" {t:?} is not a positive number of seconds"
                ))
            }),
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), HopError> {
    let fail = |e: std::io::Error| HopError::Failed(format!("write {}: {e}", path.display()));
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)
}

/// The holder, and our end of its status channel.
#[derive(Debug)]
pub(super) struct Holder {
    pub(super) daemon: Daemon,
    status: UnixStream,
}

impl Holder {
    /// The script's exit status (negative: killed by that signal), once it
    /// exits within `timeout`.
    pub(super) fn wait_status(
        &mut self,
        cx: &HopCx<'_>,
        timeout: Duration,
    ) -> Result<i32, HopError> {
        let deadline = Instant::now() + timeout;
        let _ = self
            .status
            .set_read_timeout(Some(Duration::from_millis(100)));
        let mut buf = [0u8; 4];
        loop {
            cx.check_cancelled()?;
            match self.status.read(&mut buf) {
                Ok(4) => return Ok(i32::from_ne_bytes(buf)),
                Ok(_) => {
                    return Err(HopError::Failed(format!(
                        "the holder of {} exited before it did: {}",
                        self.what(),
                        self.daemon.tail()
                    )))
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(HopError::Failed(format!("read the script's status: {e}"))),
            }
            if Instant::now() >= deadline {
                return Err(HopError::Failed(format!(
                    "{} did not exit within {} s (a VPN client must background itself once connected; set the hop's \"timeout\" for a slower one): {}",
                    self.what(),
                    timeout.as_secs(),
                    self.daemon.tail()
                )));
            }
        }
    }

    fn what(&self) -> &str {
        if self.daemon.role == "hop:ppp" {
            "pppd"
        } else {
            "the script"
        }
    }

    /// SIGTERM to every process of the script's pid namespace, a moment
    /// for them to clean up (wireguard-go unlinks its control socket), then
    /// the holder goes, and with it, by SIGKILL, whatever is left.
    pub(super) fn stop(&mut self) {
        if self.daemon.exited().is_none() {
            let ns = pidns_of_child(self.daemon.child.id());
            if let Some(ns) = ns {
                for pid in members(&ns) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
                let deadline = Instant::now() + Duration::from_secs(2);
                while Instant::now() < deadline && members(&ns).len() > 1 {
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
        self.daemon.stop();
    }
}

/// The pid namespace of the holder's child (the script's init).
fn pidns_of_child(holder: u32) -> Option<PathBuf> {
    let children =
        std::fs::read_to_string(format!("/proc/{holder}/task/{holder}/children")).ok()?;
    let init: i32 = children.split_whitespace().next()?.parse().ok()?;
    std::fs::read_link(format!("/proc/{init}/ns/pid")).ok()
}

/// The processes (outer pids) in pid namespace `ns`, its init included.
fn members(ns: &Path) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/pid"))
                .ok()
                .as_deref()
                == Some(ns)
        })
        .collect()
}

/// Start a holder in `netns` (negative: ours) running `argv` (the program
/// first) with `env` (and `PATH`), its `/etc/resolv.conf` the file `resolv`,
/// its output appended to `log`; `role` names it for `pallium audit`. The
/// program may hold CAP_NET_ADMIN, and CAP_NET_RAW too with `net_raw`
/// (pppd's PPPoE discovery needs a packet socket).
#[allow(clippy::too_many_arguments)]
pub(super) fn spawn_holder(
    netns: RawFd,
    net_raw: bool,
    argv: &[&OsStr],
    env: &BTreeMap<String, String>,
    resolv: &Path,
    work_dir: &Path,
    log: &Path,
    role: &str,
) -> Result<Holder, HopError> {
    let fail = |what: &str, e: std::io::Error| HopError::Failed(format!("{what}: {e}"));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .map_err(|e| fail(&format!("create {}", log.display()), e))?;
    let err = file
        .try_clone()
        .map_err(|e| fail("duplicate the log descriptor", e))?;
    let (ours, theirs) = UnixStream::pair().map_err(|e| fail("status channel", e))?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(SCRIPT_INIT_ARG)
        .arg(resolv)
        .arg(if net_raw {
            CAPS_NET_RAW
        } else {
            CAPS_NET_ADMIN
        })
        .arg("--")
        .args(argv)
        .env_clear()
        .env("PATH", PATH)
        .envs(env)
        .current_dir(work_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err));
    if let Ok(level) = std::env::var("PALLIUM_LOG") {
        cmd.env("PALLIUM_LOG", level);
    }
    sys::place_script_init(&mut cmd, netns, theirs.as_raw_fd());
    let child = cmd
        .spawn()
        .map_err(|e| fail("start the hop's holder (the netbroker binary)", e))?;
    drop(theirs);
    Ok(Holder {
        daemon: Daemon {
            child,
            log: log.to_path_buf(),
            role: role.into(),
            grace: Duration::from_secs(1),
        },
        status: ours,
    })
}

/// Start the script's holder in N(i−1) with its argv and environment.
fn spawn(
    cx: &HopCx<'_>,
    script: &Script,
    program: &Path,
    resolv: &Path,
    log: &Path,
) -> Result<Holder, HopError> {
    let mut env = script.env.clone();
    env.entry("PALLIUM_SCRIPT_INTERFACE".into())
        .or_insert_with(|| script.interface.to_string());
    let mut argv: Vec<&OsStr> = vec![program.as_os_str()];
    argv.extend(script.path[1..].iter().map(OsStr::new));
    let netns = if netns::is_current(cx.outer) {
        -1
    } else {
        cx.outer.as_raw_fd()
    };
    spawn_holder(
        netns,
        false,
        &argv,
        &env,
        resolv,
        cx.work_dir,
        log,
        "hop:script",
    )
}

/// The interface in N(i−1), once it exists, and its addresses.
fn find_interface(
    cx: &HopCx<'_>,
    ifname: &str,
    program: &Path,
) -> Result<(u32, Vec<Prefix>), HopError> {
    let deadline = Instant::now() + INTERFACE_GRACE;
    loop {
        cx.check_cancelled()?;
        let found = netns::run_in(cx.outer, || -> std::io::Result<(u32, Vec<Prefix>)> {
            let mut rtnl = Rtnl::open()?;
            let index = rtnl.link_index(ifname)?;
            Ok((index, rtnl.link_addresses(index)?))
        })
        .and_then(|r| r);
        match found {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(19) => {}
            Err(e) => return Err(HopError::Failed(format!("look for {ifname}: {e}"))),
        }
        if Instant::now() >= deadline {
            return Err(HopError::Failed(format!(
                "script {} exited 0 but interface {ifname} never appeared (waited {} s); the script must create it, or set the hop's \"interface\" to the device it makes",
                program.display(),
                INTERFACE_GRACE.as_secs()
            )));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// In Ni: the device up, its addresses back, default routes through it
/// (IPv6 only when it has a global IPv6 address).
fn configure(rtnl: &mut Rtnl, ifname: &str, addrs: &[Prefix]) -> std::io::Result<()> {
    let index = rtnl.link_index(ifname)?;
    rtnl.set_up(index)?;
    let mut v6 = false;
    for p in addrs {
        if let IpAddr::V6(a) = p.addr {
            if a.segments()[0] & 0xffc0 == 0xfe80 {
                continue; // the kernel adds a link-local address itself
            }
            v6 = true;
        }
        match rtnl.add_address(index, p.addr, p.len) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            r => r?,
        }
    }
    rtnl.add_default_dev_route(false, index)?;
    if v6 {
        rtnl.add_default_dev_route(true, index)?;
    }
    Ok(())
}

/// A script hop that is up.
#[derive(Debug)]
struct RunningScript {
    holder: Holder,
    resolv_conf: String,
    what: String,
}

impl Drop for RunningScript {
    fn drop(&mut self) {
        self.holder.stop();
    }
}

impl RunningHop for RunningScript {
    fn resolv_conf(&self) -> String {
        self.resolv_conf.clone()
    }
    fn resolvers(&self) -> Vec<SocketAddr> {
        super::nameservers(&self.resolv_conf)
    }
    fn describe(&self) -> String {
        format!(
            "{} (holder pid {})",
            self.what,
            self.holder.daemon.child.id()
        )
    }
    fn pids(&self) -> Vec<ProcEntry> {
        vec![self.holder.daemon.proc_entry()]
    }
    fn exited(&mut self) -> Option<String> {
        let status = self.holder.daemon.exited()?;
        Some(format!(
            "the script's processes are gone (holder {status}): {}",
            self.holder.daemon.tail()
        ))
    }
}

/// The holder's side (`--script-init RESOLV_CONF CAPS -- ARGV…`), in a fresh
/// process the netbroker placed in N(i−1) with the status channel on fd 3:
/// a mount namespace whose `/etc/resolv.conf` is RESOLV_CONF, a pid
/// namespace whose init is our child, a private tmpfs on `/run/wireguard`,
/// every capability but CAP_NET_ADMIN (and CAP_NET_RAW when CAPS says so)
/// out of the bounding set, no_new_privs; the child runs the script as its
/// own child, reports its exit status and reaps until the end.
pub fn init_main() -> i32 {
    match init() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pallium script holder: {e}");
            125
        }
    }
}

fn init() -> Result<i32, String> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    let args: Vec<String> = std::env::args().skip(2).collect();
    let (resolv, net_raw, argv) = match args.as_slice() {
        [r, caps, dd, rest @ ..]
            if dd == "--" && !rest.is_empty() && (caps == CAPS_NET_ADMIN || caps == CAPS_NET_RAW) =>
        {
            (r.clone(), caps == CAPS_NET_RAW, rest.to_vec())
        }
        _ => {
            return Err(format!(
                "usage: {SCRIPT_INIT_ARG} RESOLV_CONF {CAPS_NET_ADMIN}|{CAPS_NET_RAW} -- PROGRAM [ARGS…]"
            ))
        }
    };
    let status = sys::take_script_status_fd().map_err(|e| format!("status channel: {e}"))?;
    let argv: Vec<CString> = argv
        .into_iter()
        .map(CString::new)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("argument: {e}"))?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("mount namespace: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make mounts private: {e}"))?;
    mount(
        Some(resolv.as_str()),
        "/etc/resolv.conf",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind the hop's resolv.conf on /etc/resolv.conf: {e}"))?;
    private_wireguard_run()?;
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("pid namespace: {e}"))?;
    narrow_caps(net_raw)?;
    // The child is init of a new pid namespace, where getppid() answers 0
    // whoever its parent is: it learns that we are gone from this pipe
    // instead (our write end closes when we exit; it never writes).
    let (alive_r, alive_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (alive_r, alive_w) = (Cell::new(Some(alive_r)), Cell::new(Some(alive_w)));
    let init = sys::fork_child(|| {
        // The child's copies: its write end goes, the read end is its own.
        drop(alive_w.take());
        match alive_r.take() {
            Some(r) => reaper(status, &argv, r),
            None => 1,
        }
    })
    .map_err(|e| format!("fork the script's init: {e}"))?;
    drop(alive_r.take());
    // Open until we return: its end-of-file is the child's news of us.
    let _alive_w = alive_w.take();
    // Ours were only for the setup; the status channel is the child's.
    for set in [caps::CapSet::Effective, caps::CapSet::Permitted] {
        let _ = caps::clear(None, set);
    }
    loop {
        match waitpid(init, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("wait for the script's init: {e}")),
        }
    }
}

/// Userspace WireGuard (wireguard-go, boringtun) puts its control socket in
/// `/run/wireguard`, shared by every namespace: a fresh tmpfs there, in the
/// script's mount namespace, keeps its sockets its own (no clash of names
/// with the host's or another session's, `wg` in the script still finds
/// them), lets the session's user namespace root make them rootless, and
/// takes them away with the namespace however the script ends, SIGKILL
/// included. Made where missing when we may (root); rootless without it the
/// script sees the host's directory, which it cannot write.
fn private_wireguard_run() -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    let dir = Path::new("/run/wireguard");
    if !dir.is_dir() {
        match std::fs::create_dir(dir) {
            Ok(()) => {
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(_) => return Ok(()),
        }
    }
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=1m"),
    )
    .map_err(|e| format!("a private /run/wireguard for the script: {e}"))
}

/// Only CAP_NET_ADMIN (and CAP_NET_RAW with `net_raw`) may reach the
/// program (its bounding set; uid 0's exec then gives it those), none
/// ambient, and nothing gained on exec.
fn narrow_caps(net_raw: bool) -> Result<(), String> {
    use caps::Capability::{CAP_NET_ADMIN, CAP_NET_RAW};
    for cap in caps::all() {
        if cap != CAP_NET_ADMIN && !(net_raw && cap == CAP_NET_RAW) {
            caps::drop(None, caps::CapSet::Bounding, cap)
                .map_err(|e| format!("drop {cap} from the bounding set: {e}"))?;
        }
    }
    caps::clear(None, caps::CapSet::Ambient).map_err(|e| format!("clear ambient: {e}"))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))
}

/// PID 1 of the script's pid namespace: run the script, report its status
/// on `status`, then reap whatever it left until the holder dies.
fn reaper(status: OwnedFd, argv: &[CString], holder_alive: OwnedFd) -> i32 {
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL)) {
        eprintln!("pallium script holder: parent-death signal: {e}");
        return 1;
    }
    // The holder may have died before the prctl took effect: then its end
    // of the pipe is closed and ours reads end-of-file at once.
    let mut fds = [nix::poll::PollFd::new(
        holder_alive.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    if nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) != Ok(0) {
        return 1;
    }
    drop(holder_alive);
    let script = match sys::fork_child(|| {
        let _ = nix::unistd::execvp(&argv[0], argv);
        let _ = writeln!(
            std::io::stderr(),
            "cannot run {}: {}",
            argv[0].to_string_lossy(),
            std::io::Error::last_os_error()
        );
        127
    }) {
        Ok(pid) => pid,
        Err(_) => return 1,
    };
    for set in [caps::CapSet::Effective, caps::CapSet::Permitted] {
        let _ = caps::clear(None, set);
    }
    let mut status = Some(std::fs::File::from(status));
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == script => {
                if let Some(mut s) = status.take() {
                    let _ = s.write_all(&code.to_ne_bytes());
                }
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == script => {
                if let Some(mut s) = status.take() {
                    let _ = s.write_all(&(-(sig as i32)).to_ne_bytes());
                }
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => thread::sleep(Duration::from_millis(500)),
        }
    }
}
