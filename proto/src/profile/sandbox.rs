//! `sandbox` (doc/PROFILE.md, sandbox): virtual user, the file view (`paths`),
//! gVisor, GUI, audio, user-namespace and syscall restrictions, working
//! directory, host name and the application's environment.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::check;
use super::environment::{environment, Environment};
use super::locate::JsonPath;
use super::read::{array, string, strings, truthy, Cx, Obj, Res};

/// The `sandbox` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub virtuser: Option<Virtuser>,
    /// `paths`; None when the key is absent (which, with no virtuser, means
    /// "the whole host file system in a new mount namespace").
    pub paths: Option<Paths>,
    /// Run the command under gVisor's `runsc`.
    pub gvisor: bool,
    pub gui: Gui,
    /// A PulseAudio relay to the caller's server: `true` or
    /// `{"microphone": BOOL}`.
    pub audio: bool,
    /// `audio.microphone` (new in pallium-rs): the relay lets the
    /// application record (the microphone, and a sink's monitor: what other
    /// applications play). Off by default.
    pub microphone: bool,
    /// false: deny creating user namespaces inside the sandbox (default true).
    pub unpriv_user_ns: bool,
    /// Working directory; None = virtuser home or the caller's cwd; `""` = the
    /// caller's cwd.
    #[serde(deserialize_with = "check::de::opt_workdir")]
    pub workdir: Option<String>,
    /// Host name in the sandbox's UTS namespace (default "pallium").
    #[serde(deserialize_with = "check::de::hostname")]
    pub hostname: String,
    /// Extra syscalls to deny (new in pallium-rs).
    pub seccomp: Vec<String>,
    /// `unsafe_host_root` (root mode only, new in pallium-rs): run the
    /// application as the host's real uid 0 (without capabilities), as the
    /// original did, instead of uid 0 of a user namespace of its own that is
    /// an unprivileged uid on the host. It owns the host's files again.
    pub unsafe_host_root: bool,
    /// What the application gets of the caller's environment (new in
    /// pallium-rs; see `environment.rs`).
    pub environment: Environment,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            virtuser: None,
            paths: None,
            gvisor: false,
            gui: Gui::Off,
            audio: false,
            microphone: false,
            unpriv_user_ns: true,
            workdir: None,
            hostname: "pallium".into(),
            seccomp: Vec::new(),
            unsafe_host_root: false,
            environment: Environment::default(),
        }
    }
}

/// `sandbox.virtuser`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Virtuser {
    pub name: VirtuserName,
    /// Directory copied into a new home; None = `"skeleton": false`. The
    /// sandboxer reads it with the caller's file-system ids.
    #[serde(deserialize_with = "check::de::opt_abs_path")]
    pub skeleton: Option<String>,
}

/// A virtual user's name. Validated when decoded from the wire too (a
/// compromised supervisor could send `"../.."`, which would name a host
/// directory for the sandboxer to create and chown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireVirtuserName")]
pub enum VirtuserName {
    /// `$tmp`: a throwaway user with a tmpfs home (named `tmp` inside).
    Temporary,
    /// Matches `^[a-z_][a-z0-9_-]{0,31}$`.
    Named(String),
}

/// [`VirtuserName`] as it is decoded, before [`VirtuserName::parse`]'s rules.
#[derive(Deserialize)]
enum WireVirtuserName {
    Temporary,
    Named(String),
}

impl TryFrom<WireVirtuserName> for VirtuserName {
    type Error = String;

    fn try_from(w: WireVirtuserName) -> Result<Self, String> {
        match w {
            WireVirtuserName::Temporary => Ok(VirtuserName::Temporary),
            WireVirtuserName::Named(n) if n != "$tmp" => VirtuserName::parse(&n),
            WireVirtuserName::Named(n) => Err(format!("invalid virtual user name {n:?}")),
        }
    }
}

