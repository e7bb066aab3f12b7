#!/usr/bin/env bash
# tun2socks bounds benchmark. Run as root from the repository:
#   ./extra/bench/tun2socks-bounds.sh [PENDING] [SHORT] [SECONDS]
# Same throwaway namespaces as tun2socks.sh (dante SOCKS5 on 127.0.0.1:1080,
# iperf3 and a TCP echo server on 203.0.113.80, the engine served by the
# in-process host of netbroker/benches/tun2socks.rs), plus a black hole:
# 192.0.2.66 is routed to a neighbour that never answers, so dante's connect
# to it, and the engine's dial through dante, stay pending.
#  1. idle: the engine process's threads and RSS;
#  2. a download (iperf3 -R) alone;
#  3. PENDING (10000) non-blocking connects to the black hole from the app
#     namespace, held open, while the same download runs (started before
#     them: its speed once they are all sent); meanwhile the process's
#     threads and RSS (the highest seen), and how a new connection to the
#     echo server is answered (connected or refused, and in how long);
#  4. SHORT (20000) short connections (connect, 1 byte echoed, close; 8
#     clients in parallel), then the RSS once the engine is idle again.
# HOST=path runs another build of the benchmark host (e.g. an older commit's,
# for a before/after comparison), PAL=path another pallium (its helpers
# beside it) for the session part.
set -euo pipefail
cd "$(dirname "$0")/../.."
PENDING=${1:-10000}
SHORT=${2:-20000}
SECS=${3:-5}
. extra/bench/dial-ns.sh
bench_require
[ -n "${HOST:-}" ] || HOST=$(bench_host)
[ -x "$HOST" ] || { echo "could not build the benchmark host" >&2; exit 1; }

TAG=t2bb$$
D=${TAG}d A=${TAG}a
bench_init
dial_netns $D
bench_netns $A
ip -n $D route add 192.0.2.0/24 dev web0
ip -n $D neigh add 192.0.2.66 lladdr 02:00:00:00:00:66 dev web0 nud permanent
# dante keeps its own connects to the black hole going after their clients
# are gone: each phase gets a fresh one (start_dante restarts it).
start_dante $D
start_iperf $D
start_echo $D 1024
# Holds N connects to the black hole open until killed; "held" once sent.
cat > "$WORK/flood.py" <<'EOF'
import resource, socket, sys, time
n = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 100, n + 100))
socks = []
for i in range(n):
    s = socket.socket(); s.setblocking(False)
    s.connect_ex(("192.0.2.66", 1 + i % 60000)); socks.append(s)
print("held", flush=True)
time.sleep(3600)
EOF
# One new connection: "connected" or how it failed, and the time it took.
cat > "$WORK/one.py" <<'EOF'
import socket, time
t0 = time.perf_counter()
try:
    c = socket.create_connection(("203.0.113.80", 7007), timeout=30); c.sendall(b"x")
    assert c.recv(1) == b"x"; what = "connected+echo"
except OSError as e:
    what = type(e).__name__
print("%s in %.1f ms" % (what, (time.perf_counter() - t0) * 1000))
EOF
cat > "$WORK/short.py" <<'EOF'
import socket, sys, time
from concurrent.futures import ProcessPoolExecutor
def run(n):
    bad = 0
    for _ in range(n):
        try:
            c = socket.create_connection(("203.0.113.80", 7007), timeout=30); c.sendall(b"x")
            if c.recv(1) != b"x": bad += 1
            c.close()
        except OSError:
            bad += 1
    return bad
