#!/usr/bin/env bash
# TCP echo throughput over a TAP device: sockserv's smoltcp server
# (examples/smoltcp_echo) beside the Linux kernel's own stack serving the
# same echo (examples/echo, std adapter, threading), measured in one run
# inside a private network namespace this script creates (needs root).
#
#   bench/tap_throughput.sh [MiB per transfer, default 64] [runs, default 3]
#
# The client is the kernel's TCP stack (python3): it streams the bytes in
# 64 KiB writes while a thread reads the echo, half-closes, and waits for
# EOF; throughput = bytes echoed / time. Best of the runs is printed.
#
# Two kernel numbers: the echo on the TAP's host-side address (local to the
# namespace, so the kernel short-cuts it through its loopback path: the
# kernel's best case), and the echo in a nested namespace behind a veth
# pair (kernel to kernel across a virtual link, the closer match for a
# stack behind a TAP). The ratio printed is smoltcp / kernel-over-veth.
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-64}
runs=${2:-3}
# The settings (environment): the TAP link's MTU and smoltcp_echo's options.
tap_mtu=${TAP_MTU:-1500}
read -r -a smol_args <<<"${SMOLTCP_ARGS:-}"

if [ "${SOCKSERV_BENCH_INSIDE:-}" != 1 ]; then
    cargo build -q --release --example smoltcp_echo --example echo
    export SOCKSERV_BENCH_INSIDE=1
    exec timeout -s KILL 600 unshare --net -- "$0" "$mib" "$runs"
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

# start NAME CMD...: runs a server, waits for "listening on ADDR", sets
# $addr to ADDR. Not in a $(...) subshell: the pid must reach the trap.
start() {
    local name=$1; shift
    "$@" >"$tmp/$name.out" 2>&1 &
    pids+=($!)
    disown
    for _ in $(seq 100); do [ -s "$tmp/$name.out" ] && break; sleep 0.05; done
    local line; line=$(head -1 "$tmp/$name.out")
    [[ $line == "listening on "* ]] || { echo "$name did not start: $line" >&2; exit 1; }
    addr=${line#listening on }
}

start smoltcp target/release/examples/smoltcp_echo --tap tap0 --addr 192.168.69.1:7000 "${smol_args[@]}"
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
total, runs = int(sys.argv[2]) << 20, int(sys.argv[3])
chunk = bytes(range(256)) * 256  # 64 KiB
best = 0.0
for _ in range(runs):
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
    best = max(best, sent / elapsed / 1e6)
print("%.1f" % best)
PY

echo "TCP echo, $mib MiB per transfer, best of $runs"
s=$(python3 "$tmp/client.py" "$smol" "$mib" "$runs")
echo "  smoltcp (sockserv-smoltcp over tap0, $smol): $s MB/s"
k=$(python3 "$tmp/client.py" "$kern" "$mib" "$runs")
echo "  Linux kernel, local address (sockserv-std echo, $kern): $k MB/s"
v=$(python3 "$tmp/client.py" "$veth" "$mib" "$runs")
echo "  Linux kernel, across a veth pair (sockserv-std echo, $veth): $v MB/s"
python3 -c "print('  ratio smoltcp / kernel-over-veth: %.3f' % ($s / $v))"
python3 -c "print('  ratio smoltcp / kernel-local: %.3f' % ($s / $k))"