/// The file system types `sandbox.paths.fsmount` may mount: fresh, private
/// ones. Anything else (debugfs, efivarfs, tracefs, configfs, bpf, a block
/// device's file system…) would hand the application a kernel or host
/// interface; the sandboxer refuses them too, whatever the supervisor sends.
pub const FSMOUNT_TYPES: &[&str] = &["tmpfs", "ramfs", "proc", "sysfs", "mqueue", "devpts"];

/// Root mode: where persistent virtual users' homes live
/// (`<dir>/NAME/home`).
pub const ROOT_VIRTUSER_DIR: &str = "/etc/pallium/virtuser";
/// Root mode: the first uid of the range virtual users are given. Far above
/// the ranges distributions hand out to users, system accounts and
/// `/etc/subuid` (100000 + 65536·n), so no host account owns anything there.
pub const ROOT_MODE_UID_BASE: u32 = 0x5000_0000;
/// The size of that range.
pub const ROOT_MODE_UID_SPAN: u32 = 0x0100_0000;

/// Root mode: the uid (and gid) given to `key` (a virtual user's name,
/// `$tmp`, or another identity of pallium's own): a hash of it into the
/// range, stepping past any uid the host's `passwd` names.
pub fn root_mode_uid(key: &str, passwd: &str) -> u32 {
    let hash = fnv1a(key);
    let taken: Vec<u32> = passwd
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    let mut uid = ROOT_MODE_UID_BASE + hash % ROOT_MODE_UID_SPAN;
    while taken.contains(&uid) {
        uid = ROOT_MODE_UID_BASE + (uid - ROOT_MODE_UID_BASE + 1) % ROOT_MODE_UID_SPAN;
    }
    uid
}

/// The one hash of ids and names ([`crate::ids`]).
pub use crate::ids::fnv1a;

/// Root mode: the first of the session's block of unprivileged host uids.
pub const SESSION_UID_BASE: u32 = 0x6000_0000;
/// The size of a session's block: uids 0…65535 of the application's user
/// namespace (its root, and system users such as tcpdump's or a daemon's).
pub const SESSION_UID_BLOCK: u32 = 0x1_0000;
/// How many blocks the range holds.
pub(crate) const SESSION_UID_BLOCKS: u32 = 0x1000;

/// Root mode: the unprivileged host uid (and gid) that is uid 0 of session
/// `session_id`'s application — in the user namespace that owns its network
/// namespace, which maps 0…[`SESSION_UID_BLOCK`]−1 to a block of its own
/// from here on — never the host's root. A hash of the session id into
/// [`SESSION_UID_BASE`] + [`SESSION_UID_BLOCKS`] blocks, past any block that
/// holds a uid the host's `passwd` names.
pub fn session_uid(session_id: &str, passwd: &str) -> u32 {
    let hash = fnv1a(&format!("$session {session_id}"));
    let taken: Vec<u32> = passwd
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    let mut block = hash % SESSION_UID_BLOCKS;
    for _ in 0..SESSION_UID_BLOCKS {
        let base = SESSION_UID_BASE + block * SESSION_UID_BLOCK;
        if !taken
            .iter()
            .any(|u| (base..base + SESSION_UID_BLOCK).contains(u))
        {
            return base;
        }
        block = (block + 1) % SESSION_UID_BLOCKS;
    }
    SESSION_UID_BASE + (hash % SESSION_UID_BLOCKS) * SESSION_UID_BLOCK
}

/// Root mode: the first uid of the range that pallium's own unprivileged
/// processes run as (the supervisor once the helpers are up, the packet
/// engines): past every application block, so no application's user
/// namespace maps one of them.
pub const SERVICE_UID_BASE: u32 = SESSION_UID_BASE + SESSION_UID_BLOCKS * SESSION_UID_BLOCK;
/// How many slots (one uid per [`Service`]) the service range holds.
const SERVICE_UID_SLOTS: u32 = 1 << 20;

