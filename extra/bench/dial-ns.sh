# Sourced by the SOCKS benchmarks (tun2socks.sh, tun2socks-bounds.sh,
# engine-session.sh): their common throwaway setup. A "dial" namespace with
# dante (SOCKS5 on 127.0.0.1:1080, no authentication), iperf3 on
# 203.0.113.80:5201 and, where asked, a TCP echo server on 203.0.113.80:7007;
# a work directory; and one cleanup on exit that stops every server (their
# process groups too: servers started with setsid) and deletes the
# namespaces. Not a script of its own.

# Root and the tools every benchmark uses, plus any named.
bench_require() {
    [ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
    local c
    for c in danted iperf3 python3 ip "$@"; do
        command -v "$c" >/dev/null || { echo "needs $c" >&2; exit 1; }
    done
}

# WORK (a temporary directory), PIDS (servers to stop), NETNS (namespaces
# to delete) and the cleanup that undoes them on exit.
bench_init() {
    WORK=$(mktemp -d)
    PIDS=()
    NETNS=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    local p n
    for p in "${PIDS[@]}"; do kill -- -"$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for n in "${NETNS[@]}"; do ip netns del "$n" 2>/dev/null || true; rm -rf "/etc/netns/$n"; done
    rm -rf "$WORK"
}

# The in-process engine host (netbroker/benches/tun2socks.rs), built.
bench_host() {
    cargo bench -q -p pallium-netbroker --bench tun2socks --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "tun2socks" and m.get("executable"):
        print(m["executable"])'
}

# A namespace (deleted at exit) with lo up.
bench_netns() {
    ip netns add "$1"
    NETNS+=("$1")
    ip -n "$1" link set lo up
}

# The dial namespace $1: web0 (203.0.113.80/24) up, and dante's
# configuration in $WORK/danted.conf, listening on 127.0.0.1 and on each
# further address given (e.g. for a second client namespace).
dial_netns() {
    local ns=$1 a
    shift
    bench_netns "$ns"
    ip -n "$ns" link add web0 type veth peer name web1
    ip -n "$ns" addr add 203.0.113.80/24 dev web0
    ip -n "$ns" link set web0 up
    ip -n "$ns" link set web1 up
    {
        echo "logoutput: $WORK/danted.log"
        echo "internal: 127.0.0.1 port = 1080"
        for a in "$@"; do echo "internal: $a port = 1080"; done
        cat <<'CONF'
external: web0
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 0/0 to: 0/0 }
socks pass { from: 0/0 to: 0/0 command: bind connect udpassociate bindreply udpreply }
CONF
    } > "$WORK/danted.conf"
}

# (Re)start dante in namespace $1, in a session of its own (its forked
# workers go with it), and wait until it listens. DANTE is its pid.
DANTE=
start_dante() {
    [ -n "$DANTE" ] && { kill -- -"$DANTE" 2>/dev/null || true; sleep 0.5; }
    setsid ip netns exec "$1" danted -f "$WORK/danted.conf" -p "$WORK/danted.pid" -N 2 >/dev/null 2>&1 &
    DANTE=$!
    PIDS+=("$DANTE")
    local _
    for _ in $(seq 50); do ip netns exec "$1" ss -tln | grep -q 127.0.0.1:1080 && break; sleep 0.1; done
}

# iperf3's server on 203.0.113.80:5201 in namespace $1.
start_iperf() {
    setsid ip netns exec "$1" iperf3 -s -B 203.0.113.80 -p 5201 >/dev/null 2>&1 &
    PIDS+=($!)
}

# A TCP echo server on 203.0.113.80:7007 in namespace $1 (a thread per
# connection, backlog $2).
start_echo() {
    cat > "$WORK/echo.py" <<PY
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("203.0.113.80", 7007)); s.listen(${2:-128})
def serve(c):
    while True:
        d = c.recv(4096)
        if not d: break
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
    setsid ip netns exec "$1" python3 "$WORK/echo.py" &
    PIDS+=($!)
}

# Gbit/s received, from iperf3 -J on stdin.
gbps() { python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.2f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))'; }
