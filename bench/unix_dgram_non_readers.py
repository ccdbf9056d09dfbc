#!/usr/bin/env python3
"""How many Unix-datagram clients that never read their replies the echo
server withstands before a normal client is affected (issue 17).

    bench/unix_dgram_non_readers.py [--echo target/debug/examples/echo]
        [--mode sync] [--sizes 64,1024,8192,65536] [--max 400]

For each reply size, non-readers are added one at a time; each sends 12
datagrams of that size (its queue holds 11 replies, Linux charges them to
the server's send buffer, the 12th waits or is dropped). After each one, a
normal client makes 3 round trips; when none of 3 such tries has all its
round trips answered within 100 ms, the series ends. Prints, per size, the number of non-readers the
server withstood, the kernel's charge per reply as measured here
(TIOCOUTQ on a socket of our own) and the figure it predicts:
send buffer // (11 x charge). Prints numbers, asserts nothing.
"""

import argparse
import fcntl
import os
import signal
import socket
import struct
import subprocess
import tempfile
import termios
import time

WITHIN = 0.1


def charge(size):
    """Bytes Linux charges the sender for one queued datagram of `size`."""
    d = tempfile.mkdtemp()
    a, b = os.path.join(d, "a"), os.path.join(d, "b")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(a)
    r = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    r.bind(b)
    s.sendto(b"x" * size, b)
    q = struct.unpack("i", fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    for p in (a, b):
        os.unlink(p)
    s.close()
    r.close()
    os.rmdir(d)
    return q


def served(normal, path):
    """Whether one of 3 tries has all of 3 round trips answered within
    100 ms (a try that is slower than that can be the machine's load; a
    server whose send buffer is full answers none)."""
    for _ in range(3):
        ok = True
        for _ in range(3):
            normal.sendto(b"hello world\n", path)
            start = time.monotonic()
            try:
                normal.recv(64)
            except socket.timeout:
                # Its late answer must not count for the next round trip.
                time.sleep(2.5)
                while True:
                    try:
                        normal.recv(64, socket.MSG_DONTWAIT)
                    except (BlockingIOError, socket.timeout):
                        break
                ok = False
                break
            if time.monotonic() - start > WITHIN:
                ok = False
                break
        if ok:
            return True
    return False


def series(echo, mode, size, limit, tmp):
    path = os.path.join(tmp, f"echo-{size}.sock")
    server = subprocess.Popen(
        [echo, "--proto", "unix-dgram", "--mode", mode, "--path", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server.stdout.readline()
    normal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    normal.bind(os.path.join(tmp, f"normal-{size}"))
    normal.settimeout(WITHIN * 3)
    hostile = []
    withstood = None
    try:
        for n in range(1, limit + 1):
            h = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            h.bind(os.path.join(tmp, f"h-{size}-{n}"))
            for _ in range(12):
                h.sendto(b"x" * size, path)
            hostile.append(h)
            time.sleep(0.02)
            if not served(normal, path):
                withstood = n - 1
                break
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
        for h in hostile:
            h.close()
        normal.close()
    return withstood


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--echo", default="target/debug/examples/echo")
    ap.add_argument("--mode", default="sync")
    ap.add_argument("--sizes", default="64,1024,8192,65536")
    ap.add_argument("--max", type=int, default=400)
    args = ap.parse_args()
    wmem_max = int(open("/proc/sys/net/core/wmem_max").read())
    qlen = int(open("/proc/sys/net/unix/max_dgram_qlen").read()) + 1
    print(f"kernel {os.uname().release}, net.core.wmem_max {wmem_max}, "
          f"{qlen} replies per full queue, mode {args.mode}, {args.echo}")
    print("reply bytes | charge per reply | withstood | predicted (sndbuf 2 x wmem_max) | predicted (212,992)")
    with tempfile.TemporaryDirectory() as tmp:
        for size in map(int, args.sizes.split(",")):
            c = charge(size)
            got = series(args.echo, args.mode, size, args.max, tmp)
            got = f">= {args.max}" if got is None else str(got)
            print(f"{size:>11} | {c:>16} | {got:>9} | {2 * wmem_max // (qlen * c):>31} | "
                  f"{212992 // (qlen * c):>19}")


if __name__ == "__main__":
    main()
