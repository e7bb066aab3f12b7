//! The unprivileged user rootless tests run as (`pallium-test`), and a place from which that user
//! can execute the binaries under test (a checkout under `/root` is out of its reach).

use std::ffi::{OsStr, OsString};
use std::fs::{File, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{chown, User};

use crate::cmd;
use crate::names::STAGE_DIR;

/// Serialises creating the user across parallel test processes.
const USER_LOCK: &str = "/run/ptestbed-user.lock";
/// `PATH` of the user's commands; sbin too, since pallium may run `ip`, `nft` and the like.
const USER_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// The unprivileged account `pallium-test`, created on first use.
#[derive(Debug)]
pub struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    runtime_dir: PathBuf,
}

impl TestUser {
    /// The account's name.
    pub const NAME: &'static str = "pallium-test";

    /// The test user, created if missing (`useradd -m`, which on Debian also gives it subuid and
    /// subgid ranges) with a `0700` `XDG_RUNTIME_DIR` at `/run/user/<uid>`. Idempotent and safe
    /// from parallel tests and processes. Needs root.
    pub fn get() -> &'static TestUser {
        static USER: OnceLock<TestUser> = OnceLock::new();
        USER.get_or_init(create)
    }

    /// The account's name, [`TestUser::NAME`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its uid.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Its primary gid.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// Its home directory (`/home/pallium-test`).
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Its `XDG_RUNTIME_DIR` (`/run/user/<uid>`, owned by it, mode 0700).
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// Copies the executables at `paths` into one directory the user can execute from
    /// (`/opt/pallium-test-bin/<pid>/`, shared by the test process's tests, so helpers found
    /// beside `/proc/self/exe` are there too) and returns that directory. Copies are replaced
    /// atomically, so re-staging while another test runs a staged binary is safe.
    pub fn stage_binaries<P: AsRef<Path>>(&self, paths: &[P]) -> PathBuf {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let root = Path::new(STAGE_DIR);
        let dir = root.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        for d in [root, &dir] {
            std::fs::set_permissions(d, Permissions::from_mode(0o755)).expect("chmod stage dir");
        }
        for src in paths {
            let src = src.as_ref();
            let name = src
                .file_name()
                .unwrap_or_else(|| panic!("no file name: {}", src.display()));
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let tmp = dir.join(format!(".{}.{n}.tmp", name.to_string_lossy()));
            crate::copy_executable(src, &tmp, 0o755);
            std::fs::rename(&tmp, dir.join(name)).expect("rename staged binary");
        }
        dir
    }

    /// `argv` run as this user (from root): `setpriv --reuid --regid --init-groups --reset-env`
    /// with `HOME`, `PATH`, `USER`, `LOGNAME` and `XDG_RUNTIME_DIR` set and nothing else
    /// inherited. Use [`crate::Testbed::host_exec_as`] to run it in a testbed's host namespace.
    pub fn command<S: AsRef<OsStr>>(&self, argv: impl IntoIterator<Item = S>) -> Command {
        let prefix = self.argv_prefix();
        let mut cmd = Command::new(&prefix[0]);
        cmd.args(&prefix[1..]).args(argv);
        cmd
    }

    /// The argv that [`TestUser::command`] puts before the user's command; it ends with
    /// `/usr/bin/env VAR=…`, so more `VAR=value` words may follow.
    pub fn argv_prefix(&self) -> Vec<OsString> {
        let (uid, gid) = (self.uid.to_string(), self.gid.to_string());
        let mut argv: Vec<OsString> = [
            "setpriv",
            "--reuid",
            &uid,
            "--regid",
            &gid,
            "--init-groups",
            "--reset-env",
            "/usr/bin/env",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        for (k, v) in [
            ("HOME", self.home.as_os_str()),
            ("PATH", OsStr::new(USER_PATH)),
            ("USER", OsStr::new(&self.name)),
            ("LOGNAME", OsStr::new(&self.name)),
            ("XDG_RUNTIME_DIR", self.runtime_dir.as_os_str()),
        ] {
            let mut kv = OsString::from(format!("{k}="));
            kv.push(v);
            argv.push(kv);
        }
        argv
    }
}

/// The system account `pallium-proxy` (no home, password [`PROXY_PASSWORD`]) that dante
/// authenticates SOCKS users against and sshd lets in, created on first use. Idempotent and safe
/// from parallel tests and processes. Needs root.
pub(crate) fn proxy_account() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let _lock = user_lock();
        if User::from_name(PROXY_USER).ok().flatten().is_none() {
            cmd::run(Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/bin/sh",
                PROXY_USER,
            ]));
        }
        // Every time (once per process): a password set by an older checkout would lock us
        // out, and rewriting the same one is harmless to parallel users.
        let out = cmd::output(
            &mut Command::new("chpasswd"),
            Some(&format!("{PROXY_USER}:{PROXY_PASSWORD}\n")),
        );
        assert!(
            out.status.success(),
            "chpasswd {PROXY_USER}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    });
    PROXY_USER
}

/// The name of the account [`proxy_account`] makes.
pub(crate) const PROXY_USER: &str = "pallium-proxy";
/// Its password, which is also dante's SOCKS password.
pub(crate) const PROXY_PASSWORD: &str = "pallium-proxy-pass";

fn user_lock() -> Flock<File> {
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(USER_LOCK)
        .unwrap_or_else(|e| panic!("open {USER_LOCK}: {e}"));
    Flock::lock(lock, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("flock {USER_LOCK}: {e}"))
}

fn create() -> TestUser {
    let _lock = user_lock();
    let name = TestUser::NAME;
    if User::from_name(name).ok().flatten().is_none() {
        cmd::run(Command::new("useradd").args(["-m", "-s", "/bin/bash", name]));
    }
    let user = User::from_name(name)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("user {name} missing after useradd"));
    let runtime_dir = PathBuf::from(format!("/run/user/{}", user.uid));
    std::fs::create_dir_all(&runtime_dir)
        .unwrap_or_else(|e| panic!("create {}: {e}", runtime_dir.display()));
    chown(&runtime_dir, Some(user.uid), Some(user.gid)).expect("chown XDG_RUNTIME_DIR");
    std::fs::set_permissions(&runtime_dir, Permissions::from_mode(0o700))
        .expect("chmod XDG_RUNTIME_DIR");
    TestUser {
        name: name.to_owned(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        home: user.dir,
        runtime_dir,
    }
}
