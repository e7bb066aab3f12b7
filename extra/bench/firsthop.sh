#!/usr/bin/env bash
# Root against rootless through one SOCKS hop: a
# rootless chain's hop 1 dials from the caller's own network namespace (no
# pasta), as root's always has. One run prints, per mode, iperf3 upload and
# download through the hop over RUNS runs of SECS seconds (min / median /
# max: this path was erratic), and the one-shot startup behind the hop:
#   ./extra/bench/firsthop.sh [RUNS] [SECS] [BINDIR]   (as root)
# BINDIR holds pallium, pallium-netbroker and pallium-sandboxer (default: a
# release build of this tree). A throwaway namespace holds dante (SOCKS5 on
# 203.0.113.80:1080) and iperf3 (203.0.113.80:5201); pallium starts there,
# rootless as the user pallium-bench.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-5}; SECS=${2:-2}; SRC=${3:-}
. extra/bench/dial-ns.sh
bench_require hyperfine setpriv
if [ -z "$SRC" ]; then cargo build --release --workspace --bins -q; SRC=target/release; fi
BIN=/opt/pallium-firsthop-bench
install -d -m 0755 "$BIN"
install -m 0755 "$SRC/pallium" "$SRC/pallium-netbroker" "$SRC/pallium-sandboxer" "$BIN/"
USER_NAME=pallium-bench
id "$USER_NAME" >/dev/null 2>&1 || useradd -m "$USER_NAME"
UID_N=$(id -u "$USER_NAME")
install -d -m 0700 -o "$USER_NAME" -g "$USER_NAME" "/run/user/$UID_N"
[ -e /dev/net/tun ] && chmod 0666 /dev/net/tun
bench_init
D=fhb$$
# dante also listens on 203.0.113.80, the address the profile names.
dial_netns $D 203.0.113.80
start_dante $D
start_iperf $D
sleep 1
PROFILE="$WORK/socks.json"
echo '{"chain": [{"type": "socks", "address": "203.0.113.80:1080"}]}' > "$PROFILE"
chmod 0644 "$PROFILE"; chmod 0755 "$WORK"

as() { # MODE CMD…: run in the bench namespace, as root or as the bench user
    local mode=$1; shift
    if [ "$mode" = root ]; then ip netns exec $D "$@"
    else ip netns exec $D setpriv --reuid "$UID_N" --regid "$(id -g "$USER_NAME")" --init-groups \
        env HOME="/home/$USER_NAME" XDG_RUNTIME_DIR="/run/user/$UID_N" PATH=/usr/local/bin:/usr/bin:/bin "$@"; fi
}
gbit() { python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))' 2>/dev/null || echo fail; }
spread() { python3 -c 'import sys,statistics as s; v=sorted(float(x) for x in sys.argv[1:] if x!="fail"); f=len(sys.argv)-1-len(v); print("min %.2f  median %.2f  max %.2f  (%s)%s" % (v[0], s.median(v), v[-1], " ".join("%.2f"%x for x in v), " %d failed"%f if f else "") if v else "all failed")' "$@"; }
for mode in root rootless; do
    ups=(); downs=()
    for _ in $(seq "$RUNS"); do
        ups+=("$(as $mode "$BIN/pallium" exec --quiet --one-shot "$PROFILE" -- iperf3 -c 203.0.113.80 -t "$SECS" -J | gbit)")
        downs+=("$(as $mode "$BIN/pallium" exec --quiet --one-shot "$PROFILE" -- iperf3 -c 203.0.113.80 -t "$SECS" -R -J | gbit)")
    done
    printf '%-9s up   Gbit/s: %s\n' "$mode" "$(spread "${ups[@]}")"
    printf '%-9s down Gbit/s: %s\n' "$mode" "$(spread "${downs[@]}")"
done
for mode in root rootless; do
    if [ "$mode" = root ]; then pre=(ip netns exec $D)
    else pre=(ip netns exec $D setpriv --reuid "$UID_N" --regid "$(id -g "$USER_NAME")" --init-groups env HOME="/home/$USER_NAME" XDG_RUNTIME_DIR="/run/user/$UID_N"); fi
    hyperfine -N --runs 20 --warmup 3 --export-json "$WORK/h.json" "${pre[*]} $BIN/pallium exec --quiet --one-shot $PROFILE -- true" >/dev/null 2>&1
    printf '%-9s one-shot startup behind the SOCKS hop: median %s ms\n' "$mode" \
        "$(python3 -c 'import json,sys;r=json.load(open(sys.argv[1]))["results"][0];print("%.1f (min %.1f)" % (r["median"]*1000, r["min"]*1000))' "$WORK/h.json")"
done