/// pallium's own processes that run as an unprivileged uid of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The supervisor, once the helpers are up.
    Supervisor,
    /// The packet engines (tun2socks and later in-process protocol engines).
    Engine,
}

/// Root mode: the unprivileged host uid (and gid) that `service` of session
/// `session_id` runs as. Each session and service has its own, none is
/// mapped into an application's user namespace, and none is a uid the
/// host's `passwd` names. (Two services of one session never share a uid: a
/// compromised engine cannot signal or trace the supervisor.)
pub fn service_uid(session_id: &str, service: Service, passwd: &str) -> u32 {
    let taken: Vec<u32> = passwd
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    let per_slot = 2;
    let offset = match service {
        Service::Supervisor => 0,
        Service::Engine => 1,
    };
    let mut slot = fnv1a(&format!("$service {session_id}")) % SERVICE_UID_SLOTS;
    for _ in 0..SERVICE_UID_SLOTS {
        let base = SERVICE_UID_BASE + slot * per_slot;
        if !taken.iter().any(|u| (base..base + per_slot).contains(u)) {
            return base + offset;
        }
        slot = (slot + 1) % SERVICE_UID_SLOTS;
    }
    SERVICE_UID_BASE + slot * per_slot + offset
}

impl VirtuserName {
    /// Root mode: the uid a new virtual user of this name is given
    /// ([`root_mode_uid`]); a persistent home keeps the uid it was given
    /// first (its owner).
    pub fn root_mode_uid(&self, passwd: &str) -> u32 {
        let key = match self {
            VirtuserName::Temporary => "$tmp",
            VirtuserName::Named(n) => n.as_str(),
        };
        root_mode_uid(key, passwd)
    }

    /// The user name inside the sandbox.
    pub fn as_str(&self) -> &str {
        match self {
            VirtuserName::Temporary => "tmp",
            VirtuserName::Named(n) => n,
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        if s == "$tmp" {
            return Ok(VirtuserName::Temporary);
        }
        let b = s.as_bytes();
        let ok = (1..=32).contains(&b.len())
            && (b[0].is_ascii_lowercase() || b[0] == b'_')
            && b[1..]
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'));
        if ok {
            Ok(VirtuserName::Named(s.to_string()))
        } else {
            Err(format!("invalid virtual user name {s:?} (lower-case letters, digits, '_' and '-', starting with a letter or '_', at most 32 characters; or \"$tmp\")"))
        }
    }
}

/// Skeleton of a virtuser given by name only.
pub const DEFAULT_SKELETON: &str = "/etc/skel";

/// `sandbox.gui`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gui {
    Off,
    /// `true` or `"xpra"`: a nested Xpra X server.
    Xpra,
    /// `"expose"`: the host's X display socket.
    Expose,
}

/// `sandbox.paths`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paths {
    pub mode: PathsMode,
    pub bind: Vec<BindMount>,
    /// Host paths (globs) bound at the same place.
    #[serde(deserialize_with = "check::de::abs_paths")]
    pub whitelist: Vec<String>,
    /// Paths (globs) hidden in the sandbox.
    #[serde(deserialize_with = "check::de::abs_paths")]
    pub blacklist: Vec<String>,
    pub fsmount: Vec<FsMount>,
}

/// `sandbox.paths.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathsMode {
    /// Add to the default virtuser file view.
    #[default]
    Append,
    /// Start from an empty root.
    Base,
}

/// `[dst, src]` of `sandbox.paths.bind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Path inside the sandbox.
    #[serde(deserialize_with = "check::de::abs_path")]
    pub dst: String,
    /// Path on the host (relative to the caller's working directory when
    /// not absolute, as in the original).
    pub src: String,
}

/// `[dst, fstype]` of `sandbox.paths.fsmount`; `fstype` is one of
/// [`FSMOUNT_TYPES`], checked when decoded from the wire too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireFsMount")]
pub struct FsMount {
    pub dst: String,
    pub fstype: String,
}

