//! Host paths every sandbox view hides unless the profile names them, with
//! why, as data: the sandboxer builds its views from it and `pallium check`
//! says which of them a profile exposes.

use std::path::Path;

/// Paths hidden in every view unless the profile whitelists or binds them
/// (or something in them) by name: the host's resolver caches, which would
/// resolve names around the chain, and the host's IPC endpoints, which run
/// commands or act for the user outside the sandbox (D-Bus starts services
/// and `systemd-run`s anything; an ssh or gpg agent signs for it; an X
/// server takes keystrokes and screenshots; docker's socket is root). The
/// host's `/tmp` (X11's sockets, ssh agents) is private in the default view;
/// its X11 directories stay hidden when a profile whitelists `/tmp`. Besides
/// these, pallium's runtime directory and the caller's `$XDG_RUNTIME_DIR`
/// are hidden the same way (the sandboxer learns them at `Setup`).
pub const HIDDEN: &[(&str, &str)] = &[
    ("/run/nscd", "nscd's cache resolves names around the chain"),
    ("/var/run/nscd", "nscd's cache resolves names around the chain"),
    ("/run/systemd/resolve", "systemd-resolved resolves names around the chain"),
    ("/run/dbus", "the system bus starts and controls host services"),
    ("/var/run/dbus", "the system bus starts and controls host services"),
    ("/run/systemd", "systemd's private, notify, journal and userdb sockets"),
    ("/run/user", "every user's session bus, systemd --user (systemd-run), Wayland, PulseAudio, PipeWire, gpg and ssh agents, pallium's rootless sessions"),
    ("/run/pallium", "pallium's root sessions: their control sockets"),
    ("/run/docker.sock", "docker's socket is root on the host"),
    ("/var/run/docker.sock", "docker's socket is root on the host"),
    ("/run/docker", "docker's sockets are root on the host"),
    ("/run/containerd", "containerd's socket is root on the host"),
    ("/run/podman", "podman's socket is root on the host"),
    ("/run/crio", "CRI-O's socket is root on the host"),
    ("/run/libvirt", "libvirt starts and controls virtual machines"),
    ("/run/incus", "incus' socket is root on the host"),
    ("/run/lxd", "LXD's socket is root on the host"),
    ("/run/snapd.socket", "snapd installs software"),
    ("/run/snapd-snap.socket", "snapd installs software"),
    ("/run/avahi-daemon", "avahi publishes and resolves names on the LAN around the chain"),
    ("/run/cups", "the print server"),
    ("/run/pcscd", "smart cards"),
    ("/run/pulse", "the system's PulseAudio server"),
    ("/run/pipewire", "the system's PipeWire server"),
    ("/run/wpa_supplicant", "Wi-Fi control"),
    ("/run/NetworkManager", "NetworkManager's state and sockets"),
    ("/run/udev", "udev's control socket"),
    ("/run/screen", "GNU screen's sessions: a socket there runs commands in the user's terminal"),
    ("/var/run/screen", "GNU screen's sessions: a socket there runs commands in the user's terminal"),
    ("/tmp/.X11-unix", "X11 servers: keystrokes, screenshots, input injection"),
    ("/tmp/.ICE-unix", "X session management"),
];

/// The hidden paths a profile entry at `path` (a bind's source, a
/// whitelisted path) exposes: the entry is one of them, lies inside one, or
/// holds one below a specific directory (not `/` or a top-level directory
/// such as `/run`, which do not expose what is hidden below them).
pub fn exposed_by<'a>(path: &Path, extra: &'a [(String, &'a str)]) -> Vec<(String, &'a str)> {
    HIDDEN
        .iter()
        .map(|(p, why)| (p.to_string(), *why))
        .chain(extra.iter().cloned())
        .filter(|(h, _)| exposes(path, Path::new(h)))
        .collect()
}

/// The one rule, for `check` and the sandboxer's views alike: a profile
/// entry at `entry` exposes the hidden path `hidden` when it is that path,
/// lies inside it, or is a specific directory holding it (deeper than a
/// top-level one such as `/run`).
pub fn exposes(entry: &Path, hidden: &Path) -> bool {
    entry.starts_with(hidden) || (hidden.starts_with(entry) && entry.components().count() > 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_inside_or_around_a_hidden_path_expose_it() {
        let names = |p: &str| -> Vec<String> {
            exposed_by(Path::new(p), &[])
                .into_iter()
                .map(|(h, _)| h)
                .collect()
        };
        assert_eq!(names("/run/user/1000/bus"), ["/run/user"]);
        assert_eq!(
            names("/run/systemd/resolve"),
            ["/run/systemd/resolve", "/run/systemd"]
        );
        assert!(
            names("/run").is_empty(),
            "a top-level directory exposes nothing hidden"
        );
        assert!(names("/usr").is_empty());
        let extra = [("/run/pallium".to_string(), "x")];
        assert_eq!(exposed_by(Path::new("/run/pallium/s"), &extra).len(), 2);
    }

    #[test]
    fn every_hidden_path_is_absolute_and_has_a_reason() {
        for (p, why) in HIDDEN {
            assert!(p.starts_with('/') && !why.is_empty(), "{p}");
        }
    }
}
