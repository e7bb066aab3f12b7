#!/usr/bin/env bash
# Startup and memory benchmark (targets: ≤ 20 ms root, ≤ 60 ms rootless). Run as root from the repository:
#   ./extra/bench/startup.sh [RUNS]   (as root)
# Prints, in one run: `pallium exec --one-shot` of the empty profile as root and
# rootless against `unshare -n true` and `bwrap --unshare-all`, with a virtual
# user and with gVisor, `exec` into a running session (also under gVisor), and
# the total RSS of one idle session's pallium processes.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-30}
cargo build --release --workspace --bins -q
BIN=/opt/pallium-bench-bin
install -d -m 0755 "$BIN"
install -m 0755 target/release/pallium target/release/pallium-netbroker target/release/pallium-sandboxer "$BIN/"
USER_NAME=pallium-bench
id "$USER_NAME" >/dev/null 2>&1 || useradd -m "$USER_NAME"
UID_N=$(id -u "$USER_NAME")
install -d -m 0700 -o "$USER_NAME" -g "$USER_NAME" "/run/user/$UID_N"
[ -e /dev/net/tun ] && chmod 0666 /dev/net/tun
as_user() { setpriv --reuid "$UID_N" --regid "$(id -g "$USER_NAME")" --init-groups env HOME="/home/$USER_NAME" XDG_RUNTIME_DIR="/run/user/$UID_N" PATH=/usr/local/bin:/usr/bin:/bin "$@"; }

# Median of RUNS runs of a command, in ms (hyperfine when installed).
median_ms() {
    if command -v hyperfine >/dev/null; then
        hyperfine -N --runs "$RUNS" --warmup 3 --export-json /tmp/pallium-bench.json "$*" >/dev/null 2>&1
        python3 -c 'import json;r=json.load(open("/tmp/pallium-bench.json"))["results"][0];print("%.1f" % (r["median"]*1000))'
    else
        local t=()
        for _ in $(seq "$RUNS"); do
            local s; s=$(date +%s%N); "$@" >/dev/null 2>&1; t+=($(( ($(date +%s%N) - s) / 1000 )))
        done
        printf '%s\n' "${t[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f\n", a[int((NR+1)/2)]/1000}'
    fi
}

printf '%-52s %10s %8s\n' "what" "median ms" "target"
row() { printf '%-52s %10s %8s\n' "$1" "$2" "$3"; }
row "unshare -n true (root)" "$(median_ms unshare -n true)" "-"
if command -v bwrap >/dev/null; then
    row "bwrap --unshare-all --dev-bind / / true (root)" "$(median_ms bwrap --unshare-all --dev-bind / / true)" "-"
fi
row "pallium exec --one-shot default -- true (root)" "$(median_ms "$BIN/pallium" exec --quiet --one-shot default -- true)" "20"
row "pallium exec --one-shot default -- true (rootless)" "$(median_ms setpriv --reuid "$UID_N" --regid "$(id -g "$USER_NAME")" --init-groups env HOME="/home/$USER_NAME" XDG_RUNTIME_DIR="/run/user/$UID_N" "$BIN/pallium" exec --quiet --one-shot default -- true)" "60"

# The sandbox with a virtual user and a whitelist, against bwrap building an
# equivalent view (tmpfs root, /usr and /etc, /opt, own /proc, /dev, /tmp, home).
VU=$(mktemp /tmp/pallium-bench-vu-XXXX.json)
echo '{"sandbox": {"virtuser": "$tmp", "paths": {"whitelist": ["/opt"]}}}' > "$VU"
row "pallium exec --one-shot, virtuser \$tmp + whitelist (root)" "$(median_ms "$BIN/pallium" exec --quiet --one-shot "$VU" -- true)" "-"
if command -v bwrap >/dev/null; then
    row "bwrap, equivalent view (root)" "$(median_ms bwrap --unshare-all --ro-bind /usr /usr --ro-bind /etc /etc \
        --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/sbin /sbin \
        --bind /opt /opt --proc /proc --dev /dev --tmpfs /tmp --tmpfs /run --tmpfs /home/tmp --hostname pallium true)" "-"
