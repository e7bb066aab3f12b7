//! A tor hop's `onion_service` end to end on the testbed's private Tor
//! network, root and rootless: a server in the sandbox on the target port
//! is reached by another Tor client of the network (the network's own)
//! through the `.onion` address pallium shows; the application and the
//! `post_up` hook see `PALLIUM_ONION_ADDRESS`; `onion_service` on a non-tor
//! hop is one line naming the key; nothing is left behind after `stop` and
//! after `kill -9` of the supervisor.
//!
//! Wall time: the network takes 20–35 s to come up, each session's tor
//! some seconds to bootstrap, and its new service a few more to publish
//! its descriptor; each reach is bounded by [`REACH_LIMIT`].

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{modes, out, pal, profile_dir_name, readable_profile, text, wait_clean, Mode};
use pallium_tests::{skip_unless_root, Testbed, TorNetwork};

/// How long a session may take from `pallium run` to its service answering
/// a Tor client (tor's bootstrap, the descriptor's publication, the
/// client's lookup and circuits).
const REACH_LIMIT: Duration = Duration::from_secs(180);

/// The application: an HTTP server on port 8080 of the loopback address
/// its argument names (127.0.0.1 or ::1) whose body is what pallium told it
/// about its onion service.
const SERVER: &str = r#"
import os, socket, sys
body = "onion-app %s %s %s\n" % (os.environ.get("PALLIUM_ONION_ADDRESS", "-"),
    os.environ.get("PALLIUM_ONION_PORT", "-"), os.environ.get("PALLIUM_ONION_TARGET", "-"))
