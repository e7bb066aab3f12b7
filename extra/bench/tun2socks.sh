#!/usr/bin/env bash
# tun2socks benchmark. Run as root from the repository:
#   ./extra/bench/tun2socks.sh [SECONDS]
# Builds a throwaway "dial" namespace (dante SOCKS5 on 127.0.0.1:1080, iperf3
# and a TCP echo server on 203.0.113.80) and an "app" namespace served by the
# in-process engine (netbroker/benches/tun2socks.rs), then prints iperf3
# throughput up and down at TUN MTU 65000 and 1500, the time added per new
# proxied connection, and the engine process's RSS, against the direct path
# (iperf3 inside the dial namespace) and, when `tun2proxy-bin` is found
# (PATH, ~/.cargo/bin or /tmp/t2p/bin; `cargo install tun2proxy --root
# /tmp/t2p`), against tun2proxy through the same dante.
# HOST=path runs another build of the benchmark host, PAL=path another
# pallium (its helpers beside it) for the session rows (A/B comparisons).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-5}
. extra/bench/dial-ns.sh
bench_require
HOST=${HOST:-$(bench_host)}
[ -x "$HOST" ] || { echo "could not build the benchmark host" >&2; exit 1; }

TAG=t2sb$$
D=${TAG}d A=${TAG}a P=${TAG}p
bench_init
# dante also listens on 10.200.0.1, for tun2proxy's namespace below.
dial_netns $D 10.200.0.1
bench_netns $A
# A second app namespace for tun2proxy, which needs a route to the proxy.
T2P=""
for c in tun2proxy-bin "$HOME/.cargo/bin/tun2proxy-bin" /tmp/t2p/bin/tun2proxy-bin; do
    if command -v "$c" >/dev/null 2>&1; then T2P=$(command -v "$c"); break; fi
done
ip -n $D link add t2pd type veth peer name t2pa
ip -n $D addr add 10.200.0.1/30 dev t2pd; ip -n $D link set t2pd up
start_dante $D
start_iperf $D
start_echo $D 128
cat > "$WORK/conn.py" <<'EOF'
import socket, sys, time
n = int(sys.argv[1]); t0 = time.perf_counter()
for _ in range(n):
    c = socket.create_connection(("203.0.113.80", 7007)); c.sendall(b"x")
    assert c.recv(1) == b"x"; c.close()
print("%.3f" % ((time.perf_counter() - t0) / n * 1000))
EOF
cat > "$WORK/conn_socks.py" <<'EOF'
import socket, struct, sys, time
n = int(sys.argv[1]); t0 = time.perf_counter()
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", 1080)); c.sendall(b"\5\1\0")
    assert c.recv(2) == b"\5\0"
    c.sendall(b"\5\1\0\1" + socket.inet_aton("203.0.113.80") + struct.pack(">H", 7007))
    assert c.recv(10)[1] == 0
    c.sendall(b"x"); assert c.recv(1) == b"x"; c.close()
print("%.3f" % ((time.perf_counter() - t0) / n * 1000))
EOF
sleep 1

