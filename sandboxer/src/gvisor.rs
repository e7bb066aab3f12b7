//! `sandbox.gvisor` (doc/PROFILE.md): every spawned command runs under
//! gVisor's `runsc`, whose root is the prepared file view and whose network
//! is the session's namespace (`--network=host` inside it). The first spawn
//! creates a container (`runsc run`); while it runs, later spawns join it
//! (`runsc exec`), as `pallium exec` into a running session should.
//!
//! runsc runs as the application would, unprivileged (`--rootless`: it
//! makes its own user namespace); its state and bundles live in a tmpfs at
//! [`STATE_DIR`] that the container sees masked. Inside gVisor the command
//! is gVisor's uid 0 without capabilities and with `noNewPrivileges`, which
//! is the application's unprivileged uid on the host.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use proto::sandbox::Spawn;
use serde_json::{json, Value};

use crate::plan::{MountOp, NEW_ROOT};

/// runsc's state directory and bundles, a tmpfs at the top of the view.
pub const STATE_DIR: &str = "/.pallium-gvisor";

/// runsc's global flags: rootless (its own user namespace), the session's
/// network namespace as the container's, no cgroups (an unprivileged user
/// has none to configure), the view shared with the host (`pallium cp`,
/// binds) and written through, connecting to the view's Unix sockets only.
const FLAGS: &[&str] = &[
    "--rootless",
    "--network=host",
    "--ignore-cgroups",
    "--file-access=shared",
    "--overlay2=none",
    "--host-uds=open",
];

/// A failed gVisor step.
#[derive(Debug, thiserror::Error)]
pub enum GvisorError {
    #[error("sandbox.gvisor: no runsc was given to the sandboxer")]
    NoRunsc,
    #[error("open runsc at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("write the gVisor bundle {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The session's gVisor state.
#[derive(Debug)]
pub struct Gvisor {
    /// `runsc`, opened before the view was built: it need not be in the view.
    pub runsc: OwnedFd,
    /// Root mode: the uid/gid runsc runs as (the virtual user's, or one of
    /// its own); rootless: None, runsc is the caller mapped back.
    pub run_as: Option<(u32, u32)>,
    hostname: String,
    /// The running container: (spawn id of its `runsc run`, container id).
    running: Option<(u32, String)>,
    /// Containers and exec'd processes started so far (unique file names).
    count: u32,
    /// Exec'd processes: spawn id → the file runsc writes their pid inside
    /// the container to (for `runsc kill --pid`).
    execs: HashMap<u32, PathBuf>,
    /// When the running container's `runsc run` was issued.
    run_issued: Option<Instant>,
}

impl Gvisor {
    /// Open `runsc` (before the view replaces the host's root).
    pub fn open(
        runsc: Option<&str>,
        run_as: Option<(u32, u32)>,
        hostname: &str,
    ) -> Result<Gvisor, GvisorError> {
        let path = runsc.ok_or(GvisorError::NoRunsc)?;
        let fd = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(
            |source| GvisorError::Open {
                path: path.into(),
                source,
            },
        )?;
        Ok(Gvisor {
            runsc: fd,
            run_as,
            hostname: hostname.into(),
            running: None,
            run_issued: None,
            count: 0,
            execs: HashMap::new(),
        })
    }

    /// The plan steps for [`STATE_DIR`], inserted before the view is entered.
    pub fn state_ops(&self) -> Vec<MountOp> {
        let dir = Path::new(NEW_ROOT).join(STATE_DIR.trim_start_matches('/'));
        let mut ops = vec![
            MountOp::MakeDir { path: dir.clone() },
            MountOp::Tmpfs {
                target: dir.clone(),
            },
            MountOp::MakeDir {
                path: dir.join("state"),
            },
        ];
        if let Some((uid, gid)) = self.run_as {
            ops.push(MountOp::ChownTree {
                path: dir,
                uid,
                gid,
            });
        }
        ops
    }