host = sys.argv[1]
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, 8080)); s.listen(16)
while True:
    c, _ = s.accept()
    c.recv(4096)
    c.sendall(("HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)).encode())
    c.close()
"#;

/// A directory both root and the test user may write the hook's file to.
fn hook_dir(name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let d = std::env::temp_dir().join(format!("pallium-onion-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// `pallium run` with its stderr lines sent to the returned receiver.
fn spawn_run(tb: &Testbed, mode: Mode, prof: &str) -> (Child, mpsc::Receiver<String>) {
    let mut child = pal(tb, mode, &["run", prof])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run");
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The `.onion` address of pallium's one line about the service, and
/// everything it said until then.
fn onion_line(rx: &mpsc::Receiver<String>, deadline: Instant) -> (Option<String>, String) {
    let mut said = String::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        said.push_str(&line);
        said.push('\n');
        if let Some(rest) = line.strip_prefix("pallium: onion service ") {
            let addr = rest.split(':').next().unwrap_or_default().to_owned();
            assert!(
                rest.ends_with(":80 (hop 1, tor) → port 8080 in the sandbox"),
                "{line}"
            );
            return (Some(addr), said);
        }
    }
    (None, said)
}

/// `listen`: the server's loopback address (the forwarder tries
/// 127.0.0.1, then ::1).
fn serves_an_onion_service(tb: &Testbed, tor: &TorNetwork, mode: Mode, listen: &str) {
    let name = format!("onion-{mode:?}").to_lowercase();
    let dir = hook_dir(&name);
    let args = serde_json::to_string(&tor.client_args()).unwrap();
    let json = format!(
        r#"{{"network": {{"chain": [{{"type": "tor", "timeout": 120, "tor_args": {args},
              "onion_service": {{"port": 80, "target": 8080}}}}],
            "hooks": {{"post_up": "env | grep ^PALLIUM_ONION > {}/up"}}}},
            "run": {{"command": ["/usr/bin/python3", "-c", {}, "{listen}"]}}}}"#,
        dir.display(),
        serde_json::to_string(SERVER).unwrap()
    );
    let prof = readable_profile(&name, &json);
    let started = Instant::now();
    let deadline = started + REACH_LIMIT;
    let (mut run, rx) = spawn_run(tb, mode, &prof);
    let (addr, said) = onion_line(&rx, deadline);
    let Some(addr) = addr else {
        let _ = run.kill();
        panic!("{mode:?}: pallium showed no onion service: {said}");
    };
    let shown = started.elapsed();
    assert!(
        addr.len() == 62 && addr.ends_with(".onion"),
        "{mode:?}: {addr}"
    );
    // Another Tor client of the network reaches the sandbox's server.
    let want = format!("onion-app {addr} 80 8080");
    let url = format!("http://{addr}/");
    let mut last;
    let mut tries = 0;
    loop {
        tries += 1;
        match tor.client_fetch(&url) {
            Ok(body) if body == want => break,
            Ok(body) => last = format!("body {body:?}"),
            Err(e) => last = e,
        }
        if Instant::now() > deadline {
            let _ = run.kill();
            let rest: String = rx.try_iter().collect::<Vec<_>>().join("\n");
            panic!(
                "{mode:?}: {url} not reached within {REACH_LIMIT:?} ({tries} tries): {last}; \
                 pallium said: {said}{rest}"
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!(
        "{mode:?} ({listen}): address shown {:.1} s after `pallium run`, service reached {:.1} s after ({tries} tries)",
        shown.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let up = std::fs::read_to_string(dir.join("up")).expect("post_up ran");
    assert_eq!(
        up,
        format!("PALLIUM_ONION_ADDRESS={addr}\nPALLIUM_ONION_PORT=80\nPALLIUM_ONION_TARGET=8080\n"),
        "{mode:?}"
    ); // Every process within policy: the forwarder, which relays for the
       // service, counts as an engine (no capability, a seccomp filter).
    let o = out(pal(tb, mode, &["audit", &prof]));
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{mode:?}: {stdout}{stderr}");
    let engines = stdout.matches(" engine").count();
    assert!(
        engines >= 2,
        "{mode:?}: the hop's engine and the forwarder: {stdout}"
    );

    assert!(out(pal(tb, mode, &["stop", &prof])).status.success());
    assert_eq!(run.wait().unwrap().code(), Some(143), "{mode:?}");
    assert_eq!(wait_clean(tb), Vec::<String>::new(), "{mode:?}");
    if let Mode::Root = mode {
        let left = onion_dirs(&Path::new("/run/pallium").join(profile_dir_name(Path::new(&prof))));
        assert!(left.is_empty(), "onion sockets left: {left:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `kill -9` of the supervisor once the address is shown: the netbroker
/// tears down (tor, the forwarder, the socket's directory).
fn kill_9_leaves_nothing(tb: &Testbed, tor: &TorNetwork) {
    let args = serde_json::to_string(&tor.client_args()).unwrap();
    let json = format!(
        r#"{{"chain": [{{"type": "tor", "timeout": 120, "tor_args": {args},
              "onion_service": {{"port": 80, "target": 8080}}}}],
            "run": {{"command": ["sleep", "600"]}}}}"#
    );
    let prof = readable_profile("onion-kill", &json);
    let (mut run, rx) = spawn_run(tb, Mode::Root, &prof);
    let (addr, said) = onion_line(&rx, Instant::now() + REACH_LIMIT);
    assert!(addr.is_some(), "no onion service shown: {said}");
    let dir = Path::new("/run/pallium").join(profile_dir_name(Path::new(&prof)));
    // Where the check below looks: the socket's directory is there now.
    assert_eq!(onion_dirs(&dir).len(), 1, "{}", dir.display());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = run.wait();
    assert_eq!(wait_clean(tb), Vec::<String>::new());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !onion_dirs(&dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "onion sockets left after kill -9: {:?}",
            onion_dirs(&dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `onion` directories (where the services' sockets live) under `dir`.
fn onion_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            if e.file_name() == "onion" {
                found.push(p.clone());
            }
            found.extend(onion_dirs(&p));
        }
    }
    found
}

/// One Tor network for every case (it takes ~25 s to come up).
#[test]
fn onion_service_reaches_the_sandbox_from_another_tor_client() {
    skip_unless_root!();
    let tb = Testbed::new("onion");

    // The error needs no network: one line naming the key, nothing run.
    let bad = readable_profile(
        "onion-socks",
        r#"{"chain": [{"type": "socks", "address": "192.0.2.1:1080", "onion_service": {"port": 80}}]}"#,
    );
    let o = out(pal(
        &tb,
        Mode::Root,
        &["exec", "--one-shot", &bad, "--", "echo", "ran"],
    ));
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}{stderr}");
    assert!(!stdout.contains("ran"));
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("chain[0].onion_service: onion_service is only for tor hops"),
        "{stderr}"
    );
    assert_eq!(wait_clean(&tb), Vec::<String>::new());

    let tor = tb.start_tor();
    tor.wait_ready();
    // Root with an IPv4 server, rootless with an IPv6-only one.
    for mode in modes("onion service") {
        let listen = match mode {
            Mode::Root => "127.0.0.1",
            Mode::Rootless => "::1",
        };
        serves_an_onion_service(&tb, &tor, mode, listen);
    }
    kill_9_leaves_nothing(&tb, &tor);
}
