#!/bin/bash
# WireGuard hop (userspace WireGuard in pallium's packet engine) vs plain
# wireguard-go on the same wireguard-go server: connect time (start → traffic
# passes, one run), iperf3 throughput with the CPU seconds per GB of the
# process doing the VPN's work, alternating plain and hop (vpn-rounds.sh),
# and the client side's peak RSS over the transfers (the engine process vs
# the wireguard-go client). A throwaway server namespace "pbwg<pid>-s"
# (203.0.113.90 on a veth from pallium's namespace, wireguard-go on UDP 51820,
# keys made now, iperf3 on the server's tunnel address 10.78.0.1), the plain
# client in "pbwg<pid>-c"; pallium runs as root in "pbwg<pid>-h" (forwarding
# on, for its veth uplink). Usage: wireguard.sh [TARGET_DIR] [ROUNDS] [BYTES]
# (default target/release, 3, 300M).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
for t in wireguard-go wg iperf3 bc; do
    command -v $t >/dev/null || { echo "needs $t" >&2; exit 1; }
done
. "$(dirname "$0")/vpn-rounds.sh"
BIN=$(realpath "${1:-target/release}")
ROUNDS=${2:-3} BYTES=${3:-300M}
S=pbwg$$-s C=pbwg$$-c H=pbwg$$-h
# wireguard-go's control sockets are shared by every namespace: unique names.
SIF=pbwgs$$ CIF=pbwgc$$
W=$(mktemp -d); PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for n in $S $C $H; do ip netns del $n 2>/dev/null || true; done
    rm -f /var/run/wireguard/$SIF.sock /var/run/wireguard/$CIF.sock
    rm -rf "$W"
}
trap cleanup EXIT
cd "$W"; chmod 755 "$W"
umask 077
for k in server plain hop; do wg genkey > $k.key; wg pubkey < $k.key > $k.pub; done
umask 022
ip netns add $S; ip netns add $C; ip netns add $H
ip -n $H link set lo up
ip link add eth0 netns $H type veth peer name eth0 netns $S
ip -n $H addr add 203.0.113.91/31 dev eth0; ip -n $H link set eth0 up
ip -n $H route add default via 203.0.113.90
ip netns exec $H sysctl -qw net.ipv4.ip_forward=1
ip -n $S addr add 203.0.113.90/31 dev eth0; ip -n $S link set eth0 up; ip -n $S link set lo up
ip link add pbwgc$$ type veth peer name eth0 netns $C
ip link set pbwgc$$ netns $S
ip -n $S addr add 203.0.113.92/31 dev pbwgc$$; ip -n $S link set pbwgc$$ up
ip -n $C addr add 203.0.113.93/31 dev eth0; ip -n $C link set eth0 up; ip -n $C link set lo up

# wireguard-go in namespace $1 as interface $2 (foreground, so $! is its pid).
wggo() {
    ip netns exec "$1" wireguard-go -f "$2" > "$2.log" 2>&1 & PIDS+=($!)
    until [ -S /var/run/wireguard/$2.sock ]; do sleep 0.01; done
}
wggo $S $SIF
ip netns exec $S wg set $SIF listen-port 51820 private-key server.key \
    peer "$(cat plain.pub)" allowed-ips 10.78.0.2/32 peer "$(cat hop.pub)" allowed-ips 10.78.0.3/32
ip -n $S addr add 10.78.0.1/24 dev $SIF; ip -n $S link set $SIF up
ip netns exec $S iperf3 -s -B 10.78.0.1 -D --logfile iperf.log
sleep 0.2

now() { date +%s.%N; }
# Peak VmRSS (KiB) of pid $1, sampled every 0.2 s until it exits or $2 exists.
peak_rss() {
    local max=0 r
    while [ -e /proc/$1 ] && [ ! -e "$2" ]; do
        r=$(awk '/^VmRSS:/ {print $2}' /proc/$1/status 2>/dev/null || echo 0)
        [ "${r:-0}" -gt "$max" ] && max=$r
        sleep 0.2
    done
    echo $max
}

# Plain wireguard-go: connect = start → first ping answered through the tunnel.
t0=$(now)
wggo $C $CIF
CPID=${PIDS[-1]}
ip netns exec $C wg set $CIF private-key plain.key \
    peer "$(cat server.pub)" endpoint 203.0.113.92:51820 allowed-ips 10.78.0.0/24
ip -n $C addr add 10.78.0.2/24 dev $CIF; ip -n $C link set $CIF up
until ip netns exec $C ping -c1 -W1 10.78.0.1 >/dev/null 2>&1; do sleep 0.01; done
t1=$(now)
echo "plain wireguard-go: connect $(echo "$t1 - $t0" | bc) s"

# Through pallium: connect = `exec --one-shot …` opening a TCP connection to
# iperf3, minus the same with an empty chain.
cat > hop.conf <<C
[Interface]
PrivateKey = $(cat hop.key)
Address = 10.78.0.3/32

[Peer]
PublicKey = $(cat server.pub)
AllowedIPs = 10.78.0.0/24
Endpoint = 203.0.113.90:51820
C
chmod 644 hop.conf
echo '{"chain": [{"type": "wireguard", "config": "'"$W"'/hop.conf"}]}' > hop.json
echo '{}' > none.json
t0=$(now); ip netns exec $H "$BIN/pallium" exec --one-shot --quiet ./none.json -- true; t1=$(now)
t2=$(now); ip netns exec $H "$BIN/pallium" exec --one-shot --quiet ./hop.json -- bash -c 'exec 3<>/dev/tcp/10.78.0.1/5201'; t3=$(now)
echo "pallium wireguard hop: one-shot $(echo "$t3 - $t2" | bc) s, empty chain $(echo "$t1 - $t0" | bc) s"

# Throughput: both clients stay up and take turns (vpn-rounds.sh); the
# engine's and wireguard-go's peak RSS over all the transfers.
echo '{"chain": [{"type": "wireguard", "config": "'"$W"'/hop.conf"}], "run": {"command": ["sleep", "600"]}}' > run.json
ip netns exec $H "$BIN/pallium" run --quiet ./run.json >/dev/null 2>&1 & RUN=$!; PIDS+=($RUN)
until ip netns exec $H "$BIN/pallium" exec ./run.json -- bash -c 'exec 3<>/dev/tcp/10.78.0.1/5201' 2>/dev/null; do sleep 0.1; done
descendants() { for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done; }
ENGINE=""
for p in $(descendants $RUN); do
    grep -qa -- --packet-engine /proc/$p/cmdline 2>/dev/null && ENGINE=$p
done
[ -n "$ENGINE" ] || { echo "no packet engine under pallium run ($RUN)" >&2; exit 1; }
peak_rss "$CPID" done > rss.plain & S1=$!
peak_rss "$ENGINE" done > rss.hop & S2=$!
vpn_rounds "$CPID" "ip netns exec $C" "$ENGINE" "ip netns exec $H $BIN/pallium exec --quiet ./run.json --" 10.78.0.1
touch done; wait $S1 $S2
echo "peak RSS: wireguard-go client $(cat rss.plain) KiB, pallium's packet engine $(cat rss.hop) KiB"
ip netns exec $H "$BIN/pallium" stop ./run.json >/dev/null 2>&1 || true
