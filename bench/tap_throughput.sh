#!/usr/bin/env bash
# TCP echo throughput over a TAP device: sockserv's smoltcp server
# (examples/smoltcp_echo) beside the Linux kernel's own stack serving the
# same echo (examples/echo, std adapter, threading), measured in one run
# inside a private network namespace this script creates (needs root).
# A benchmark: it prints numbers, never pass/fail.
#
#   bench/tap_throughput.sh [MiB per transfer, default 64] [rounds, default 5]
#   TAP_MTU=1500 SMOLTCP_ARGS="--tcp-buffer 65536" bench/tap_throughput.sh
#   SOCKSERV_TAP_SERVER=examples/mps2-an386/run SMOLTCP_ARGS= TAP_MTU=1500 bench/tap_throughput.sh 4 3
#
# SOCKSERV_TAP_SERVER names another server with smoltcp_echo's command line in
# its place, e.g. the mps2-an386 echo firmware under QEMU (frames of 1,514
# bytes at most: give TAP_MTU=1500; its buffers are fixed, so SMOLTCP_ARGS
# is best empty).
#
# The client is the kernel's TCP stack (python3): it streams the bytes in
# 64 KiB writes while a thread reads the echo, half-closes, and waits for
# EOF; throughput = bytes echoed / time. Each round measures every server
# once, one after the other, so that a burst of load from elsewhere on a
# shared machine hits all of them alike; the medians (and the spread,
# min..max) over the rounds are printed, with the ratio of each round
# (smoltcp / kernel in the same round) and the load average before and
# after: on a busy machine single runs vary by 2x, trust the medians.
#
# Two kernel numbers: the echo on the TAP's host-side address (local to the
# namespace, so the kernel short-cuts it through its loopback path: the
# kernel's best case), and the echo in a nested namespace behind a veth
# pair (kernel to kernel across a virtual link, the closer match for a
# stack behind a TAP). The headline ratio is smoltcp / kernel-over-veth.
#
# Settings (environment), printed beside the ratio: TAP_MTU (default
# 65521, the TAP's largest; the veth pair gets the same MTU, so both links
# carry the same frames) and SMOLTCP_ARGS, extra smoltcp_echo options
# (default "--tcp-buffer 262144": 256 KiB socket buffers, so smoltcp
# scales its window; see --mode, --ack-delay-ms).
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-64}
runs=${2:-5}
tap_mtu=${TAP_MTU:-65521}
smol_opts=${SMOLTCP_ARGS---tcp-buffer 262144}
read -r -a smol_args <<<"$smol_opts"
server=${SOCKSERV_TAP_SERVER:-target/release/examples/smoltcp_echo}
server=$(realpath -m "$server")
export SOCKSERV_TAP_SERVER=$server SMOLTCP_ARGS=$smol_opts TAP_MTU=$tap_mtu

if [ "${SOCKSERV_BENCH_INSIDE:-}" != 1 ]; then
    # smoltcp's build script rejects SMOLTCP_* variables it does not know.
    env -u SMOLTCP_ARGS cargo build -q --release --features tap --example smoltcp_echo --example echo
    export SOCKSERV_BENCH_INSIDE=1
    exec timeout -k 10 600 unshare --net -- "$0" "$mib" "$runs"
fi

ip link set lo up
ip tuntap add dev tap0 mode tap || { echo "cannot create a TAP device (root?)" >&2; exit 1; }
ip addr add 192.168.69.100/24 dev tap0
ip link set tap0 mtu "$tap_mtu"
ip link set tap0 up

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
# timeout sends TERM first: leave through the EXIT trap, so the servers go too.
on_signal() { exit 143; }
trap on_signal TERM INT