fi
rm -f "$VU"

# gVisor: the same one-shot exec with `sandbox.gvisor` (runsc --rootless in the
# prepared view), against bwrap over the whole host and runsc alone.
if command -v runsc >/dev/null; then
    GV=$(mktemp /tmp/pallium-bench-gv-XXXX.json)
    echo '{"sandbox": {"gvisor": true}}' > "$GV"
    chmod 0644 "$GV" # mktemp makes it 0600: the rootless row runs as the bench user
    row "pallium exec --one-shot, gvisor (root)" "$(median_ms "$BIN/pallium" exec --quiet --one-shot "$GV" -- true)" "-"
    row "pallium exec --one-shot, gvisor (rootless)" "$(median_ms setpriv --reuid "$UID_N" --regid "$(id -g "$USER_NAME")" --init-groups env HOME="/home/$USER_NAME" XDG_RUNTIME_DIR="/run/user/$UID_N" "$BIN/pallium" exec --quiet --one-shot "$GV" -- true)" "-"
    row "runsc --rootless --network=host do true (root)" "$(median_ms runsc --rootless --network=host --ignore-cgroups do true)" "-"
    rm -f "$GV"
fi

# A running session for exec-into and memory.
PROFILE=$(mktemp /tmp/pallium-bench-XXXX.json)
echo '{"run": {"command": ["sleep", "infinity"]}}' > "$PROFILE"
"$BIN/pallium" run --quiet "$PROFILE" </dev/null &
RUN_PID=$!
for _ in $(seq 200); do "$BIN/pallium" exec "$PROFILE" -- true 2>/dev/null && break; sleep 0.05; done
row "pallium exec into a running session (root)" "$(median_ms "$BIN/pallium" exec "$PROFILE" -- true)" "10"
if command -v runsc >/dev/null; then
    GVP=$(mktemp /tmp/pallium-bench-gvs-XXXX.json)
    echo '{"sandbox": {"gvisor": true}, "run": {"command": ["sleep", "infinity"]}}' > "$GVP"
    "$BIN/pallium" run --quiet "$GVP" </dev/null &
    GV_PID=$!
    for _ in $(seq 200); do "$BIN/pallium" exec "$GVP" -- true 2>/dev/null && break; sleep 0.05; done
    row "pallium exec into a running gvisor session (root)" "$(median_ms "$BIN/pallium" exec "$GVP" -- true)" "-"
    "$BIN/pallium" stop "$GVP" || kill "$GV_PID"
    wait "$GV_PID" 2>/dev/null || true
    rm -f "$GVP"
fi
# RSS and PSS of this session's pallium processes: the supervisor, its two
# helpers, and the sandbox's init (the application, sleep, is not counted).
helpers=$(pgrep -P "$RUN_PID" -d ' ' 'pallium-' || true)
init=$(for h in $helpers; do pgrep -P "$h" -d ' ' 'pallium-' || true; done)
pids="$RUN_PID $helpers $init"
rss=0 pss=0
for p in $pids; do
    r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0); rss=$((rss + r))
    q=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0); pss=$((pss + q))
done
echo "(processes counted: $(echo $pids | wc -w): $pids)"
row "PSS of an idle session (same processes, MiB)" "$(awk -v k="$pss" 'BEGIN {printf "%.1f", k/1024}')" "-"
row "RSS of an idle session: supervisor+helpers+init (MiB)" "$(awk -v k="$rss" 'BEGIN {printf "%.1f", k/1024}')" "15"
"$BIN/pallium" stop "$PROFILE" || kill "$RUN_PID"
wait "$RUN_PID" 2>/dev/null || true
rm -f "$PROFILE"