/// [`FsMount`] as it is decoded, before its type is checked.
#[derive(Deserialize)]
struct WireFsMount {
    dst: String,
    fstype: String,
}

impl TryFrom<WireFsMount> for FsMount {
    type Error = String;

    fn try_from(w: WireFsMount) -> Result<Self, String> {
        check::abs_path(&w.dst)?;
        if !FSMOUNT_TYPES.contains(&w.fstype.as_str()) {
            return Err(format!("file system type {:?} is not allowed", w.fstype));
        }
        Ok(FsMount {
            dst: w.dst,
            fstype: w.fstype,
        })
    }
}

pub(crate) fn sandbox(cx: &mut Cx<'_>, o: &mut Obj<'_>) -> Res<Sandbox> {
    let mut s = Sandbox::default();
    if let Some(v) = o.get("virtuser") {
        s.virtuser = Some(virtuser(cx, v, o.at("virtuser"))?);
    }
    if o.has("files") {
        o.consume("files");
        cx.warn("sandbox.files is ignored (did you mean sandbox.paths?)");
    }
    if let Some(v) = o.get("paths") {
        s.paths = Some(paths(cx, v, o.at("paths"))?);
    }
    s.gvisor = o.get("gvisor").is_some_and(truthy);
    s.gui = match o.get("gui") {
        None | Some(Value::Bool(false)) => Gui::Off,
        Some(Value::Bool(true)) => Gui::Xpra,
        Some(Value::String(m)) if m == "xpra" => Gui::Xpra,
        Some(Value::String(m)) if m == "expose" => Gui::Expose,
        Some(v) => {
            return Err(cx.err(
                &o.at("gui"),
                format!(
                "invalid GUI forwarding method {v} (expected true, \"xpra\", \"expose\" or false)"
            ),
            ))
        }
    };
    let audio_at = o.at("audio");
    match o.get("audio") {
        Some(v @ Value::Object(_)) => {
            let mut a = Obj::new(cx, v, audio_at)?;
            s.audio = true;
            s.microphone = a.bool(cx, "microphone", false)?;
            a.finish(cx);
        }
        _ => s.audio = o.bool(cx, "audio", false)?,
    }
    s.unpriv_user_ns = o.bool(cx, "unpriv_user_ns", true)?;
    if s.gvisor && !s.unpriv_user_ns {
        return Err(cx.err(
            &o.at("unpriv_user_ns"),
            "unpriv_user_ns: false is not supported with sandbox.gvisor (gVisor's kernel serves the application's system calls; remove one of the two keys)",
        ));
    }
    s.unsafe_host_root = o.bool(cx, "unsafe_host_root", false)?;
    s.workdir = o.str(cx, "workdir")?;
    if let Some(w) = s.workdir.as_deref().filter(|w| !w.is_empty()) {
        check::abs_path(w).map_err(|e| cx.err(&o.at("workdir"), e))?;
    }
    if let Some(h) = o.str(cx, "hostname")? {
        check::hostname(&h).map_err(|e| cx.err(&o.at("hostname"), e))?;
        s.hostname = h;
    }
    if let Some(v) = o.get("environment") {
        s.environment = environment(cx, v, o.at("environment"))?;
    }
    if let Some(v) = o.get("seccomp") {
        let p = o.at("seccomp");
        s.seccomp = strings(cx, v, &p)?;
        for (i, name) in s.seccomp.iter().enumerate() {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(cx.err(
                    &p.index(i),
                    format!("{name:?} is not a system call name (e.g. \"ptrace\")"),
                ));
            }
        }
        if s.gvisor && !s.seccomp.is_empty() {
            return Err(cx.err(
                &p,
                "seccomp additions are not supported with sandbox.gvisor (gVisor's kernel serves the application's system calls; remove one of the two keys)",
            ));
        }
    }
    Ok(s)
}