# start NAME CMD...: runs a server, waits for "listening on ADDR" on its
# stdout (up to 60 s: a runner may check its build first), sets $addr to
# ADDR. Not in a $(...) subshell: the pid must reach the trap.
start() {
    local name=$1; shift
    "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pids+=($!)
    disown
    for _ in $(seq 600); do [ -s "$tmp/$name.out" ] && break; sleep 0.1; done
    local line; line=$(head -1 "$tmp/$name.out")
    [[ $line == "listening on "* ]] ||
        { echo "$name did not start: $line $(cat "$tmp/$name.err")" >&2; exit 1; }
    addr=${line#listening on }
}

start smoltcp "$server" --tap tap0 --addr 192.168.69.1:7000 "${smol_args[@]}"
smol=$addr
start kernel target/release/examples/echo --proto tcp --mode threading --addr 192.168.69.100:0
kern=$addr

# The kernel echo behind a veth pair, in a nested namespace.
unshare --net -- bash -c '
    for _ in $(seq 100); do ip link show veth1 >/dev/null 2>&1 && break; sleep 0.05; done
    ip link set lo up && ip addr add 10.69.0.2/24 dev veth1 && ip link set veth1 mtu '"$tap_mtu"' && ip link set veth1 up
    exec target/release/examples/echo --proto tcp --mode threading --addr 10.69.0.2:7002
' >"$tmp/veth.out" 2>&1 &
pids+=($!)
disown
ip link add veth0 type veth peer name veth1
ip link set veth1 netns "${pids[-1]}"
ip addr add 10.69.0.1/24 dev veth0
ip link set veth0 mtu "$tap_mtu"
ip link set veth0 up
for _ in $(seq 100); do [ -s "$tmp/veth.out" ] && break; sleep 0.05; done
line=$(head -1 "$tmp/veth.out")
[[ $line == "listening on "* ]] || { echo "veth echo did not start: $line" >&2; exit 1; }
veth=${line#listening on }

cat >"$tmp/client.py" <<'PY'
import socket, sys, threading, time
host, port = sys.argv[1].rsplit(":", 1)
total = int(sys.argv[2]) << 20
chunk = bytes(range(256)) * 256  # 64 KiB
s = socket.create_connection((host, int(port)), timeout=30)
got = [0]
def reader():
    buf = bytearray(1 << 20)
    while True:
        n = s.recv_into(buf)
        if n == 0:
            return
        got[0] += n
t = threading.Thread(target=reader)
start = time.perf_counter()
t.start()
sent = 0
while sent < total:
    s.sendall(chunk)
    sent += len(chunk)
s.shutdown(socket.SHUT_WR)
t.join(120)
elapsed = time.perf_counter() - start
s.close()
assert got[0] == sent, (got[0], sent)
print("%.1f" % (sent / elapsed / 1e6))
PY

cat >"$tmp/stats.py" <<'PY'
import statistics, sys
import os
names = ["smoltcp", "local", "veth"]
server = os.path.basename(os.path.dirname(os.environ["SOCKSERV_TAP_SERVER"])) + "/" + \
    os.path.basename(os.environ["SOCKSERV_TAP_SERVER"])
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
cols = {n: [r[i] for r in rows] for i, n in enumerate(names)}
med = {n: statistics.median(v) for n, v in cols.items()}
def show(label, n):
    v = cols[n]
    print("  %-58s median %7.1f MB/s  (min %.1f, max %.1f)" % (label, med[n], min(v), max(v)))
show("smoltcp (sockserv-smoltcp over tap0, %s):" % server, "smoltcp")
show("Linux kernel, local address (sockserv-std echo):", "local")
show("Linux kernel, across a veth pair (sockserv-std echo):", "veth")
per = sorted(r[0] / r[2] for r in rows)
print("  ratio smoltcp / kernel-over-veth: %.3f (medians); per round %s"
      % (med["smoltcp"] / med["veth"], " ".join("%.3f" % x for x in per)))
print("  ratio smoltcp / kernel-local: %.3f (medians)" % (med["smoltcp"] / med["local"]))
PY

buffer=$(sed -n 's/.*--tcp-buffer \([0-9]*\).*/\1/p' <<<" $smol_opts ")
buffer=${buffer:-65536}
scale=0
while (( (65535 << scale) < buffer && scale < 14 )); do scale=$((scale + 1)); done
echo "TCP echo, $mib MiB per transfer, $runs rounds; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "settings: TAP MTU $tap_mtu, veth MTU $tap_mtu (GSO on); $server ${smol_opts:-(defaults)}:"
ack=$(sed -n 's/.*--ack-delay-ms \([0-9]*\).*/\1 ms/p' <<<" $smol_opts ")
if [[ $server == */smoltcp_echo ]]; then
    echo "  TCP socket buffers $buffer B each way (window scale $scale), delayed ACK" \
        "${ack:-10 ms, the smoltcp default}, each poll drains every frame the TAP holds"
else
    echo "  the server's own buffers and settings (see its documentation)"
fi
for _ in $(seq "$runs"); do
    s=$(python3 "$tmp/client.py" "$smol" "$mib")
    k=$(python3 "$tmp/client.py" "$kern" "$mib")
    v=$(python3 "$tmp/client.py" "$veth" "$mib")
    echo "$s $k $v" >>"$tmp/results"
done
python3 "$tmp/stats.py" "$tmp/results"
echo "  load average after: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores shared with other work: expect noise)"
