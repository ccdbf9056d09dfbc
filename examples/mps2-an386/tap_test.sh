#!/bin/bash
# The firmware on a TAP device with the Linux stack as its client. Runs
# INSIDE a network namespace of its own (the ci script starts it through
# `unshare --net`; it refuses to run otherwise): the TAP device and its
# address exist only there. $1: the server, a program with smoltcp_echo's
# command line: the runner (./run), or smoltcp_echo itself (then the one
# difference, declared: it prints no `peak stack` line).
set -u
run=$1
firmware=1
[ "$(basename "$run")" = run ] || {
    firmware=0
    echo "server $run: not the firmware; no peak stack line expected (declared)"
}
here=$(cd "$(dirname "$0")" && python3 -c 'import os;print(os.getcwd())')
fail() { echo "FAIL: $*"; [ -n "${out:-}" ] && cat "$out"; exit 1; }
# Never the machine's own namespace: there, the init process's network
# namespace is ours.
[ "$(readlink /proc/self/ns/net)" != "$(readlink /proc/1/ns/net)" ] ||
    fail "not inside a network namespace of its own (use unshare --net)"
ip link set lo up || fail "cannot configure the namespace's loopback"
ip tuntap add dev tap0 mode tap || fail "cannot create a TAP device (needs root and /dev/net/tun)"
ip addr add 192.168.69.100/24 dev tap0 || fail "cannot address tap0"
ip link set tap0 up || fail "cannot bring tap0 up"
pid=
trap '[ -n "$pid" ] && kill -TERM $pid 2>/dev/null && wait $pid' EXIT

# start PROTO PORT MODE [ARGS...]: boots the firmware, waits for its first line.
start() {
    out=$(mktemp)
    "$run" --tap tap0 --addr 192.168.69.1:$2 --proto $1 --mode $3 "${@:4}" >"$out" 2>"$out.err" &
    pid=$!
    # (up to 60 s: the runner checks that the image is up to date first)
    for _ in $(seq 600); do [ -s "$out" ] && break; kill -0 $pid 2>/dev/null || break; sleep 0.1; done
    line=$(head -1 "$out")
    [ "$line" = "listening on 192.168.69.1:$2" ] || fail "first line: '$line' ($(cat "$out.err"))"
    echo "server ($1, $3): $line"
}

# stop SIGNAL: the runner must exit 0 within 2 s and report its peak stack.
stop() {
    local t0=$(date +%s%N)
    kill -$1 $pid
    for _ in $(seq 40); do kill -0 $pid 2>/dev/null || break; sleep 0.05; done
    kill -0 $pid 2>/dev/null && fail "still running 2 s after SIG$1: $(cat "$out.err")"
    wait $pid
    status=$?
    pid=
    local ms=$((($(date +%s%N) - t0) / 1000000))
    [ $status = 0 ] || fail "exit status $status after SIG$1: $(cat "$out.err")"
    peak=
    if [ $firmware = 1 ]; then
        peak=", $(grep -o 'peak stack [0-9]* bytes' "$out.err")" ||
            fail "no peak stack line: $(cat "$out.err")"
    fi
    echo "stopped by SIG$1 in $ms ms, status 0$peak"
}

start tcp 7000 event
arping -c 2 -w 3 -I tap0 192.168.69.1 >/dev/null 2>&1 || fail "arping"
echo "arping: 2/2 answered"
ping -c 3 -W 2 -i 0.2 192.168.69.1 >/dev/null || fail "ping"
echo "ping: 3/3 answered"
stop TERM

for mode in sync event; do
    echo "=== mode $mode"
    [ $mode = sync ] && port=7000 || port=7010
    start tcp $port $mode
    timeout -s KILL 60 python3 "$here/tap_client.py" tcp $port || fail "TCP echo ($mode)"
    if [ $mode = event ]; then
        timeout -s KILL 90 python3 "$here/tap_client.py" many $port || fail "more clients than connections"
        timeout -s KILL 60 python3 "$here/tap_client.py" garbage $port || fail "hostile frames"
    else
        timeout -s KILL 90 python3 "$here/tap_client.py" queue $port || fail "clients queued behind one"
    fi
    stop INT
    start udp $((port + 1)) $mode
    timeout -s KILL 30 python3 "$here/tap_client.py" udp $((port + 1)) || fail "UDP echo ($mode)"
    stop TERM
done
echo "ALL OK"