fn virtuser(cx: &mut Cx<'_>, v: &Value, path: JsonPath) -> Res<Virtuser> {
    let (name, skeleton, name_path) = match v {
        Value::String(n) => (n.clone(), Some(DEFAULT_SKELETON.to_string()), path),
        Value::Object(_) => {
            let mut o = Obj::new(cx, v, path)?;
            let name = o.need_str(cx, "name", "virtuser", "e.g. \"browser\" or \"$tmp\"")?;
            let skeleton = match o.get("skeleton") {
                None => Some(DEFAULT_SKELETON.to_string()),
                Some(Value::Bool(false)) => None,
                Some(v @ Value::String(_)) => {
                    let skel = string(cx, v, &o.at("skeleton"))?;
                    check::abs_path(&skel).map_err(|e| cx.err(&o.at("skeleton"), e))?;
                    Some(skel)
                }
                Some(v) => {
                    return Err(cx.wrong_type(&o.at("skeleton"), "a directory path or false", v))
                }
            };
            let name_path = o.at("name");
            o.finish(cx);
            (name, skeleton, name_path)
        }
        other => {
            return Err(cx.wrong_type(
                &path,
                "a user name or {\"name\": …, \"skeleton\": …}",
                other,
            ))
        }
    };
    let name = VirtuserName::parse(&name).map_err(|e| cx.err(&name_path, e))?;
    Ok(Virtuser { name, skeleton })
}

fn paths(cx: &mut Cx<'_>, v: &Value, path: JsonPath) -> Res<Paths> {
    let mut o = Obj::new(cx, v, path)?;
    let mut p = Paths::default();
    if let Some(v) = o.get("mode") {
        p.mode = match v {
            Value::String(m) if m == "append" => PathsMode::Append,
            Value::String(m) if m == "base" => PathsMode::Base,
            v => {
                return Err(cx.err(
                    &o.at("mode"),
                    format!("invalid mode {v} (expected \"append\" or \"base\")"),
                ))
            }
        };
    }
    if let Some(v) = o.get("bind") {
        p.bind = pairs(
            cx,
            v,
            &o.at("bind"),
            "[destination in sandbox, source on host]",
        )?
        .into_iter()
        .map(|(dst, src)| BindMount { dst, src })
        .collect();
    }
    for (key, list) in [
        ("whitelist", &mut p.whitelist),
        ("blacklist", &mut p.blacklist),
    ] {
        if let Some(v) = o.get(key) {
            let kp = o.at(key);
            *list = strings(cx, v, &kp)?;
            for (i, s) in list.iter().enumerate() {
                sandbox_path(cx, s, &kp.index(i))?;
            }
        }
    }
    if let Some(v) = o.get("fsmount") {
        let fp = o.at("fsmount");
        p.fsmount = pairs(cx, v, &fp, "[destination, file system type]")?
            .into_iter()
            .map(|(dst, fstype)| FsMount { dst, fstype })
            .collect();
        for (i, m) in p.fsmount.iter().enumerate() {
            if !FSMOUNT_TYPES.contains(&m.fstype.as_str()) {
                return Err(cx.err(
                    &fp.index(i),
                    format!(
                        "file system type {:?} is not allowed (one of {}): others would hand the application a kernel or host interface",
                        m.fstype,
                        FSMOUNT_TYPES.join(", ")
                    ),
                ));
            }
        }
    }
    o.finish(cx);
    Ok(p)
}

/// A list of two-string arrays; the first element is a sandbox path.
fn pairs(cx: &Cx<'_>, v: &Value, path: &JsonPath, shape: &str) -> Res<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, e) in array(cx, v, path)?.iter().enumerate() {
        let ep = path.index(i);
        let items = match e {
            Value::Array(a) if a.len() == 2 => a,
            _ => return Err(cx.err(&ep, format!("expected a pair {shape}, found {e}"))),
        };
        let first = string(cx, &items[0], &ep.index(0))?;
        let second = string(cx, &items[1], &ep.index(1))?;
        sandbox_path(cx, &first, &ep.index(0))?;
        if second.is_empty() {
            return Err(cx.err(&ep.index(1), "must not be empty"));
        }
        out.push((first, second));
    }
    Ok(out)
}

