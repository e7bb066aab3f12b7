#!/usr/bin/env bash
# GUI startup benchmark. Run as root from the repository:
#   ./extra/bench/gui.sh [RUNS]
# Prints, in one run, the time from the start of a command until an xclock
# window is on the "desktop" (an Xvfb this script starts), for
#   plain:   `xpra start :N` + waiting for its socket + `xpra attach` + xclock
#   pallium: `pallium exec --one-shot '{"sandbox":{"gui":true}}' -- xclock`
# (median of RUNS runs each, default 3). The window is polled for with
# xdotool every 50 ms, which bounds the resolution.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-3}
cargo build --release --workspace --bins -q
PALLIUM=$PWD/target/release/pallium
WORK=$(mktemp -d /tmp/pallium-bench-gui.XXXXXX)
free_display() {
    local n=$1
    while [ -e "/tmp/.X11-unix/X$n" ] || [ -e "/tmp/.X$n-lock" ]; do n=$((n + 1)); done
    echo "$n"
}
DESK=$(free_display $((600 + $$ % 200)))
Xvfb ":$DESK" -screen 0 1024x768x24 -nolisten tcp >/dev/null 2>&1 &
XVFB=$!
PIDS=()
cleanup() {
    for p in "${PIDS[@]}" "$XVFB"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
while [ ! -e "/tmp/.X11-unix/X$DESK" ]; do sleep 0.05; done
export DISPLAY=":$DESK"
unset XAUTHORITY

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# Wait for a window named $1 on the desktop; print ms since $2.
window_after() {
    until xdotool search --name "$1" >/dev/null 2>&1; do sleep 0.05; done
    echo $(( $(now_ms) - $2 ))
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

plain_once() {
    local i=$1 n dir t0 ms
    n=$(free_display 300)
    dir=$WORK/plain$i
    mkdir -m 0700 "$dir"
    : >"$dir/Xauthority"
    t0=$(now_ms)
    HOME=$dir XDG_RUNTIME_DIR=$dir XAUTHORITY=$dir/Xauthority xpra start ":$n" --daemon=no \
        --attach=no --mdns=no --systemd-run=no --dbus-launch=no --pulseaudio=no \
        --socket-dir="$dir" --socket-dirs="$dir" --log-dir="$dir" >"$dir/server.log" 2>&1 &
    local server=$!
    PIDS+=("$server")
    until [ -S "/tmp/.X11-unix/X$n" ] && ls "$dir" | grep -q -- "-$n\$"; do sleep 0.05; done
    HOME=$dir XDG_RUNTIME_DIR=$dir xpra attach ":$n" --socket-dir="$dir" --socket-dirs="$dir" \
        --mdns=no --tray=no --opengl=no >"$dir/client.log" 2>&1 &
    PIDS+=("$!")
    DISPLAY=":$n" XAUTHORITY=$dir/Xauthority xclock -title "plain-$i" >/dev/null 2>&1 &
    PIDS+=("$!")
    ms=$(window_after "plain-$i" "$t0")
    kill "$server"
    wait "$server" 2>/dev/null || true
    echo "$ms"
}

pallium_once() {
    local i=$1 t0 ms p
    t0=$(now_ms)
    "$PALLIUM" exec --one-shot '{"sandbox":{"gui":true}}' -- \
        sh -c "xclock -title pallium-$i & read x" >/dev/null 2>&1 < <(sleep 60) &
    p=$!
    ms=$(window_after "pallium-$i" "$t0")
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    echo "$ms"
}

plain=() pal=()
for i in $(seq "$RUNS"); do
    plain+=("$(plain_once "$i")")
    pal+=("$(pallium_once "$i")")
done
echo "time until the window is on the desktop, median of $RUNS (ms; all runs):"
echo "  plain xpra start + attach: $(median "${plain[@]}")  (${plain[*]})"
echo "  pallium gui: true:         $(median "${pal[@]}")  (${pal[*]})"
