# shellcheck shell=bash
# Shared by openvpn.sh and vopono.sh (sourced): a throwaway OpenVPN server
# for a client namespace, with a PKI made now (one day, EC P-256).
#   namespace "pbov-s": the server, 203.0.113.90 on eth0, UDP 1194, VPN
#     subnet 10.77.0.0/24 (server 10.77.0.1, pushes redirect-gateway def1,
#     allows one certificate twice), iperf3 on 10.77.0.1
#   namespace "pbov-h": the client side, 203.0.113.91 on a veth to the
#     server, default route via it, forwarding on (for the tools' uplinks)
# Nothing else is reachable from either namespace.
#   ovs_start        make the PKI and both namespaces, start openvpn and
#                    iperf3; run it in the work directory $W (made by the
#                    caller, removed by it), appends its pids to PIDS
#   ovs_client ADDR  print a client .ovpn for the server at ADDR (inline keys)
#   ovs_cleanup      stop what ovs_start started, delete both namespaces
# Requires root, openssl, openvpn, iperf3, ip.

ovs_start() {
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes) n eku
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 1 -subj /CN=ca 2>/dev/null
    for n in server client; do
        [ $n = server ] && eku=serverAuth || eku=clientAuth
        printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyAgreement\nextendedKeyUsage=%s\n' $eku > $n.ext
        openssl req "${ec[@]}" -keyout $n.key -out $n.csr -subj /CN=$n 2>/dev/null
        openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $n.crt -days 1 -extfile $n.ext 2>/dev/null
    done
    ip netns add pbov-s; ip netns add pbov-h
    ip -n pbov-h link set lo up
    ip link add eth0 netns pbov-h type veth peer name eth0 netns pbov-s
    ip -n pbov-h addr add 203.0.113.91/31 dev eth0; ip -n pbov-h link set eth0 up
    ip -n pbov-h route add default via 203.0.113.90
    ip netns exec pbov-h sysctl -qw net.ipv4.ip_forward=1
    ip -n pbov-s addr add 203.0.113.90/31 dev eth0; ip -n pbov-s link set eth0 up; ip -n pbov-s link set lo up
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
    until grep -qs "Initialization Sequence Completed" server.log; do sleep 0.05; done
    ip netns exec pbov-s iperf3 -s -B 10.77.0.1 -D --logfile iperf.log --pidfile "$W/iperf.pid"
    until [ -s "$W/iperf.pid" ]; do sleep 0.05; done
}

ovs_client() { # $1: server address
    printf 'client\ndev tun\nproto udp\nremote %s 1194\nnobind\nremote-cert-tls server\nverb 1\n<ca>\n%s\n</ca>\n<cert>\n%s\n</cert>\n<key>\n%s\n</key>\n' \
        "$1" "$(cat "$W/ca.crt")" "$(cat "$W/client.crt")" "$(cat "$W/client.key")"
}

ovs_cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    # iperf3 -D forks away from PIDS: its pid file names it.
    [ -s "$W/iperf.pid" ] && kill "$(tr -d '\0' < "$W/iperf.pid")" 2>/dev/null
    wait 2>/dev/null || true
    ip netns del pbov-s 2>/dev/null || true
    ip netns del pbov-h 2>/dev/null || true
}
