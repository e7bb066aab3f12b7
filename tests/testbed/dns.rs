//! dnsmasq instances of the testbed: the authoritative server of the test zone on the dns host,
//! and optionally a caching-free stub resolver on 127.0.0.53 in the host namespace (the shape of
//! systemd-resolved). Both log every query, which is how tests see where DNS went.

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::netns_exec;

/// One query a dnsmasq logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuery {
    /// The address the query came from, as the server saw it.
    pub client: IpAddr,
    /// The queried name in lower case, e.g. `web.pallium.test` (tor's resolver randomises the
    /// case of the names it asks for, as DNS 0x20 hardening).
    pub name: String,
    /// The query type as dnsmasq logs it: `A`, `AAAA`, `PTR`, …
    pub qtype: String,
}

/// A dnsmasq process in a namespace; killed on drop.
#[derive(Debug)]
pub(crate) struct Dnsmasq {
    child: Child,
    log: PathBuf,
}

impl Dnsmasq {
    /// Starts `dnsmasq` in `netns` with `args` (plus logging into `state_dir/<label>.log`) and
    /// waits until it serves.
    pub(crate) fn start(netns: &str, state_dir: &Path, label: &str, args: &[String]) -> Dnsmasq {
        let log = state_dir.join(format!("{label}.log"));
        let stderr_path = state_dir.join(format!("{label}.stderr"));
        let stderr = File::create(&stderr_path).expect("create dnsmasq stderr file");
        let mut cmd = netns_exec(netns, ["dnsmasq"]);
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--log-queries",
            "--user=root",
        ])
        .arg(format!("--log-facility={}", log.display()))
        .arg(format!(
            "--pid-file={}",
            state_dir.join(format!("{label}.pid")).display()
        ))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dnsmasq: {e}"));
        let mut d = Dnsmasq { child, log };
        d.wait_started(&stderr_path);
        d
    }

    /// The pid of the dnsmasq process (`ip netns exec` execs it, so it is the child itself).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file (queries and status lines).
    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    /// Every query logged so far.
    pub(crate) fn queries(&self) -> Vec<DnsQuery> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(parse_query)
            .collect()
    }

    fn wait_started(&mut self, stderr_path: &Path) {
        // dnsmasq binds its sockets before it logs "started".
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains("started, version") {
                return;
            }
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                let stderr = std::fs::read_to_string(stderr_path).unwrap_or_default();
                panic!("dnsmasq did not start ({exited:?}): {stderr}{log}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `… dnsmasq[PID]: query[AAAA] web.pallium.test from fd00:db8::2`.
fn parse_query(line: &str) -> Option<DnsQuery> {
    let rest = &line[line.find(": query[")? + ": query[".len()..];
    let (qtype, rest) = rest.split_once("] ")?;
    let mut words = rest.split_whitespace();
    let name = words.next()?;
    if words.next()? != "from" {
        return None;
    }
    let client = words.next()?.parse().ok()?;
    Some(DnsQuery {
        client,
        name: name.to_ascii_lowercase(),
        qtype: qtype.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_query_reads_client_name_and_type() {
        let q = parse_query(
            "Nov 25 06:41:00 dnsmasq[42]: query[AAAA] web.pallium.test from fd00:db8::2",
        )
        .unwrap();
        assert_eq!(q.client.to_string(), "fd00:db8::2");
        assert_eq!(q.name, "web.pallium.test");
        assert_eq!(q.qtype, "AAAA");
    }

    #[test]
    fn parse_query_lowers_the_name() {
        let q = parse_query("Nov 25 dnsmasq[1]: query[A] weB4.pAlLIum.test from 198.51.100.103")
            .unwrap();
        assert_eq!(q.name, "web4.pallium.test");
    }

    #[test]
    fn parse_query_ignores_other_lines() {
        assert_eq!(
            parse_query("Nov 25 06:41:00 dnsmasq[42]: started, version 2.90"),
            None
        );
        assert_eq!(
            parse_query("Nov 25 06:41:00 dnsmasq[42]: forwarded web.pallium.test to 198.51.100.53"),
            None
        );
    }
}