iperf() { local ns=$1; shift; ip netns exec "$ns" iperf3 -J -c 203.0.113.80 -p 5201 -t "$SECS" "$@" | gbps; }
rss() { awk '/^VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# Time per new connection (connect, one byte echoed, close): straight to the
# server, and with a SOCKS5 client through dante itself; "+ms/conn" below is
# what the tun2socks path adds on top of the latter.
# dante's first connections are slow (it forks its workers): warm it up.
ip netns exec $D python3 "$WORK/conn_socks.py" 300 >/dev/null
PLAIN_MS=$(ip netns exec $D python3 "$WORK/conn.py" 300)
DIRECT_MS=$(ip netns exec $D python3 "$WORK/conn_socks.py" 300)
echo "ms per connection: direct $PLAIN_MS, SOCKS5 client through dante $DIRECT_MS"
printf '%-44s %8s %8s %10s %9s\n' "path" "up Gb/s" "down" "+ms/conn" "RSS MiB"
printf '%-44s %8s %8s %10s %9s\n' "direct (inside the dial namespace)" "$(iperf $D)" "$(iperf $D -R)" "-" "-"

engine() {
    local mtu=$1
    rm -f "$WORK/ready" "$WORK/stop"
    "$HOST" $A $D socks5 127.0.0.1:1080 "$mtu" "$WORK/ready" "$WORK/stop" > "$WORK/host.out" 2>&1 &
    local hp=$!
    for _ in $(seq 100); do [ -s "$WORK/ready" ] && break; sleep 0.1; done
    [ -s "$WORK/ready" ] || { cat "$WORK/host.out"; exit 1; }
    local up down ms mem
    ms=$(ip netns exec $A python3 "$WORK/conn.py" 300)
    up=$(iperf $A); down=$(iperf $A -R)
    mem=$(rss "$hp")
    touch "$WORK/stop"; wait $hp || true
    ip -n $A link del t2s0 2>/dev/null || true
    printf '%-44s %8s %8s %10s %9s\n' "pallium tun2socks, dante, MTU $mtu" "$up" "$down" \
        "$(python3 -c "print('%.3f' % ($ms - $DIRECT_MS))")" "$mem"
}
engine 65000
engine 1500

if [ -n "$T2P" ]; then
    bench_netns $P
    ip -n $D link set t2pa netns $P
    ip -n $P addr add 10.200.0.2/30 dev t2pa; ip -n $P link set t2pa up
    for mtu in 65000 8500 1500; do
        ip netns exec $P "$T2P" --tun tp0 --proxy socks5://10.200.0.1:1080 --dns virtual \
            --mtu "$mtu" --tcp-mss $((mtu - 40)) > "$WORK/t2p.log" 2>&1 &
        tp=$!
        for _ in $(seq 50); do ip -n $P link show tp0 >/dev/null 2>&1 && break; sleep 0.1; done
        ip -n $P addr add 198.18.0.1/15 dev tp0 2>/dev/null || true
        ip -n $P link set tp0 mtu "$mtu" up
        ip -n $P route replace default dev tp0
        sleep 0.5
        up=$(timeout $((SECS + 20)) bash -c "$(declare -f iperf gbps); SECS=$SECS; iperf $P" || echo fail)
        down=$(timeout $((SECS + 20)) bash -c "$(declare -f iperf gbps); SECS=$SECS; iperf $P -R" || echo fail)
        ms=$(timeout 60 ip netns exec $P python3 "$WORK/conn.py" 50 2>/dev/null || echo "")
        mem=$(rss $tp)
        kill $tp 2>/dev/null; wait $tp 2>/dev/null || true
        add=$( [ -n "$ms" ] && python3 -c "print('%.3f' % ($ms - $DIRECT_MS))" || echo fail)
        printf '%-44s %8s %8s %10s %9s\n' "tun2proxy, dante, MTU $mtu" "$up" "$down" "$add" "$mem"
    done
else
    echo "(tun2proxy-bin not found: cargo install tun2proxy --root /tmp/t2p for the comparison)"
fi
# The same through pallium itself: a session with one socks hop started in
# the dial namespace (root mode: hop 1 dials from there), iperf3 and the
# connection loop run inside its sandbox (the loop's source is passed with -c:
# the bench's temporary directory is private to the host's /tmp, which the
# sandbox does not see); RSS is the netbroker's plus its packet engine's.
PAL=${PAL:-./target/release/pallium}
if [ -x "$PAL" ] && [ -x "$(dirname "$PAL")/pallium-netbroker" ]; then
    PROF="$WORK/bench-profile.json"
    echo '{"chain": [{"type": "socks", "address": "127.0.0.1:1080"}], "run": {"command": ["sleep", "600"]}}' > "$PROF"
    ip netns exec $D "$PAL" run --quiet "$PROF" >/dev/null 2>&1 &
    RUN=$!
    PIDS+=($RUN)
    for _ in $(seq 100); do ip netns exec $D "$PAL" exec "$PROF" -- true 2>/dev/null && break; sleep 0.1; done
    pex() { ip netns exec $D "$PAL" exec --quiet "$PROF" -- "$@"; }
    ms=$(pex python3 -c "$(cat "$WORK/conn.py")" 300)
    up=$(pex iperf3 -J -c 203.0.113.80 -p 5201 -t "$SECS" | gbps)
    down=$(pex iperf3 -J -c 203.0.113.80 -p 5201 -t "$SECS" -R | gbps)
    NB=$(pgrep -P "$RUN" -f pallium-netbroker | head -1)
    mem="?"
    if [ -n "$NB" ]; then
        mem=$(for p in "$NB" $(pgrep -P "$NB"); do rss "$p"; echo; done | awk '{s += $1} END {printf "%.1f", s}')
    fi
    ip netns exec $D "$PAL" stop "$PROF" >/dev/null 2>&1 || true
    printf '%-44s %8s %8s %10s %9s\n' "pallium exec, one socks hop (netbroker RSS)" "$up" "$down" \
        "$(python3 -c "print('%.3f' % ($ms - $DIRECT_MS))")" "$mem"
    # Startup of a one-shot command behind one socks hop (the probe of the
    # proxy included), against the empty chain.
    if command -v hyperfine >/dev/null; then
        ONE="$WORK/one-hop.json"
        echo '{"chain": [{"type": "socks", "address": "127.0.0.1:1080"}]}' > "$ONE"
        hyperfine -N -w 3 -r 30 --style none --export-json "$WORK/hf.json" \
            "ip netns exec $D $PAL exec --one-shot --quiet default -- true" \
            "ip netns exec $D $PAL exec --one-shot --quiet $ONE -- true" >/dev/null 2>&1 &&
            python3 - "$WORK/hf.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    what = "one socks hop" if "one-hop" in r["command"] else "empty chain"
    print("startup, pallium exec --one-shot, %-14s median %.1f ms" % (what, r["median"] * 1000))
PY
    fi
else
    echo "(no release build: cargo build --release for the pallium exec row)"
fi
echo "targets: >= 4 Gb/s both ways through dante, >= 2x tun2proxy, <= 1.5 ms/connection, <= 10 MiB RSS"