n = int(sys.argv[1]); t0 = time.time()
with ProcessPoolExecutor(8) as ex:
    bad = sum(ex.map(run, [n // 8] * 8))
print("%d connections in %.1f s, %d failed" % (n // 8 * 8, time.time() - t0, bad))
EOF
sleep 1

down() { ip netns exec $A iperf3 -J -c 203.0.113.80 -p 5201 -t "$SECS" -R | gbps; }
rss() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
threads() { awk '/^Threads/ {print $2}' "/proc/$1/status"; }

"$HOST" $A $D socks5 127.0.0.1:1080 65000 "$WORK/ready" "$WORK/stop" > "$WORK/host.out" 2>&1 &
HP=$!
PIDS+=($HP)
for _ in $(seq 100); do [ -s "$WORK/ready" ] && break; sleep 0.1; done
[ -s "$WORK/ready" ] || { cat "$WORK/host.out"; exit 1; }
ip netns exec $A python3 "$WORK/one.py" >/dev/null
sleep 1
IDLE=$(rss $HP)
echo "idle:                      threads $(threads $HP), RSS $IDLE MiB"
echo "download alone:            $(down) Gbit/s"

T0=$(date +%s.%N)
ip netns exec $A iperf3 -J -c 203.0.113.80 -p 5201 -t $((SECS + 5)) -R > "$WORK/during.json" 2>&1 &
IP=$!
sleep 2
setsid ip netns exec $A python3 "$WORK/flood.py" "$PENDING" > "$WORK/flood.out" 2>&1 &
FP=$!
PIDS+=($FP)
for _ in $(seq 600); do grep -q held "$WORK/flood.out" 2>/dev/null && break; sleep 0.1; done
HELD=$(python3 -c "import time; print(time.time() - $T0)")
MAXT=0 MAXR=0
sample() {
    local t r
    t=$(threads $HP); r=$(rss $HP)
    [ "$t" -gt "$MAXT" ] && MAXT=$t
    MAXR=$(python3 -c "print(max($MAXR, $r))")
}
for _ in 1 2 3 4 5; do sample; sleep 0.2; done
NEW=$(ip netns exec $A python3 "$WORK/one.py")
while kill -0 $IP 2>/dev/null; do sample; sleep 0.5; done
DL=$(python3 - "$WORK/during.json" "$HELD" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); held = float(sys.argv[2])
iv = [i["sum"] for i in d["intervals"] if i["sum"]["start"] >= held]
b = sum(i["bytes"] for i in iv); t = sum(i["seconds"] for i in iv)
print("%.2f Gbit/s over the %.0f s after the connects were sent" % (b * 8 / t / 1e9, t) if t else "no interval after the flood")
PY
)
echo "$PENDING pending connects:    threads max $MAXT, RSS max $MAXR MiB (engine process)"
echo "  download meanwhile:      $DL"
echo "  a new connection:        $NEW"
kill -- -$FP 2>/dev/null || true
wait $FP 2>/dev/null || true
# The dials still pending end at the engine's connect timeout (5 s).
sleep 6
echo "  after the flood ended:   threads $(threads $HP), RSS $(rss $HP) MiB; new connection: $(ip netns exec $A python3 "$WORK/one.py")"

echo "$SHORT short connections:  $(ip netns exec $A python3 "$WORK/short.py" "$SHORT")"
echo "  right after:             RSS $(rss $HP) MiB"
sleep 7
AFTER=$(rss $HP)
echo "  idle again (7 s later):  threads $(threads $HP), RSS $AFTER MiB ($(python3 -c "print('%+.1f' % ($AFTER - $IDLE))") MiB from idle)"
touch "$WORK/stop"; wait $HP 2>/dev/null || true

# The same flood from inside a pallium session with one socks hop through the
# same dante (root mode, started in the dial namespace as in tun2socks.sh):
# threads and RSS of all of the session's pallium processes together.
PAL=${PAL:-./target/release/pallium}
if [ -x "$PAL" ] && [ -x "$(dirname "$PAL")/pallium-netbroker" ]; then
    start_dante $D
    PROF="$WORK/bench-profile.json"
    echo '{"chain": [{"type": "socks", "address": "127.0.0.1:1080"}], "run": {"command": ["sleep", "600"]}}' > "$PROF"
    setsid ip netns exec $D "$PAL" run --quiet "$PROF" >/dev/null 2>&1 &
    RUN=$!
    PIDS+=($RUN)
    for _ in $(seq 100); do ip netns exec $D "$PAL" exec "$PROF" -- true 2>/dev/null && break; sleep 0.1; done
    # pallium's own processes of the session: its supervisor and helpers.
    session() {
        local pids p t=0 r=0
        pids=$(ps -e -o pid=,ppid=,comm= | python3 -c '
import sys
rows = [l.split(None, 2) for l in sys.stdin]
kids, seen, todo = {}, [], [sys.argv[1]]
for pid, ppid, comm in rows:
    kids.setdefault(ppid, []).append((pid, comm.strip()))
names = {pid: comm.strip() for pid, _, comm in rows}
while todo:
    p = todo.pop()
    if names.get(p, "").startswith("pallium"):
        seen.append(p)
    todo += [c for c, _ in kids.get(p, [])]
print(" ".join(seen))' $RUN)
        for p in $pids; do
            t=$((t + $(threads $p))); r=$((r + $(awk '/^VmRSS/ {print $2}' /proc/$p/status)))
        done
        echo "$t $(awk -v r=$r 'BEGIN {printf "%.1f", r / 1024}')"
    }
    read -r T0 R0 < <(session)
    setsid ip netns exec $D "$PAL" exec --quiet "$PROF" -- python3 -c "$(cat "$WORK/flood.py")" "$PENDING" > "$WORK/pflood.out" 2>&1 &
    PF=$!
    PIDS+=($PF)
    for _ in $(seq 600); do grep -q held "$WORK/pflood.out" 2>/dev/null && break; sleep 0.1; done
    # At once: the dials end at the hop's connect timeout (10 s).
    PNEW=$(ip netns exec $D "$PAL" exec --quiet "$PROF" -- python3 -c "$(cat "$WORK/one.py")")
    MT=0 MR=0
    for _ in $(seq 5); do
        read -r t r < <(session)
        [ "$t" -gt "$MT" ] && MT=$t
        MR=$(python3 -c "print(max($MR, $r))")
        sleep 0.2
    done
    echo "pallium session, idle:     threads $T0, RSS $R0 MiB (supervisor and helpers)"
    echo "  $PENDING pending connects: threads max $MT, RSS max $MR MiB; a new connection: $PNEW"
    kill -- -$PF 2>/dev/null || true
    ip netns exec $D "$PAL" stop "$PROF" >/dev/null 2>&1 || true
else
    echo "(no release build: cargo build --release for the pallium session rows)"
fi
echo "targets: < 64 threads and < 128 MiB with $PENDING pending, the download's speed kept, a new connection answered at once; back within 10 MiB of idle"