    /// Write what runsc needs for `req` (run in the sandbox's root) and
    /// return runsc's argv: `run` for a new container, `exec` into the
    /// running one.
    pub fn command(&mut self, req: &Spawn) -> Result<Vec<String>, GvisorError> {
        self.count += 1;
        let n = self.count;
        let process = process(req);
        let mut argv = base_argv();
        if let Some((_, cid)) = &self.running {
            wait_created(cid, self.run_issued);
            let file = PathBuf::from(format!("{STATE_DIR}/process-{n}.json"));
            write_json(&file, &process)?;
            let pid_file = PathBuf::from(format!("{STATE_DIR}/state/pid-{n}"));
            argv.extend([
                "exec".into(),
                "--process".into(),
                file.display().to_string(),
                "--internal-pid-file".into(),
                pid_file.display().to_string(),
                cid.clone(),
            ]);
            self.execs.insert(req.id, pid_file);
            return Ok(argv);
        }
        let bundle = PathBuf::from(format!("{STATE_DIR}/bundle-{n}"));
        mkdir(&bundle)?;
        let tmp = Path::new("/tmp").is_dir();
        write_json(
            &bundle.join("config.json"),
            &config(process, &self.hostname, tmp),
        )?;
        let cid = format!("pallium-{n}");
        argv.extend([
            "run".into(),
            "--bundle".into(),
            bundle.display().to_string(),
            cid.clone(),
        ]);
        self.running = Some((req.id, cid));
        self.run_issued = Some(Instant::now());
        Ok(argv)
    }

    /// runsc's argv that delivers `signal` to the command of spawn `id`
    /// inside the container (runsc itself does not forward signals it gets):
    /// the container's first process, or an exec'd one by its pid in there.
    pub fn kill_command(&self, id: u32, signal: i32) -> Option<Vec<String>> {
        let (run, cid) = self.running.as_ref()?;
        let mut argv = base_argv();
        argv.push("kill".into());
        if *run != id {
            let file = self.execs.get(&id)?;
            let pid = fs::read_to_string(file).ok()?;
            argv.push(format!("--pid={}", pid.trim().parse::<u32>().ok()?));
        }
        argv.extend([cid.clone(), signal.to_string()]);
        Some(argv)
    }

    /// For the container's first command: runsc's argv listing the
    /// container's processes (`runsc ps`, a table with PID and PPID), so a
    /// signal can reach the command's whole process tree — as the terminal's
    /// ^C reaches a shell's foreground job, which `runsc kill` of the first
    /// process alone would not.
    pub fn ps_command(&self, id: u32) -> Option<Vec<String>> {
        let (run, cid) = self.running.as_ref()?;
        if *run != id {
            return None;
        }
        let mut argv = base_argv();
        argv.extend(["ps".into(), cid.clone()]);
        Some(argv)
    }

    /// `runsc kill --pid=P` of `signal` for the first command (pid 1 in the
    /// container) and each of its descendants in `ps_table` (`runsc ps`'s
    /// output); none when the table has no pid 1.
    pub fn tree_kill_commands(&self, ps_table: &str, signal: i32) -> Vec<Vec<String>> {
        let Some((_, cid)) = self.running.as_ref() else {
            return Vec::new();
        };
        process_tree(ps_table, 1)
            .into_iter()
            .map(|pid| {
                let mut argv = base_argv();
                argv.extend([
                    "kill".into(),
                    format!("--pid={pid}"),
                    cid.clone(),
                    signal.to_string(),
                ]);
                argv
            })
            .collect()
    }

    /// A spawned process ended: when it was the container's `runsc run`, the
    /// container is gone and the next spawn starts a new one.
    pub fn exited(&mut self, id: u32) {
        if let Some(file) = self.execs.remove(&id) {
            let _ = fs::remove_file(file);
        }
        if self.running.as_ref().is_some_and(|(run, _)| *run == id) {
            self.running = None;
        }
    }