/// Sandbox paths are absolute and normalized ([`check::abs_path`]).
fn sandbox_path(cx: &Cx<'_>, s: &str, path: &JsonPath) -> Res<()> {
    check::abs_path(s).map_err(|e| cx.err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::parse;

    #[test]
    fn root_mode_uids_are_unprivileged_stable_and_free() {
        let john = VirtuserName::Named("johndoe".into());
        let a = john.root_mode_uid("");
        assert!((ROOT_MODE_UID_BASE..ROOT_MODE_UID_BASE + ROOT_MODE_UID_SPAN).contains(&a));
        assert_eq!(a, john.root_mode_uid("root:x:0:0::/root:/bin/sh\n"));
        assert_eq!(a, root_mode_uid("johndoe", ""));
        assert_ne!(a, VirtuserName::Temporary.root_mode_uid(""));
        // A uid the host already names is skipped.
        let taken = format!("x:x:{a}:{a}::/:/bin/sh\n");
        assert_eq!(john.root_mode_uid(&taken), a + 1);
    }

    #[test]
    fn fsmount_types_are_an_allow_list() {
        let e = err(r#"{"sandbox": {"paths": {"fsmount": [["/d", "debugfs"]]}}}"#);
        assert!(
            e.contains("sandbox.paths.fsmount[0]") && e.contains("debugfs"),
            "{e}"
        );
        assert_eq!(
            ok(r#"{"sandbox": {"paths": {"fsmount": [["/d", "mqueue"]]}}}"#)
                .paths
                .unwrap()
                .fsmount[0]
                .fstype,
            "mqueue"
        );
    }

    #[test]
    fn decoding_rechecks_names_and_file_system_types() {
        use crate::wire::{decode, encode};
        let round = |v: &VirtuserName| {
            let (buf, _) = encode(v).unwrap();
            decode::<VirtuserName>(&buf, vec![])
        };
        assert!(round(&VirtuserName::Named("../..".into())).is_err());
        assert!(round(&VirtuserName::Named("$tmp".into())).is_err());
        let good = VirtuserName::Named("john".into());
        assert_eq!(round(&good).unwrap(), good);
        let (buf, _) = encode(&FsMount {
            dst: "/d".into(),
            fstype: "debugfs".into(),
        })
        .unwrap();
        assert!(decode::<FsMount>(&buf, vec![]).is_err());
    }

    #[test]
    fn service_uids_are_apart_from_applications_and_each_other() {
        let s = service_uid("p-0", Service::Supervisor, "");
        let e = service_uid("p-0", Service::Engine, "");
        assert_ne!(s, e);
        assert!(s >= SERVICE_UID_BASE && e >= SERVICE_UID_BASE);
        assert_eq!(s, service_uid("p-0", Service::Supervisor, ""), "stable");
        assert_ne!(s, service_uid("p-1", Service::Supervisor, ""));
        // Past the last application block.
        let app = session_uid("p-0", "");
        assert!(app + SESSION_UID_BLOCK <= SERVICE_UID_BASE);
        let taken = format!("x:x:{e}:0::/:/bin/sh\n");
        let s2 = service_uid("p-0", Service::Supervisor, &taken);
        let e2 = service_uid("p-0", Service::Engine, &taken);
        assert!(s2 != s && e2 != e && s2 != e);
    }

    #[test]
    fn session_uids_are_blocks_apart_from_virtual_users_and_passwd() {
        let a = session_uid("p-0", "");
        assert_eq!((a - SESSION_UID_BASE) % SESSION_UID_BLOCK, 0);
        assert!(a > ROOT_MODE_UID_BASE + ROOT_MODE_UID_SPAN);
        assert_eq!(a, session_uid("p-0", ""), "stable");
        assert_ne!(a, session_uid("p-1", ""));
        let taken = format!("x:x:{}:0::/:/bin/sh\n", a + 17);
        let b = session_uid("p-0", &taken);
        assert_ne!(a, b);
        assert_eq!((b - SESSION_UID_BASE) % SESSION_UID_BLOCK, 0);
    }

    fn ok(text: &str) -> Sandbox {
        parse("p.json", text).unwrap().profile.sandbox
    }

    fn err(text: &str) -> String {
        parse("p.json", text).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let s = ok("{}");
        assert_eq!(s, Sandbox::default());
        assert_eq!(s.hostname, "pallium");
        assert!(s.unpriv_user_ns && s.paths.is_none() && s.virtuser.is_none());
    }

    #[test]
    fn virtuser_forms() {
        let v = ok(r#"{"sandbox": {"virtuser": "browser"}}"#)
            .virtuser
            .unwrap();
        assert_eq!(v.name, VirtuserName::Named("browser".into()));
        assert_eq!(v.skeleton.as_deref(), Some(DEFAULT_SKELETON));
        let v = ok(r#"{"sandbox": {"virtuser": {"name": "$tmp", "skeleton": false}}}"#)
            .virtuser
            .unwrap();
        assert_eq!(v.name, VirtuserName::Temporary);
        assert_eq!(v.name.as_str(), "tmp");
        assert_eq!(v.skeleton, None);
        let v = ok(r#"{"sandbox": {"virtuser": {"name": "_a-1", "skeleton": "/srv/skel"}}}"#)
            .virtuser
            .unwrap();
        assert_eq!(v.skeleton.as_deref(), Some("/srv/skel"));
    }

    #[test]
    fn virtuser_name_validation() {
        for good in ["a", "_x", "zoom", "a-b_c9", &"a".repeat(32)] {
            assert!(VirtuserName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Zoom",
            "9a",
            "-a",
            "a b",
            "a.b",
            "tmp$",
            &"a".repeat(33),
        ] {
            assert!(VirtuserName::parse(bad).is_err(), "{bad}");
        }
        let e = err(r#"{"sandbox": {"virtuser": {"name": "Bad"}}}"#);
        assert!(
            e.contains("sandbox.virtuser.name: invalid virtual user name \"Bad\""),
            "{e}"
        );
        assert!(e.ends_with("(line 1, column 35)"), "{e}");
        let e = err(r#"{"sandbox": {"virtuser": {"name": "a", "skeleton": true}}}"#);
        assert!(
            e.contains(
                "sandbox.virtuser.skeleton: expected a directory path or false, found a boolean"
            ),
            "{e}"
        );
    }

    #[test]
    fn gvisor_refuses_user_namespace_and_seccomp_restrictions() {
        let e = err(r#"{"sandbox": {"gvisor": true, "unpriv_user_ns": false}}"#);
        assert!(
            e.contains("sandbox.unpriv_user_ns") && e.contains("gvisor"),
            "{e}"
        );
        let e = err(r#"{"sandbox": {"gvisor": true, "seccomp": ["uname"]}}"#);
        assert!(e.contains("sandbox.seccomp") && e.contains("gvisor"), "{e}");
        assert!(!ok(r#"{"sandbox": {"gvisor": false, "unpriv_user_ns": false}}"#).gvisor);
    }

    #[test]
    fn gui_and_gvisor_values() {
        assert_eq!(ok(r#"{"sandbox": {"gui": true}}"#).gui, Gui::Xpra);
        assert_eq!(ok(r#"{"sandbox": {"gui": "xpra"}}"#).gui, Gui::Xpra);
        assert_eq!(ok(r#"{"sandbox": {"gui": "expose"}}"#).gui, Gui::Expose);
        assert_eq!(ok(r#"{"sandbox": {"gui": false}}"#).gui, Gui::Off);
        let e = err(r#"{"sandbox": {"gui": "vnc"}}"#);
        assert!(
            e.contains("sandbox.gui: invalid GUI forwarding method \"vnc\""),
            "{e}"
        );
        assert!(ok(r#"{"sandbox": {"gvisor": {"x": 1}}}"#).gvisor);
        assert!(ok(r#"{"sandbox": {"gvisor": 1}}"#).gvisor);
        assert!(!ok(r#"{"sandbox": {"gvisor": ""}}"#).gvisor);
        assert!(!ok(r#"{"sandbox": {"gvisor": 0}}"#).gvisor);
    }

    #[test]
    fn paths_all_instructions() {
        let p = ok(r#"{"sandbox": {"paths": {"mode": "base", "bind": [["/mnt", "/home/you/x"]], "whitelist": ["/opt/zoom", "/dev/video*"], "blacklist": ["/home"], "fsmount": [["/tmp", "tmpfs"]]}}}"#)
            .paths
            .unwrap();
        assert_eq!(p.mode, PathsMode::Base);
        assert_eq!(
            p.bind,
            vec![BindMount {
                dst: "/mnt".into(),
                src: "/home/you/x".into()
            }]
        );
        assert_eq!(p.whitelist.len(), 2);
        assert_eq!(p.fsmount[0].fstype, "tmpfs");
    }

    #[test]
    fn paths_errors() {
        let e = err(r#"{"sandbox": {"paths": {"mode": "merge"}}}"#);
        assert!(
            e.contains("sandbox.paths.mode: invalid mode \"merge\""),
            "{e}"
        );
        let e = err(r#"{"sandbox": {"paths": {"bind": [["/mnt"]]}}}"#);
        assert!(
            e.contains(
                "sandbox.paths.bind[0]: expected a pair [destination in sandbox, source on host]"
            ),
            "{e}"
        );
        let e = err(r#"{"sandbox": {"paths": {"whitelist": ["opt"]}}}"#);
        assert!(
            e.contains("sandbox.paths.whitelist[0]: \"opt\" is not an absolute path"),
            "{e}"
        );
        let e = err(r#"{"sandbox": {"paths": {"bind": [["/a/../etc", "/x"]]}}}"#);
        assert!(e.contains("sandbox.paths.bind[0][0]:"), "{e}");
        let e = err(r#"{"sandbox": {"paths": []}}"#);
        assert!(
            e.contains("sandbox.paths: expected an object, found an array"),
            "{e}"
        );
    }

    #[test]
    fn seccomp_and_scalars() {
        let s = ok(
            r#"{"sandbox": {"seccomp": ["ptrace", "bpf"], "audio": true, "unpriv_user_ns": false, "workdir": "/tmp", "hostname": "box"}}"#,
        );
        assert_eq!(s.seccomp, ["ptrace", "bpf"]);
        assert!(s.audio && !s.unpriv_user_ns);
        assert_eq!(s.workdir.as_deref(), Some("/tmp"));
        assert_eq!(s.hostname, "box");
        let e = err(r#"{"sandbox": {"seccomp": ["PTRACE"]}}"#);
        assert!(e.contains("sandbox.seccomp[0]:"), "{e}");
        let a = ok(r#"{"sandbox": {"audio": {"microphone": true}}}"#);
        assert!(a.audio && a.microphone);
        assert!(!ok(r#"{"sandbox": {"audio": true}}"#).microphone);
        let e = err(r#"{"sandbox": {"audio": "yes"}}"#);
        assert!(
            e.contains("sandbox.audio: expected true or false, found a string"),
            "{e}"
        );
    }

    #[test]
    fn files_key_warns() {
        let p = parse("p.json", r#"{"sandbox": {"files": {}}}"#).unwrap();
        assert_eq!(
            p.warnings,
            ["profile p.json: sandbox.files is ignored (did you mean sandbox.paths?)"]
        );
    }
}
