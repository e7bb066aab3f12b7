#!/bin/bash
# OpenVPN hop vs the plain openvpn client on the same server: connect time
# (start → traffic passes, one run) and iperf3 throughput with openvpn's CPU
# seconds per GB, alternating plain and hop (vpn-rounds.sh). A throwaway
# server namespace "pbov-s" (203.0.113.90 on a veth from the host, UDP 1194,
# PKI made now, iperf3 on the server's VPN address 10.77.0.1), the plain
# client in namespace "pbov-c"; pallium runs as root in namespace "pbov-h"
# (forwarding on, for its veth uplink).
# Usage: openvpn.sh [TARGET_DIR] [ROUNDS] [BYTES] (default target/release, 3, 300M).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
. "$(dirname "$0")/vpn-rounds.sh"
BIN=$(realpath "${1:-target/release}")
ROUNDS=${2:-3} BYTES=${3:-300M}
W=$(mktemp -d); PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del pbov-s 2>/dev/null || true; ip netns del pbov-c 2>/dev/null || true
    ip netns del pbov-h 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
cd "$W"; chmod 755 "$W"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 1 -subj /CN=ca 2>/dev/null
for n in server client; do
    [ $n = server ] && eku=serverAuth || eku=clientAuth
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyAgreement\nextendedKeyUsage=%s\n' $eku > $n.ext
    openssl req "${ec[@]}" -keyout $n.key -out $n.csr -subj /CN=$n 2>/dev/null
    openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $n.crt -days 1 -extfile $n.ext 2>/dev/null
done
ip netns add pbov-s; ip netns add pbov-c; ip netns add pbov-h
ip -n pbov-h link set lo up
ip link add eth0 netns pbov-h type veth peer name eth0 netns pbov-s
ip -n pbov-h addr add 203.0.113.91/31 dev eth0; ip -n pbov-h link set eth0 up
ip -n pbov-h route add default via 203.0.113.90
ip netns exec pbov-h sysctl -qw net.ipv4.ip_forward=1
ip -n pbov-s addr add 203.0.113.90/31 dev eth0; ip -n pbov-s link set eth0 up; ip -n pbov-s link set lo up
ip link add pbovc type veth peer name eth0 netns pbov-c
ip link set pbovc netns pbov-s
ip -n pbov-s addr add 203.0.113.92/31 dev pbovc; ip -n pbov-s link set pbovc up
ip -n pbov-c addr add 203.0.113.93/31 dev eth0; ip -n pbov-c link set eth0 up; ip -n pbov-c link set lo up
cat > server.conf <<C
dev tun
proto udp4
port 1194
topology subnet
server 10.77.0.0 255.255.255.0
ca $W/ca.crt
cert $W/server.crt
key $W/server.key
dh none
keepalive 1 10
duplicate-cn
push "redirect-gateway def1"
verb 1
C
ip netns exec pbov-s openvpn --config server.conf > server.log 2>&1 & PIDS+=($!)
until grep -q "Initialization Sequence Completed" server.log; do sleep 0.05; done
ip netns exec pbov-s iperf3 -s -B 10.77.0.1 -D --logfile iperf.log
client() { # $1: server address
    printf 'client\ndev tun\nproto udp\nremote %s 1194\nnobind\nremote-cert-tls server\nverb 1\n<ca>\n%s\n</ca>\n<cert>\n%s\n</cert>\n<key>\n%s\n</key>\n' \
        "$1" "$(cat ca.crt)" "$(cat client.crt)" "$(cat client.key)"
}
client 203.0.113.92 > plain.ovpn; client 203.0.113.90 > hop.ovpn; chmod 644 ./*.ovpn
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
