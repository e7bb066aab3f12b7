#!/bin/bash
# OpenVPN hop vs the plain openvpn client on the same server, one run each:
# connect time (start → traffic passes) and iperf3 throughput (10 s up,
# 10 s down). A throwaway server namespace "pbov-s" (203.0.113.90 on a veth
# from the host, UDP 1194, PKI made now, iperf3 on the server's VPN
# address 10.77.0.1), the plain client in namespace "pbov-c"; pallium runs
# as root in namespace "pbov-h" (forwarding on, for its veth uplink). Usage: openvpn.sh [TARGET_DIR] (default target/release).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
BIN=$(realpath "${1:-target/release}")
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
until ip netns exec pbov-c ping -c1 -W1 10.77.0.1 >/dev/null 2>&1; do sleep 0.01; done
t1=$(now)
echo "plain openvpn: connect $(echo "$t1 - $t0" | bc) s"
for dir in "" -R; do
    ip netns exec pbov-c iperf3 -c 10.77.0.1 -t 10 $dir -f m | grep -E "receiver" | sed "s/^/plain openvpn iperf3 ${dir:-up}: /"
done
kill "${PIDS[-1]}"
# Through pallium: connect = `exec --one-shot …` opening a TCP connection to iperf3, minus the same with an empty chain.
echo '{"chain": [{"type": "openvpn", "config": "'"$W"'/hop.ovpn"}]}' > hop.json
echo '{}' > none.json
t0=$(now); ip netns exec pbov-h "$BIN/pallium" exec --one-shot --quiet ./none.json -- true; t1=$(now)
t2=$(now); ip netns exec pbov-h "$BIN/pallium" exec --one-shot --quiet ./hop.json -- bash -c 'exec 3<>/dev/tcp/10.77.0.1/5201'; t3=$(now)
echo "pallium openvpn hop: one-shot $(echo "$t3 - $t2" | bc) s, empty chain $(echo "$t1 - $t0" | bc) s"
for dir in "" -R; do
    ip netns exec pbov-h "$BIN/pallium" exec --one-shot --quiet ./hop.json -- iperf3 -c 10.77.0.1 -t 10 $dir -f m | grep -E "receiver" | sed "s/^/pallium openvpn hop iperf3 ${dir:-up}: /"
done
