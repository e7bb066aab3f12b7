#!/usr/bin/env bash
# CPU time the packet engine spends per GB moved through one SOCKS5 hop, for
# two builds of the benchmark host (netbroker/benches/tun2socks.rs) in
# alternation (A B, B A, …). Unlike throughput, CPU seconds per GB hardly
# move when the machine is shared, so two engine loops can be compared under
# load. As root, from the repository:
#   ./extra/bench/engine-cpu.sh HOST_A HOST_B [ROUNDS] [BYTES] [CONNS]
# (ROUNDS 5, BYTES 2G each way, CONNS 2000; MTU 65000, dante on
# 127.0.0.1:1080, iperf3 and a TCP echo server on 203.0.113.80 in a
# throwaway namespace.) Also the engine's CPU per 1000 short connections
# (connect, 1 byte echoed, close; one client). Prints one line per
# measurement, then the medians.
set -euo pipefail
A_HOST=${1:?usage: $0 HOST_A HOST_B [ROUNDS] [BYTES]}; B_HOST=${2:?usage: $0 HOST_A HOST_B [ROUNDS] [BYTES]}
ROUNDS=${3:-5}; BYTES=${4:-2G}; CONNS=${5:-2000}
. "$(dirname "$0")/dial-ns.sh"
bench_require
bench_init
D=ecpu$$d A=ecpu$$a
dial_netns $D
bench_netns $A
start_dante $D
start_iperf $D
start_echo $D
cat > "$WORK/conn.py" <<'EOC'
import socket, sys
for _ in range(int(sys.argv[1])):
    c = socket.create_connection(("203.0.113.80", 7007)); c.sendall(b"x")
    assert c.recv(1) == b"x"; c.close()
EOC
sleep 1
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="A B"; else order="B A"; fi
    for w in $order; do
        if [ $w = A ]; then host=$A_HOST; else host=$B_HOST; fi
        rm -f "$WORK/ready" "$WORK/stop"
        "$host" $A $D socks5 127.0.0.1:1080 65000 "$WORK/ready" "$WORK/stop" > "$WORK/host.out" 2>&1 &
        hp=$!
        for _ in $(seq 100); do [ -s "$WORK/ready" ] && break; sleep 0.1; done
        [ -s "$WORK/ready" ] || { cat "$WORK/host.out"; exit 1; }
        for dir in up down; do
            flag=""; [ $dir = down ] && flag="-R"
            c0=$(cpu $hp)
            read -r gbit gb < <(ip netns exec $A iperf3 -J -c 203.0.113.80 -p 5201 -n "$BYTES" $flag |
                python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum_received"]; print("%.2f %.3f" % (e["bits_per_second"]/1e9, e["bytes"]/1e9))')
            c1=$(cpu $hp)
            echo "$w $dir $gbit Gbit/s $(python3 -c "print('%.3f' % (($c1 - $c0) / $TCK / $gb))") cpu-s/GB"
        done
        c0=$(cpu $hp)
        t0=$(date +%s.%N)
        ip netns exec $A python3 "$WORK/conn.py" "$CONNS"
        t1=$(date +%s.%N)
        c1=$(cpu $hp)
        echo "$w conn $(python3 -c "print('%.3f' % (($t1 - $t0) * 1000 / $CONNS))") ms/conn $(python3 -c "print('%.1f' % (($c1 - $c0) * 1000 / $TCK * 1000 / $CONNS))") cpu-ms/1000conn"
        touch "$WORK/stop"; wait $hp || true
        ip -n $A link del t2s0 2>/dev/null || true
    done
done | tee "$WORK/lines"
python3 - "$WORK/lines" "$A_HOST" "$B_HOST" <<'PY'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1])]
for w, name in (("A", sys.argv[2]), ("B", sys.argv[3])):
    t = sorted(float(r[2]) for r in rows if r[0] == w and r[1] == "conn")
    c = sorted(float(r[4]) for r in rows if r[0] == w and r[1] == "conn")
    if t:
        print(f"{w} conn median {st.median(t):.3f} ms/conn ({t[0]:.3f}-{t[-1]:.3f}), "
              f"{st.median(c):.1f} cpu-ms/1000 conn ({c[0]:.1f}-{c[-1]:.1f}), n={len(t)}  {name}")
    for d in ("up", "down"):
        g = sorted(float(r[2]) for r in rows if r[0] == w and r[1] == d)
        c = sorted(float(r[4]) for r in rows if r[0] == w and r[1] == d)
        if g:
            print(f"{w} {d:4s} median {st.median(g):.2f} Gbit/s ({g[0]:.2f}-{g[-1]:.2f}), "
                  f"{st.median(c):.3f} cpu-s/GB ({c[0]:.3f}-{c[-1]:.3f}), n={len(g)}  {name}")
PY
