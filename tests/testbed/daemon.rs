//! A server process of the testbed (a proxy, sshd, a Tor node) running in one extra host's
//! namespace with its output in a log file: started, waited for, killed on demand and on drop.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cmd::netns_exec;
use crate::names;
use crate::net::{in_netns, TESTBED_ENV};

/// How long a daemon may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running daemon; it and every other process in its namespace are killed on drop.
#[derive(Debug)]
pub(crate) struct Daemon {
    child: Mutex<Child>,
    netns: String,
    log: PathBuf,
    what: String,
}

impl Daemon {
    /// Starts `argv` in `netns` (`ip netns exec`, which execs it: the child is the daemon) with
    /// stdout and stderr appended to `log`.
    pub(crate) fn spawn(netns: &str, what: &str, argv: &[String], log: &Path) -> Daemon {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log fd");
        let mut cmd = netns_exec(netns, argv);
        // Untagged: a testbed's own servers are not processes pallium left behind.
        cmd.env_remove(TESTBED_ENV)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({argv:?}): {e}"));
        Daemon {
            child: Mutex::new(child),
            netns: netns.to_owned(),
            log: log.to_owned(),
            what: what.to_owned(),
        }
    }

    /// Waits until `addr` accepts TCP connections from inside the daemon's namespace; panics
    /// with the log if the daemon exits or does not listen in time.
    pub(crate) fn wait_listening(&self, addr: SocketAddr) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ok = in_netns(&self.netns, || {
                TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            });
            if ok {
                return;
            }
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited ({status}) before listening on {addr}:\n{}",
                    self.what,
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} does not listen on {addr} after {START_TIMEOUT:?}:\n{}",
                    self.what,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit status if the daemon has exited.
    pub(crate) fn exited(&self) -> Option<std::process::ExitStatus> {
        self.lock().try_wait().ok().flatten()
    }

    /// The daemon's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.lock().id()
    }

    /// The log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the daemon and every other process in its namespace (forked workers too) with
    /// SIGKILL and reaps it; the namespace and its addresses stay.
    pub(crate) fn kill(&self) {
        names::kill_netns_pids(&self.netns);
        let mut child = self.lock();
        let _ = child.kill();
        let _ = child.wait();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
