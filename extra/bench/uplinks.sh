#!/usr/bin/env bash
# The rootless empty chain's uplinks side by side, in one run:
#   ./extra/bench/uplinks.sh [RUNS] [SECONDS] [BIN_DIR]        (as root)
# BIN_DIR holds pallium and its helpers (default: target/release of this tree).
# Builds a throwaway "host" namespace (the network an unprivileged user sees:
# 203.0.113.1/24 and 2001:db8:b::1/64, default routes to the server) and a
# server namespace (203.0.113.80 and 2001:db8:b::80, iperf3 -s), joined by a
# veth pair; creates an unprivileged user (removed at exit). As that user in
# the host namespace, for network.uplink pasta, slirp4netns and direct:
# iperf3 upload and download (-R) through `pallium exec --one-shot`, RUNS runs
# of SECONDS each (median and minimum, Gbit/s; IPv4), and one-shot startup
# (`pallium exec --one-shot PROFILE -- true`, hyperfine, mean ± σ and min).
# Also checks each uplink's IPv6, UDP (DNS answered), and ICMP echo.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-5}; SECS=${2:-3}; BIN=${3:-target/release}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
for c in iperf3 hyperfine python3 ip useradd setpriv; do
    command -v $c >/dev/null || { echo "needs $c" >&2; exit 1; }
done
for b in pallium pallium-netbroker pallium-sandboxer; do
    [ -x "$BIN/$b" ] || { echo "no $BIN/$b (cargo build --release)" >&2; exit 1; }
done
TAG=upl$$
H=${TAG}h S=${TAG}s U=plupl$$
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pkill -u "$U" 2>/dev/null || true
    ip netns del $H 2>/dev/null || true
    ip netns del $S 2>/dev/null || true
    rm -rf /etc/netns/$H
    userdel "$U" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add $H; ip netns add $S
ip -n $H link set lo up; ip -n $S link set lo up
ip -n $H link add eth0 type veth peer name eth0 netns $S
ip -n $H addr add 203.0.113.1/24 dev eth0
ip -n $H addr add 2001:db8:b::1/64 dev eth0 nodad
ip -n $S addr add 203.0.113.80/24 dev eth0
ip -n $S addr add 2001:db8:b::80/64 dev eth0 nodad
ip -n $H link set eth0 up; ip -n $S link set eth0 up
ip -n $H route add default via 203.0.113.80
ip -n $H -6 route add default via 2001:db8:b::80
# Ping sockets for the user's groups in the host namespace (per namespace).
ip netns exec $H sysctl -qw net.ipv4.ping_group_range="0 2147483647"
ip netns exec $S iperf3 -s -p 5201 >/dev/null 2>&1 &
PIDS+=($!)
# A DNS server the uplinks forward to: answers every A query with the server.
cat > "$WORK/dns.py" <<'PY'
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("203.0.113.80", 53))
while True:
    q, a = s.recvfrom(512)
    r = q[:2] + b"\x81\x80" + q[4:6] + b"\x00\x01\x00\x00\x00\x00" + q[12:]
    r += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton("203.0.113.80")
    s.sendto(r, a)
PY
ip netns exec $S python3 "$WORK/dns.py" &
PIDS+=($!)
mkdir -p /etc/netns/$H
echo "nameserver 203.0.113.80" > /etc/netns/$H/resolv.conf
sleep 0.5

useradd --no-create-home --home-dir "$WORK/home" --shell /bin/sh "$U"
mkdir -p "$WORK/home" "$WORK/run" "$WORK/bin"
cp "$BIN/pallium" "$BIN/pallium-netbroker" "$BIN/pallium-sandboxer" "$WORK/bin/"
chown "$U:" "$WORK/home" "$WORK/run"; chmod 0700 "$WORK/run"; chmod 0755 "$WORK" "$WORK/bin"
for u in pasta slirp4netns direct; do
    echo "{\"network\": {\"uplink\": \"$u\"}}" > "$WORK/$u.json"
done
chmod 0644 "$WORK"/*.json
as_user() {
    ip netns exec $H setpriv --reuid "$U" --regid "$(id -g "$U")" --clear-groups --reset-env \
        /usr/bin/env HOME="$WORK/home" XDG_RUNTIME_DIR="$WORK/run" PATH=/usr/bin:/bin "$@"
}
gbit() { python3 -c 'import json,sys
try: print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))
except Exception: print("fail")'; }
stats() { python3 -c 'import statistics,sys
v=[float(x) for x in sys.argv[1:] if x!="fail"]; f=len(sys.argv)-1-len(v)
print("median %5.2f  min %5.2f  (%s)%s" % (statistics.median(v), min(v), " ".join(sys.argv[1:]), " %d failed" % f if f else "") if v else "all failed")' "$@"; }

# One ICMP echo through a ping socket (what ping does unprivileged).
PING='import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); s.settimeout(2)
s.sendto(b"\x08\x00\x00\x00\x00\x00\x00\x01ping", (sys.argv[1], 0))
print("ok" if s.recv(100)[0] == 0 else "bad")'
echo "# rootless empty chain, $RUNS runs x ${SECS}s each, IPv4 iperf3 to a server namespace; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for u in pasta slirp4netns direct; do
    P="$WORK/bin/pallium exec --one-shot --quiet $WORK/$u.json --"
    ups=(); downs=()
    for _ in $(seq "$RUNS"); do
        ups+=("$(as_user $P iperf3 -c 203.0.113.80 -t "$SECS" -J 2>/dev/null | gbit)")
        downs+=("$(as_user $P iperf3 -c 203.0.113.80 -t "$SECS" -R -J 2>/dev/null | gbit)")
    done
    echo "$u"
    echo "  upload   Gbit/s $(stats "${ups[@]}")"
    echo "  download Gbit/s $(stats "${downs[@]}")"
    # Completeness: IPv6 TCP, UDP (a DNS query answered), ICMP echo.
    v6=$(as_user $P iperf3 -6 -c 2001:db8:b::80 -t 1 -J 2>/dev/null | gbit)
    dns=$(as_user $P python3 -c 'import socket; print(socket.gethostbyname("server.example"))' 2>/dev/null || echo fail)
    ping=$(as_user $P python3 -c "$PING" 203.0.113.80 2>/dev/null || echo fail)
    echo "  IPv6 TCP $v6 Gbit/s, DNS (UDP) -> $dns, ping $ping"
    as_user hyperfine -N -w 3 -r 20 --export-json "$WORK/home/$u.hf.json" \
        "$WORK/bin/pallium exec --one-shot --quiet $WORK/$u.json -- true" >/dev/null 2>&1 || true
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]
print("  startup (one-shot, true): mean %.1f ms ± %.1f, min %.1f ms" % (r["mean"]*1e3, r["stddev"]*1e3, r["min"]*1e3))' "$WORK/home/$u.hf.json" 2>/dev/null || echo "  startup: hyperfine failed"
done
