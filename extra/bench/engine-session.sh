#!/usr/bin/env bash
# Session-level benchmark of a SOCKS5 hop: the packet
# engine as the session runs it (its own process now, a thread of
# the netbroker before), for one or more pallium builds side by side:
#   ./extra/bench/engine-session.sh [SECONDS] PALLIUM [PALLIUM…]   (as root)
# Each PALLIUM needs its helpers beside it (a release build's target/release).
# A throwaway namespace holds dante (SOCKS5 on 127.0.0.1:1080) and iperf3 on
# 203.0.113.80; pallium starts there in root mode with one socks hop. Prints
# per build: iperf3 throughput up and down through the hop, and the RSS of
# all of an idle session's pallium processes (supervisor, netbroker, engine,
# sandboxer, init), summed from /proc/PID/status, and their PSS (RSS counts
# the file pages the engine shares with the netbroker in both).
set -euo pipefail
SECS=${1:?usage: $0 SECONDS PALLIUM [PALLIUM…]}; shift
. "$(dirname "$0")/dial-ns.sh"
bench_require
D=engb$$
bench_init
dial_netns $D
start_dante $D
start_iperf $D
sleep 1
PROFILE="$WORK/socks.json"
echo '{"chain": [{"type": "socks", "address": "127.0.0.1:1080"}], "run": {"command": ["sleep", "600"]}}' > "$PROFILE"
chmod 0644 "$PROFILE"; chmod 0755 "$WORK"

descendants() { for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done; }
for P in "$@"; do
    up=$(ip netns exec $D "$P" exec --one-shot "$PROFILE" -- iperf3 -c 203.0.113.80 -t "$SECS" -J 2>/dev/null | gbps)
    down=$(ip netns exec $D "$P" exec --one-shot "$PROFILE" -- iperf3 -c 203.0.113.80 -t "$SECS" -R -J 2>/dev/null | gbps)
    # An idle session: its pallium processes' RSS.
    ip netns exec $D "$P" run "$PROFILE" --quiet >/dev/null 2>&1 &
    RUN=$!
    sleep 2
    rss=0; pss=0; names=""
    for p in $(descendants $RUN) $RUN; do
        n=$(cat /proc/$p/comm 2>/dev/null || true)
        [ -z "$n" ] || [ "$n" = sleep ] && continue
        r=$(awk '/^VmRSS:/ {print $2}' /proc/$p/status 2>/dev/null || echo 0)
        q=$(awk '/^Pss:/ {print $2}' /proc/$p/smaps_rollup 2>/dev/null || echo 0)
        rss=$((rss + r)); pss=$((pss + q)); names="$names $n:$((r / 1024))M"
    done
    ip netns exec $D "$P" stop "$PROFILE" >/dev/null 2>&1 || kill $RUN
    wait $RUN 2>/dev/null || true
    printf '%s\n  up %s Gbit/s  down %s Gbit/s  idle RSS %.1f MiB, PSS %.1f MiB (%s)\n' "$P" "$up" "$down" \
        "$(awk -v k="$rss" 'BEGIN {print k/1024}')" "$(awk -v k="$pss" 'BEGIN {print k/1024}')" "$names"
done