    /// A spawn failed before it ran.
    pub fn failed(&mut self, id: u32) {
        self.exited(id);
    }
}

/// How long after its `runsc run` an exec waits for a container to exist.
const CREATE_WAIT: Duration = Duration::from_secs(10);

/// An exec right after the session started may come before `runsc run` has
/// created the container, and `runsc exec` would fail ("loading sandbox: file
/// does not exist"): wait until runsc's state file says it is created or
/// running, but never past [`CREATE_WAIT`] after the `runsc run` was issued
/// (so another runsc's state format costs no delay once a session is up).
fn wait_created(cid: &str, run_issued: Option<Instant>) {
    let Some(deadline) = run_issued.map(|t| t + CREATE_WAIT) else {
        return;
    };
    let state = PathBuf::from(format!("{STATE_DIR}/state/{cid}_sandbox:{cid}.state"));
    while Instant::now() < deadline {
        let up = fs::read_to_string(&state).is_ok_and(|s| {
            s.contains(r#""status":"created""#) || s.contains(r#""status":"running""#)
        });
        if up {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `root` and its descendants, from `runsc ps`'s table (columns UID, PID,
/// PPID, …); empty when `root` is not in it. The root first: a shell that
/// traps the signal must get it before its children's deaths end its wait.
fn process_tree(ps_table: &str, root: u32) -> Vec<u32> {
    let rows: Vec<(u32, u32)> = ps_table
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().skip(1);
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect();
    if !rows.iter().any(|(pid, _)| *pid == root) {
        return Vec::new();
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            rows.iter()
                .filter(|(pid, ppid)| *ppid == parent && !tree.contains(pid))
                .map(|(pid, _)| *pid)
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    tree
}

/// `runsc`, its global flags and its state directory.
fn base_argv() -> Vec<String> {
    let mut argv: Vec<String> = std::iter::once("runsc")
        .chain(FLAGS.iter().copied())
        .map(String::from)
        .collect();
    argv.push(format!("--root={STATE_DIR}/state"));
    argv
}

/// The OCI `process` of `req`: inside gVisor, uid 0 without capabilities.
fn process(req: &Spawn) -> Value {
    let cwd = req
        .cwd
        .as_deref()
        .filter(|c| c.starts_with('/') && Path::new(c).is_dir())
        .unwrap_or("/");
    let env: Vec<String> = req.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let none: [&str; 0] = [];
    json!({
        "terminal": req.tty,
        "user": {"uid": 0, "gid": 0},
        "args": req.argv,
        "env": env,
        "cwd": cwd,
        "capabilities": {
            "bounding": none, "effective": none, "inheritable": none,
            "permitted": none, "ambient": none
        },
        "noNewPrivileges": true,
    })
}

/// The bundle's `config.json`: the view's `/` as the container's root, a
/// fresh `/proc`, [`STATE_DIR`] masked, gVisor's own PID, IPC, UTS and mount
/// namespaces and no network namespace (`--network=host`). `tmp`: the view
/// has a `/tmp`, bound explicitly — gVisor would otherwise put a tmpfs of its
/// own over an empty one, out of reach of `pallium cp` and the view.
fn config(process: Value, hostname: &str, tmp: bool) -> Value {
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": STATE_DIR, "type": "tmpfs", "source": "tmpfs"}),
    ];
    if tmp {
        mounts.push(json!({
            "destination": "/tmp", "type": "bind", "source": "/tmp", "options": ["rbind", "rw"]
        }));
    }
    json!({
        "ociVersion": "1.0.0",
        "process": process,
        "root": {"path": "/", "readonly": false},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {"namespaces": [
            {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}
        ]},
    })
}

fn mkdir(path: &Path) -> Result<(), GvisorError> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(GvisorError::Write {
            path: path.into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn write_json(path: &Path, v: &Value) -> Result<(), GvisorError> {
    fs::write(path, v.to_string()).map_err(|source| GvisorError::Write {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn(argv: &[&str], tty: bool) -> Spawn {
        let fd = || proto::wire::Fd(nix::unistd::dup(std::io::stdin()).unwrap());
        Spawn {
            id: 1,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("PATH".into(), "/bin".into())],
            cwd: Some("/no/such/dir".into()),
            stdio: [fd(), fd(), fd()],
            tty,
            root: false,
            netns: None,
        }
    }

    #[test]
    fn process_is_root_in_gvisor_without_capabilities() {
        let p = process(&spawn(&["sh", "-c", "true"], true));
        assert_eq!(p["user"]["uid"], 0);
        assert_eq!(p["terminal"], true);
        assert_eq!(p["noNewPrivileges"], true);
        assert_eq!(p["capabilities"]["bounding"], json!([]));
        assert_eq!(p["env"], json!(["PATH=/bin"]));
        // A working directory missing from the view falls back to /.
        assert_eq!(p["cwd"], "/");
    }

    #[test]
    fn the_process_tree_of_the_first_command_is_read_from_runsc_ps() {
        let table = "UID       PID       PPID      C         TTY       STIME     TIME      CMD\n\
                     0         1         0         0         ?         11:11     0s        bash\n\
                     0         2         1         0         ?         11:11     10ms      sleep\n\
                     0         5         2         0         ?         11:11     0s        sh\n\
                     0         7         0         0         ?         11:12     0s        sh\n\
                     0         8         7         0         ?         11:12     0s        cat\n";
        // pid 7 and its child came from `runsc exec`: not the first command's.
        assert_eq!(process_tree(table, 1), vec![1, 2, 5]);
        assert_eq!(process_tree("UID PID PPID\n", 1), Vec::<u32>::new());
        assert_eq!(process_tree("", 1), Vec::<u32>::new());
    }

    #[test]
    fn config_masks_the_state_and_uses_the_host_network() {
        let c = config(json!({}), "box", true);
        assert_eq!(c["root"]["path"], "/");
        assert_eq!(c["hostname"], "box");
        assert!(c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == STATE_DIR));
        assert!(c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "/tmp" && m["type"] == "bind"));
        assert!(!c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network"));
    }
}
