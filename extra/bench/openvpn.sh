#!/bin/bash
# OpenVPN hop vs the plain openvpn client on the same server: connect time
# (start → traffic passes, one run) and iperf3 throughput with openvpn's CPU
# seconds per GB, alternating plain and hop (vpn-rounds.sh). A throwaway
# server namespace "pbov-s" (openvpn-server.sh: 203.0.113.90, UDP 1194, PKI
# made now, iperf3 on the server's VPN address 10.77.0.1), the plain client
# in namespace "pbov-c" (203.0.113.92 on a second veth of the server's);
# pallium runs as root in namespace "pbov-h" (forwarding on, for its veth
# uplink).
# Usage: openvpn.sh [TARGET_DIR] [ROUNDS] [BYTES] (default target/release, 3, 300M).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
. "$(dirname "$0")/vpn-rounds.sh"
BIN=$(realpath "${1:-target/release}")
ROUNDS=${2:-3} BYTES=${3:-300M}
W=$(mktemp -d); PIDS=()
. "$(dirname "$0")/openvpn-server.sh"
cleanup() {
    ovs_cleanup
    ip netns del pbov-c 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
cd "$W"; chmod 755 "$W"
ovs_start
ip netns add pbov-c
ip link add pbovc type veth peer name eth0 netns pbov-c
ip link set pbovc netns pbov-s
ip -n pbov-s addr add 203.0.113.92/31 dev pbovc; ip -n pbov-s link set pbovc up
ip -n pbov-c addr add 203.0.113.93/31 dev eth0; ip -n pbov-c link set eth0 up; ip -n pbov-c link set lo up
ovs_client 203.0.113.92 > plain.ovpn; ovs_client 203.0.113.90 > hop.ovpn; chmod 644 ./*.ovpn
now() { date +%s.%N; }
# Plain client: connect = start → first ping answered through the tunnel.
t0=$(now)
ip netns exec pbov-c openvpn --config plain.ovpn > plain.log 2>&1 & PIDS+=($!)
PLAIN=${PIDS[-1]}
until ip netns exec pbov-c ping -c1 -W1 10.77.0.1 >/dev/null 2>&1; do sleep 0.01; done
t1=$(now)
echo "plain openvpn: connect $(echo "$t1 - $t0" | bc) s"
# Through pallium: connect = `exec --one-shot …` opening a TCP connection to iperf3, minus the same with an empty chain.
echo '{"chain": [{"type": "openvpn", "config": "'"$W"'/hop.ovpn"}]}' > hop.json
echo '{}' > none.json
t0=$(now); ip netns exec pbov-h "$BIN/pallium" exec --one-shot --quiet ./none.json -- true; t1=$(now)
t2=$(now); ip netns exec pbov-h "$BIN/pallium" exec --one-shot --quiet ./hop.json -- bash -c 'exec 3<>/dev/tcp/10.77.0.1/5201'; t3=$(now)
echo "pallium openvpn hop: one-shot $(echo "$t3 - $t2" | bc) s, empty chain $(echo "$t1 - $t0" | bc) s"
# Throughput: both clients stay connected (the server allows the one
# certificate twice) and take turns, plain and hop alternating (A B, B A, …)
# so that load from elsewhere hits both alike; openvpn's CPU seconds per GB
# (its own process, plain or the hop's) hardly move under load.
echo '{"chain": [{"type": "openvpn", "config": "'"$W"'/hop.ovpn"}], "run": {"command": ["sleep", "600"]}}' > run.json
ip netns exec pbov-h "$BIN/pallium" run --quiet ./run.json >/dev/null 2>&1 & RUN=$!; PIDS+=($RUN)
until ip netns exec pbov-h "$BIN/pallium" exec ./run.json -- bash -c 'exec 3<>/dev/tcp/10.77.0.1/5201' 2>/dev/null; do sleep 0.1; done
descendants() { for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done; }
HOP=""
for p in $(descendants $RUN); do [ "$(cat /proc/$p/comm 2>/dev/null)" = openvpn ] && HOP=$p; done
[ -n "$HOP" ] || { echo "no openvpn under pallium run ($RUN)" >&2; exit 1; }
vpn_rounds "$PLAIN" "ip netns exec pbov-c" "$HOP" "ip netns exec pbov-h $BIN/pallium exec --quiet ./run.json --" 10.77.0.1
