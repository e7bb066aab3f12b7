#!/usr/bin/env bash
# pallium next to other sandboxes (doc/COMPARISON.md): the median startup of a
# one-shot `true` and the resident memory of an idle sandbox's own processes,
# for pallium (root and rootless), bubblewrap, firejail, and oniux when
# installed (vopono needs a VPN to start: vopono.sh measures it against the
# openvpn hop). Run as root from the repository:
#   ./extra/bench/compare.sh [RUNS]
# Needs hyperfine. Prints one table; say the machine and its load next to the
# figures when you quote them.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-30}
command -v hyperfine >/dev/null || { echo "compare.sh: needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "compare.sh: run as root (it also runs the rootless rows as a user it creates)" >&2; exit 1; }
cargo build --release --workspace --bins -q
BIN=$(mktemp -d /opt/pallium-cmp-bin-XXXX)
chmod 0755 "$BIN"
install -m 0755 target/release/pallium target/release/pallium-netbroker target/release/pallium-sandboxer "$BIN/"
USER_NAME=pallium-cmp
id "$USER_NAME" >/dev/null 2>&1 || useradd -m "$USER_NAME"
UID_N=$(id -u "$USER_NAME")
install -d -m 0700 -o "$USER_NAME" -g "$USER_NAME" "/run/user/$UID_N"
[ -e /dev/net/tun ] && chmod 0666 /dev/net/tun
as_user() { setpriv --reuid "$UID_N" --regid "$(id -g "$USER_NAME")" --init-groups env HOME="/home/$USER_NAME" XDG_RUNTIME_DIR="/run/user/$UID_N" PATH=/usr/local/bin:/usr/bin:/bin "$@"; }
cleanup() { rm -rf "$BIN" /tmp/pallium-cmp.json; }
trap cleanup EXIT

# Median and mean ± σ of RUNS runs, in ms.
median_ms() {
    hyperfine -N --output=pipe --runs "$RUNS" --warmup 3 --export-json /tmp/pallium-cmp.json "$*" >/dev/null 2>&1 || { echo "failed"; return; }
    python3 -c 'import json;r=json.load(open("/tmp/pallium-cmp.json"))["results"][0];print("%.1f (%.1f±%.1f)" % (r["median"]*1000, r["mean"]*1000, r["stddev"]*1000))'
}
row() { printf '%-62s %20s\n' "$1" "$2"; }

# Sum of VmRSS (MiB) of PID and its descendants, except the leaf command.
tree_rss() {
    local root=$1 leaf=$2 pids p r sum=0
    pids=$(ps -e -o pid=,ppid= | awk -v r="$root" '{c[$2]=c[$2]" "$1} END {q[1]=r; n=1; i=1; while (i<=n) {p=q[i++]; print p; split(c[p],a," "); for (k in a) if (a[k]!="") q[++n]=a[k]}}')
    for p in $pids; do
        [ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$leaf" ] && continue
        r=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null || echo 0)
        sum=$((sum + ${r:-0}))
    done
    awk -v k="$sum" 'BEGIN {printf "%.1f", k/1024}'
}
# Start CMD… (which ends in `sleep 600`) in the background, wait until the
# sleep runs, print the RSS of everything but the sleep, stop it.
idle_rss() {
    "$@" </dev/null >/dev/null 2>&1 &
    local pid=$! i
    for i in $(seq 200); do
        if ps -e -o ppid=,comm= | grep -q 'sleep$' && [ -n "$(pgrep -f 'sleep 600' | head -1)" ]; then break; fi
        sleep 0.05
    done
    sleep 0.5
    tree_rss "$pid" sleep
    kill "$pid" 2>/dev/null || true
    pkill -P "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r)"
row "startup of a one-shot \`true\`" "median ms (mean±σ)"
row "unshare -n true (root; no sandbox, a baseline)" "$(median_ms unshare -n true)"
row "bwrap --unshare-all --ro-bind / / true (root)" "$(median_ms bwrap --unshare-all --ro-bind / / true)"
row "bwrap --unshare-all --ro-bind / / true (user)" "$(median_ms setpriv --reuid "$UID_N" --regid "$(id -g "$USER_NAME")" --init-groups bwrap --unshare-all --ro-bind / / true)"
if command -v firejail >/dev/null; then
    row "firejail --noprofile --net=none true (root)" "$(median_ms firejail --quiet --noprofile --net=none true)"
    row "firejail --noprofile --net=none true (user, setuid)" "$(median_ms setpriv --reuid "$UID_N" --regid "$(id -g "$USER_NAME")" --init-groups env HOME="/home/$USER_NAME" firejail --quiet --noprofile --net=none true)"
    row "firejail (default profile) true (user, setuid)" "$(median_ms setpriv --reuid "$UID_N" --regid "$(id -g "$USER_NAME")" --init-groups env HOME="/home/$USER_NAME" firejail --quiet true)"
else
    row "firejail" "not installed"
fi
row "pallium exec --one-shot default -- true (root)" "$(median_ms "$BIN/pallium" exec --quiet --one-shot default -- true)"
row "pallium exec --one-shot default -- true (rootless)" "$(median_ms setpriv --reuid "$UID_N" --regid "$(id -g "$USER_NAME")" --init-groups env HOME="/home/$USER_NAME" XDG_RUNTIME_DIR="/run/user/$UID_N" "$BIN/pallium" exec --quiet --one-shot default -- true)"
row "vopono" "see extra/bench/vopono.sh"
command -v oniux >/dev/null || row "oniux" "not installed"
if command -v oniux >/dev/null; then
    row "oniux true (user; bootstraps Tor)" "$(median_ms setpriv --reuid "$UID_N" --regid "$(id -g "$USER_NAME")" --init-groups env HOME="/home/$USER_NAME" oniux true)"
fi

echo
row "memory of an idle sandbox's own processes (not the app)" "RSS MiB"
row "bwrap --unshare-all --ro-bind / / sleep 600 (root)" "$(idle_rss bwrap --unshare-all --ro-bind / / sleep 600)"
if command -v firejail >/dev/null; then
    row "firejail --noprofile --net=none sleep 600 (root)" "$(idle_rss firejail --quiet --noprofile --net=none sleep 600)"
fi
row "pallium exec --one-shot default -- sleep 600 (root)" "$(idle_rss "$BIN/pallium" exec --quiet --one-shot default -- sleep 600)"
row "pallium exec --one-shot default -- sleep 600 (rootless)" "$(idle_rss as_user "$BIN/pallium" exec --quiet --one-shot default -- sleep 600)"
