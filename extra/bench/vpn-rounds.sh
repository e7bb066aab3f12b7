# Shared by openvpn.sh and wireguard.sh (sourced): iperf3 through a plain VPN
# client and through pallium's hop on the same server, in alternation
# (A B, B A, …, so that load from elsewhere hits both alike), ROUNDS rounds
# of BYTES up and BYTES down each (defaults 3 and 300M). Prints one line per
# transfer — throughput and the CPU seconds per GB of the process that does
# the VPN's work (the plain client, or the hop's openvpn / packet engine),
# which hardly move when the machine is shared — then the medians.
#   vpn_rounds PLAIN_PID "PLAIN_PREFIX" HOP_PID "HOP_PREFIX" SERVER
# A PREFIX is the command line that runs iperf3's client on that side.
vpn_rounds() {
    local plain_pid=$1 plain_prefix=$2 hop_pid=$3 hop_prefix=$4 server=$5
    local rounds=${ROUNDS:-3} bytes=${BYTES:-300M} tck out
    tck=$(getconf CLK_TCK)
    out=$(mktemp)
    for r in $(seq "$rounds"); do
        local order="plain hop"; [ $((r % 2)) = 0 ] && order="hop plain"
        for w in $order; do
            local pid=$plain_pid prefix=$plain_prefix
            [ $w = hop ] && pid=$hop_pid prefix=$hop_prefix
            for dir in up down; do
                local flag=""; [ $dir = down ] && flag=-R
                local c0 c1 s0 s1 res
                c0=$(awk '{print $14 + $15}' /proc/$pid/stat)
                s0=$(awk '{print $15}' /proc/$pid/stat)
                res=$($prefix iperf3 -J -c "$server" -n "$bytes" $flag |
                    python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum_received"]; print("%.0f %.4f" % (e["bits_per_second"]/1e6, e["bytes"]/1e9))')
                c1=$(awk '{print $14 + $15}' /proc/$pid/stat)
                s1=$(awk '{print $15}' /proc/$pid/stat)
                read -r mbit gb <<<"$res"
                local cpu sys
                cpu=$(python3 -c "print('%.2f' % (($c1 - $c0) / $tck / $gb))")
                sys=$(python3 -c "print('%.2f' % (($s1 - $s0) / $tck / $gb))")
                echo "$w $dir $mbit $cpu $sys" >> "$out"
                echo "  round $r $w $dir: $mbit Mbit/s, $cpu cpu-s/GB (of which kernel $sys)"
            done
        done
    done
    python3 - "$out" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for w in ("plain", "hop"):
    for d in ("up", "down"):
        sel = [r for r in rows if r[0] == w and r[1] == d]
        med[w, d] = (statistics.median(float(r[2]) for r in sel),
                     statistics.median(float(r[3]) for r in sel),
                     statistics.median(float(r[4]) for r in sel))
        print(f"median {w:5} {d:4}: {med[w, d][0]:.0f} Mbit/s, {med[w, d][1]:.2f} cpu-s/GB "
              f"(kernel {med[w, d][2]:.2f})")
for d in ("up", "down"):
    print(f"hop / plain {d:4}: throughput {med['hop', d][0] / med['plain', d][0]:.2f}x, "
          f"cpu per GB {med['hop', d][1] / med['plain', d][1]:.2f}x")
PY
    rm -f "$out"
}
