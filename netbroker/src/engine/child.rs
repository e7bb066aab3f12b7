//! The engine process itself (`pallium-netbroker --packet-engine`): started
//! by [`super::EngineProcess::spawn`] already in its dial namespace, as its
//! user, with an empty bounding set. Here, before reading one packet: check
//! that no capability is left and clear every set, set no_new_privs and the
//! resource limits, resolve the proxy (a host name needs the system
//! resolver, which reads files the filter does not allow), install the
//! seccomp filter, set the engine up; then answer Ready and serve. A
//! control thread answers Stats and stops the engine on EOF (the netbroker
//! is gone).

#![forbid(unsafe_code)]

use proto::engine::{EngineEvent, EngineRequest, StartDirect, StartEngine};
use proto::Channel;

use crate::tun::Tun;
use crate::tun2socks::{proxy::Proxy, Control, DirectConfig, Serving};

/// Why the engine process ended with an error (logged by `main`).
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("packet engine: adopt the control socket")]
    Channel(#[source] std::io::Error),
    #[error("packet engine: control channel")]
    Wire(#[from] proto::WireError),
    #[error("packet engine: the netbroker sent {0} before Start")]
    Protocol(&'static str),
    #[error("packet engine: {0}")]
    Setup(String),
}

type Chan = Channel<EngineEvent, EngineRequest>;

/// The whole engine process.
pub fn run() -> Result<(), ChildError> {
    let sock = crate::sys::take_channel_fd().map_err(ChildError::Channel)?;
    let mut chan = Chan::new(sock);
    chan.handshake("engine", "netbroker")?;
    let start = match chan.recv() {
        Ok(EngineRequest::Start(s)) => Start::Proxy(s),
        Ok(EngineRequest::StartDirect(s)) => Start::Direct(s),
        // Not an engine at all: the session's port forwarder.
        Ok(EngineRequest::StartForward(s)) => {
            return crate::forward::serve(chan, *s).map_err(ChildError::Setup)
        }
        Ok(EngineRequest::StartWireguard(s)) => Start::Wireguard(s),
        Ok(EngineRequest::Stats) => return Err(ChildError::Protocol("Stats")),
        Ok(EngineRequest::Peers) => return Err(ChildError::Protocol("Peers")),
        // The netbroker went away before it told us anything.
        Err(proto::WireError::Closed) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    // A second handle on the same socket for the engine thread's last word;
    // the control thread owns `chan`.
    let last_word = chan
        .fd()
        .try_clone_to_owned()
        .map(Chan::new)
        .map_err(ChildError::Channel)?;
    // Opened while files may still be opened (the filter forbids it), read
    // once the engine serves (off the path to Ready).
    let smaps = std::fs::File::open("/proc/self/smaps").ok();
    let set_up = match start {
        Start::Proxy(s) => setup(*s),
        Start::Direct(s) => setup_direct(*s),
        Start::Wireguard(s) => {
            return super::wireguard::serve(chan, last_word, *s).map_err(ChildError::Setup)
        }
    };
    let serving = match set_up {
        Ok(s) => s,
        Err(why) => {
            let _ = chan.send(EngineEvent::Failed(why.clone()));
            return Err(ChildError::Setup(why));
        }
    };
    chan.send(EngineEvent::Ready)?;
    let control = serving.control();
    std::thread::Builder::new()
        .name("engine-control".into())
        .spawn(move || answer(chan, control))
        .map_err(ChildError::Channel)?;
    // The code of exec, setup and the resolver stays shared with the
    // netbroker in the page cache but leaves our resident set: what the
    // loop runs comes back on its first use.
    for (start, end) in smaps.map(clean_file_mappings).unwrap_or_default() {
        let _ = crate::sys::forget_file_pages(start, end);
    }
    let reason = serving.run();
    if reason != "stopped" {
        let _ = last_word.send(EngineEvent::Exited(reason.clone()));
        return Err(ChildError::Setup(reason));
    }
    Ok(())
}

/// What the netbroker asked for.
enum Start {
    Proxy(Box<StartEngine>),
    Direct(Box<StartDirect>),
    Wireguard(Box<proto::engine::StartWireguard>),
}

/// Confine the process and set the engine up; the error is one line for the
/// user.
fn setup(start: StartEngine) -> Result<Serving, String> {
    // `ps` and `audit` show "pallium-engine", not "exe".
    let _ = nix::sys::prctl::set_name(c"pallium-engine");
    drop_everything()?;
    limits(start.max_files, start.max_tasks)?;
    let cfg = super::config_from(&start);
    let tun = Tun {
        fd: start.tun.into_inner(),
        name: start.tun_name,
        index: start.tun_index,
        mtu: start.mtu,
    };
    // Before the filter: resolving a host name reads /etc and may use
    // whatever the system resolver wants.
    let proxy = Proxy::resolve(&cfg).map_err(|e| e.to_string())?;
    // A unix-socket proxy is reached through the netbroker, which dials
    // for us: the filter allows no unix socket.
    let proxy = match (&cfg.proxy.unix, start.dial) {
        (Some(_), Some(chan)) => {
            let client = super::dial::Client::new(chan.into_inner())
                .map_err(|e| format!("set up the dial channel: {e}"))?;
            proxy.with_dial_channel(std::sync::Arc::new(client))
        }
        (None, None) => proxy,
        (Some(_), None) => {
            return Err("the netbroker sent a unix-socket proxy without its dial channel".into())
        }
        (None, Some(_)) => {
            return Err("the netbroker sent a dial channel for a proxy that needs none".into())
        }
    };
    super::filter::install().map_err(|e| format!("install the seccomp filter: {e}"))?;
    Serving::new(tun, proxy, &cfg).map_err(|e| e.to_string())
}

/// [`setup`] in direct mode: nothing to resolve, so the filter goes on
/// right after the limits.
fn setup_direct(start: StartDirect) -> Result<Serving, String> {
    let _ = nix::sys::prctl::set_name(c"pallium-engine");
    drop_everything()?;
    limits(start.max_files, start.max_tasks)?;
    let cfg = DirectConfig {
        refused: start.refused,
        resolvers: start.resolvers,
        connect_timeout: std::time::Duration::from_millis(start.connect_timeout_ms),
    };
    let tun = Tun {
        fd: start.tun.into_inner(),
        name: start.tun_name,
        index: start.tun_index,
        mtu: start.mtu,
    };
    super::filter::install().map_err(|e| format!("install the seccomp filter: {e}"))?;
    Serving::direct(tun, &cfg).map_err(|e| e.to_string())
}

/// Clear every capability set (the bounding set was emptied before exec, so
/// the others are normally empty already), set no_new_privs, and check:
/// an empty bounding set, or none that could be emptied (see below).
pub(crate) fn drop_everything() -> Result<(), String> {
    use caps::CapSet;
    let fail = |what: &str, e: caps::errors::CapsError| format!("drop capabilities ({what}): {e}");
    caps::clear(None, CapSet::Ambient).map_err(|e| fail("ambient", e))?;
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::clear(None, set).map_err(|e| fail("clear", e))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("set no_new_privs: {e}"))?;
    let bounding = caps::read(None, CapSet::Bounding).map_err(|e| fail("bounding", e))?;
    if let Some(c) = bounding.iter().next() {
        // A rootless hop 1's engine runs as the caller in the caller's own
        // user namespace, where emptying the bounding set takes a
        // capability it never had (CAP_SETPCAP): like any program of the
        // user's it keeps a full bounding set, which with no capability,
        // a uid other than 0 and no_new_privs (no set-uid or file
        // capability takes effect on exec) grants nothing.
        let no_caps = [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable]
            .into_iter()
            .all(|set| caps::read(None, set).is_ok_and(|c| c.is_empty()));
        let unprivileged = !nix::unistd::geteuid().is_root() && !nix::unistd::getuid().is_root();
        if !(no_caps && unprivileged) {
            return Err(format!("{c} is still in the bounding set"));
        }
    }
    Ok(())
}

pub(crate) fn limits(max_files: u64, max_tasks: Option<u64>) -> Result<(), String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    // Lower only: without capabilities the hard limit cannot rise, and a
    // lower one the host set stays.
    let cap = |r: Resource, name: &str, max: u64| -> Result<(), String> {
        let (_, hard) = getrlimit(r).map_err(|e| format!("read {name}: {e}"))?;
        let n = max.min(hard);
        setrlimit(r, n, n).map_err(|e| format!("set {name}: {e}"))
    };
    cap(Resource::RLIMIT_NOFILE, "RLIMIT_NOFILE", max_files)?;
    if let Some(n) = max_tasks {
        cap(Resource::RLIMIT_NPROC, "RLIMIT_NPROC", n)?;
    }
    Ok(())
}

/// The control thread: Stats until EOF, then stop the engine.
fn answer(mut chan: Chan, control: Control) {
    // Start is legal once; anything else, or EOF, ends us.
    while let Ok(EngineRequest::Stats) = chan.recv() {
        let s = super::stats_to(control.stats());
        if chan.send(EngineEvent::Stats(s)).is_err() {
            break;
        }
    }
    control.stop();
}

/// The read-only private file mappings of this process whose resident pages
/// are all file pages (`Anonymous: 0 kB` in `/proc/self/smaps`): the
/// binary's and libraries' code and constants, not relocated data.
fn clean_file_mappings(mut file: std::fs::File) -> Vec<(usize, usize)> {
    use std::io::Read;
    // Plain reads: read_to_string would also stat and seek, which the
    // filter does not allow.
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Vec::new(),
        }
    }
    let smaps = String::from_utf8_lossy(&bytes);
    let mut found = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Anonymous:") {
            let anon = kb.trim().trim_end_matches("kB").trim();
            if let (Some(range), "0") = (current.take(), anon) {
                found.push(range);
            }
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue; // a field line such as "Rss:"
        };
        let path = fields.nth(3).unwrap_or("");
        let read_only = perms.len() == 4 && !perms.contains('w') && perms.ends_with('p');
        current = (read_only && path.starts_with('/')).then_some((start, end));
    }
    found
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_binarys_code_is_a_clean_file_mapping() {
        let here = super::clean_file_mappings as *const () as usize;
        let smaps = std::fs::File::open("/proc/self/smaps").unwrap();
        let found = super::clean_file_mappings(smaps);
        assert!(
            found.iter().any(|(s, e)| (*s..*e).contains(&here)),
            "{found:x?}"
        );
    }
}
