#!/bin/bash
# pallium's openvpn hop next to vopono (doc/COMPARISON.md), both as root on
# the same throwaway OpenVPN server (openvpn-server.sh: namespace "pbov-s",
# 203.0.113.90, VPN address 10.77.0.1), both started in namespace "pbov-h",
# whose only way out is the veth to the server:
#  (a) one-shot wall time: start the tunnel, fetch a page from a tiny HTTP
#      server on the VPN address (curl), tear down; ROUNDS runs of each,
#      alternating (A B, B A, …); median, min, max;
#  (b) the memory (VmRSS, and PSS) of each tool's own processes while a
#      `sleep` runs inside, openvpn and the sleep not counted (both tools run
#      the same openvpn); every process counted is listed;
#  (c) kill switch: a loop inside sends marked UDP datagrams to the server's
#      VPN address (10.77.0.1:9999) and to its address outside the tunnel
#      (203.0.113.90, port 9999 and openvpn's own port 1194), 10 a second
#      each; an nftables table in the server's namespace counts what arrives
#      through the tunnel and what arrives outside it, for 2 s with the
#      tunnel up, then for 3 s after the client's openvpn is killed
#      (SIGKILL, as a crash would); vopono with and without --no-killswitch.
# vopono is run as root with its configuration in a temporary directory
# (XDG_CONFIG_HOME), in a session of its own (setsid: what it leaves running
# is found by session id at exit) and in the mount namespace of `ip netns
# exec` with an empty tmpfs on /run/netns: vopono deletes every named
# network namespace it finds without a lockfile of its own and without
# processes (its clean_dead_namespaces) — pbov-h, or namespaces of anything
# else on the machine. The wrapper's own cost is measured and printed. (A
# PID namespace, tried first, made vopono refuse nearly every start: see
# REFUSED below.)
# Usage: vopono.sh [TARGET_DIR] [ROUNDS] [VOPONO] (default target/release, 10,
# vopono from PATH). Needs root, openvpn, openssl, iperf3, curl, python3,
# nft, unshare (util-linux).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
HERE=$(dirname "$(realpath "$0")")
BIN=$(realpath "${1:-target/release}")
ROUNDS=${2:-10}
VOPONO=$(command -v "${3:-vopono}") || { echo "vopono not found: ${3:-vopono}" >&2; exit 1; }
VOPONO=$(realpath "$VOPONO")
PY=/usr/bin/python3; [ -x $PY ] || PY=$(command -v python3)
W=$(mktemp -d); PIDS=()
# shellcheck source=openvpn-server.sh
. "$HERE/openvpn-server.sh"
NS=pbov-vo                      # vopono's namespace (--custom-netns-name)
RUN_VOPONO_EXISTED=0; [ -e /run/vopono ] && RUN_VOPONO_EXISTED=1
RUN_BEFORE=$(ls -d /run/vopono-openvpn-* 2>/dev/null || true)
cleanup() {
    local p
    local sid
    # pallium sessions and vopono, then what is left in vopono's sessions
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    # (only those outside this script's network namespace: a session id
    # whose leader has ended may be reused by an unrelated process)
    [ -s "$W/sids" ] && while read -r sid; do
        for p in $(ps -eo pid=,sid= | awk -v s="$sid" '$2 == s {print $1}'); do
            [ "$(readlink "/proc/$p/ns/net")" = "$(readlink /proc/$$/ns/net)" ] ||
                kill -9 "$p" 2>/dev/null || true
        done
    done < "$W/sids"
    ovs_cleanup
    rm -rf "/etc/netns/$NS"
    for p in /run/vopono-openvpn-*; do
        [ -e "$p" ] || continue
        grep -qxF "$p" <<<"$RUN_BEFORE" || rm -rf "$p"
    done
    [ $RUN_VOPONO_EXISTED = 1 ] || rm -rf /run/vopono
    rm -rf "$W"
}
trap cleanup EXIT
cd "$W"; chmod 755 "$W"
load() { echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"; }
echo "vopono: $("$VOPONO" --version 2>&1 | head -1); pallium: $("$BIN/pallium" --version 2>&1 | head -1)"
echo "openvpn: $(openvpn --version | head -1 | cut -d' ' -f1-2); kernel $(uname -r)"
load
ovs_start
ovs_client 203.0.113.90 > hop.ovpn; chmod 644 hop.ovpn
echo '{"chain": [{"type": "openvpn", "config": "'"$W"'/hop.ovpn"}]}' > hop.json
# A page to fetch on the server's VPN address.
mkdir www; echo ok > www/index.html
ip netns exec pbov-s "$PY" -m http.server --bind 10.77.0.1 --directory "$W/www" 8080 >/dev/null 2>&1 & PIDS+=($!)
until ip netns exec pbov-s curl -sf http://10.77.0.1:8080/ >/dev/null; do sleep 0.05; done
install -d -m 0700 "$W/xdg"; install -d -m 0700 "$W/home"

# Commands (arrays, so that `&` gives the pid of the tool itself: ip netns
# exec, setsid, sh and env exec it). vopono's wrapper: a session of its own
# (its id noted in $W/sids), an empty /run/netns.
PALLIUM=(ip netns exec pbov-h "$BIN/pallium" exec --one-shot --quiet ./hop.json --)
# shellcheck disable=SC2016 # for sh
WRAP=(ip netns exec pbov-h setsid
    sh -c 'echo $$ >> "$0"; mount -t tmpfs pbov-vo-netns /run/netns && exec "$@"' "$W/sids")
# --interface: vopono's own choice of uplink takes the name from `ip addr`,
# which on a veth is "eth0@if2", and its masquerade rule for that name
# matches nothing (the handshake then times out after 60 s).
VOPONO_EXEC=("${WRAP[@]}" env HOME="$W/home" XDG_CONFIG_HOME="$W/xdg" "$VOPONO" exec
    --provider custom --protocol openvpn --custom "$W/hop.ovpn" --custom-netns-name "$NS"
    --interface eth0)
ms() { echo $(( $(date +%s%N) / 1000000 )); }
summary() { # label, then ms values
    local label=$1; shift
    $PY - "$label" "$@" <<'PY'
import statistics, sys
v = [int(x) for x in sys.argv[2:]]
print(f"  {sys.argv[1]:34} median {statistics.median(v):.0f} ms, min {min(v)}, max {max(v)} ({len(v)} runs)")
PY
}

descendants() { local c; for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done; }
# The first descendant of $1 whose comm is $2, looking for up to $3 s (60;
# 0: once).
find_comm() {
    local n=$((${3:-60} * 10)) i=0 p
    while :; do
        for p in $(descendants "$1"); do
            [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] && { echo "$p"; return 0; }
        done
        i=$((i + 1)); [ "$i" -lt "$n" ] || return 1
        sleep 0.1
    done
}
# vopono 1.0.2 starts the application as `ip netns exec NS sudo …` and
# checks at once that the new process is in NS: when it looks before ip
# has entered NS, it refuses ("Refusing to launch application: PID … is not
# in network namespace", then tears down). Such runs are counted, and
# retried (up to 5 times), not timed.
REFUSED="Refusing to launch application"
NREFUSED=0
# Start CMD… in the background until a process named $1 runs under it;
# BG = its pid. $2: the log for its stderr.
start_until() {
    local want=$1 log=$2 try i; shift 2
    for try in 1 2 3 4 5; do
        "$@" </dev/null >/dev/null 2>"$log.try" & BG=$!; PIDS+=("$BG")
        for i in $(seq 600); do
            find_comm "$BG" "$want" 0 >/dev/null && { cat "$log.try" >> "$log"; return 0; }
            grep -q '^State:.*Z' "/proc/$BG/status" 2>/dev/null && break
            sleep 0.1
        done
        wait "$BG" 2>/dev/null || true
        cat "$log.try" >> "$log"
        grep -q "$REFUSED" "$log.try" || break
        NREFUSED=$((NREFUSED + 1))
    done
    echo "no $want under $* (try $try); $log:" >&2; tail -20 "$log" >&2
    return 1
}

echo
echo "(a) one-shot: tunnel up, curl http://10.77.0.1:8080/, tear down; $ROUNDS rounds, alternating"
load
T_P=() T_V=() T_W=()
URL=http://10.77.0.1:8080/
for r in $(seq "$ROUNDS"); do
    order="pallium vopono"; [ $((r % 2)) = 0 ] && order="vopono pallium"
    for tool in $order; do
        for try in 1 2 3 4 5; do
            t0=$(ms)
            if [ "$tool" = pallium ]; then
                out=$(timeout 60 "${PALLIUM[@]}" curl -sf "$URL" 2>try.log) || true
            else
                out=$(timeout 60 "${VOPONO_EXEC[@]}" "curl -sf $URL" 2>try.log) || true
            fi
            t1=$(ms)
            cat try.log >> "$tool.log"
            # (vopono's stdout also carries a sysctl's output)
            grep -qx ok <<<"$out" && break
            if [ "$tool" = vopono ] && grep -q "$REFUSED" try.log && [ "$try" -lt 5 ]; then
                NREFUSED=$((NREFUSED + 1)); continue
            fi
            echo "round $r: $tool did not fetch the page (got '$out'); its log:" >&2; tail -20 try.log >&2; exit 1
        done
        if [ "$tool" = pallium ]; then T_P+=($((t1 - t0))); else T_V+=($((t1 - t0))); fi
    done
    t0=$(ms); "${WRAP[@]}" true; t1=$(ms); T_W+=($((t1 - t0)))
    echo "  round $r: pallium ${T_P[-1]} ms, vopono ${T_V[-1]} ms (its wrapper alone ${T_W[-1]} ms); $(load)"
done
summary "pallium exec --one-shot (hop)" "${T_P[@]}"
summary "vopono exec --custom (wrapped)" "${T_V[@]}"
summary "the wrapper alone (setsid, mount)" "${T_W[@]}"
echo "  vopono refused to start the application (retried): $NREFUSED times so far"

# Memory of the tree under $1 but for the comms listed after it: one line
# per process (comm pid RSS), then the sums.
tree_mem() {
    local root=$1 p c rss pss srss=0 spss=0 list=""; shift
    for p in "$root" $(descendants "$root"); do
        c=$(cat "/proc/$p/comm" 2>/dev/null) || continue
        case " $* " in *" $c "*) continue;; esac
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        pss=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
        srss=$((srss + ${rss:-0})); spss=$((spss + ${pss:-0}))
        list+=" $c($p) ${rss:-0}k;"
    done
    echo "  counted:$list"
    awk -v r="$srss" -v s="$spss" 'BEGIN {printf "  sum: RSS %.1f MiB, PSS %.1f MiB\n", r/1024, s/1024}'
}
stop() { # PID [INNER]: ends INNER (the command inside) if given, else
    # TERMs PID; KILLs PID if it has not ended 10 s later.
    kill "${2:-$1}" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
}

echo
echo "(b) memory while \`sleep 600\` runs inside (openvpn and the sleep not counted)"
load
start_until sleep pallium.log "${PALLIUM[@]}" sleep 600; P=$BG
sleep 1
echo " pallium exec --one-shot hop.json -- sleep 600:"
tree_mem "$P" sleep openvpn
stop "$P" "$(find_comm "$P" sleep 0)"
start_until sleep vopono.log "${VOPONO_EXEC[@]}" "sleep 600"; V=$BG
sleep 1
echo " vopono exec --custom hop.ovpn \"sleep 600\":"
tree_mem "$V" sleep openvpn
stop "$V" "$(find_comm "$V" sleep 0)"

echo
echo "(c) kill switch: datagrams to 10.77.0.1:9999 (through the tunnel), 203.0.113.90:9999 and :1194 (outside it)"
ip netns exec pbov-s nft -f - <<'N'
table inet pbovleak {
    counter tunnel {}
    counter out9999 {}
    counter out1194 {}
    counter other {}
    chain pre {
        type filter hook prerouting priority -300; policy accept;
        iifname "tun*" udp dport 9999 @th,64,32 0x7a6c6561 counter name tunnel accept
        iifname "eth0" udp dport 9999 @th,64,32 0x7a6c6561 counter name out9999 accept
        iifname "eth0" udp dport 1194 @th,64,32 0x7a6c6561 counter name out1194 accept
        iifname "eth0" udp dport 1194 accept
        iifname "eth0" udp sport 1194 accept
        iifname "eth0" icmp type destination-unreachable accept
        iifname "eth0" ip6 daddr ff02::/16 accept
        iifname "eth0" ip6 saddr fe80::/10 ip6 daddr fe80::/10 accept
        iifname "eth0" counter name other accept
    }
}
N
count() { ip netns exec pbov-s nft list counter inet pbovleak "$1" | awk '/packets/ {print $2}'; }
counts() { echo "through the tunnel $(count tunnel); outside it: to port 9999 (either address) $(count out9999), to 203.0.113.90:1194 $(count out1194), anything else $(count other)"; }
# "anything else" leaves out what is no application's: the veth's own IPv6
# link-local traffic (the kernel's ND, MLD, router solicitations), and the
# server's keepalives to the dead clients of earlier runs, which come back
# as ICMP port unreachable or, through a NAT entry of pbov-h whose
# namespace is gone, as UDP from port 1194.
# shellcheck disable=SC2016 # $d expands in the loop, inside
LOOP='while :; do for d in 10.77.0.1/9999 203.0.113.90/9999 203.0.113.90/1194; do echo zleak >/dev/udp/$d; done 2>/dev/null; sleep 0.1; done'
# vopono expands $VARIABLES in its application string itself: the loop
# goes in a file for it (pallium's sandbox has a /tmp of its own).
echo "$LOOP" > loop.sh
leak_test() { # label, then the command that starts the session
    local label=$1 root ovpn alive i
    shift
    start_until bash leak.log "$@"; root=$BG
    for i in $(seq 600); do [ "$(count tunnel)" -gt 0 ] && break; sleep 0.1; done
    [ "$(count tunnel)" -gt 0 ] || echo "  $label: nothing arrived through the tunnel in 60 s" >&2
    ovpn=$(find_comm "$root" openvpn 0) || { echo "  $label: no openvpn under $root" >&2; return 1; }
    ip netns exec pbov-s nft reset counters table inet pbovleak >/dev/null
    sleep 2
    echo " $label"
    echo "  tunnel up, 2 s:      $(counts)"
    ip netns exec pbov-s nft reset counters table inet pbovleak >/dev/null
    kill -9 "$ovpn"
    sleep 3
    echo "  openvpn killed, 3 s: $(counts)"
    alive="no"; find_comm "$root" bash 0 >/dev/null && alive="yes"
    echo "  the loop still runs after it: $alive"
    stop "$root" "$(find_comm "$root" bash 0)"
    ip netns exec pbov-s nft reset counters table inet pbovleak >/dev/null
}
load
leak_test "pallium exec --one-shot hop.json -- bash -c LOOP" "${PALLIUM[@]}" bash -c "$LOOP"
leak_test "vopono exec --custom hop.ovpn \"bash loop.sh\"" "${VOPONO_EXEC[@]}" "bash $W/loop.sh"
leak_test "vopono exec --no-killswitch --custom hop.ovpn \"bash loop.sh\"" "${VOPONO_EXEC[@]}" --no-killswitch "bash $W/loop.sh"
load
echo "vopono refused to start the application (retried): $NREFUSED times in all"
