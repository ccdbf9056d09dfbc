"""The Linux stack's clients for the firmware (tap_test.sh): byte-exact TCP
and UDP echo, more clients than connections. argv: CHECK PORT."""
import socket
import sys
import threading
import time

HOST = "192.168.69.1"
check, port = sys.argv[1], int(sys.argv[2])


def echo_tcp(data, timeout=30, hold=0.0):
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.settimeout(timeout)
    got = bytearray()

    def reader():
        while True:
            b = s.recv(65536)
            if not b:
                return
            got.extend(b)

    t = threading.Thread(target=reader)
    t.start()
    half = len(data) // 2
    s.sendall(data[:half])
    time.sleep(hold)
    s.sendall(data[half:])
    s.shutdown(socket.SHUT_WR)
    t.join(timeout)
    s.close()
    return bytes(got)


if check == "tcp":
    for size in (1, 100, 1460, 5000, 64 * 1024):
        data = bytes((i * 7 + size) & 0xFF for i in range(size))
        got = echo_tcp(data)
        assert got == data, f"{size} bytes: got {len(got)} back, first difference at " + str(
            next((i for i, (a, b) in enumerate(zip(got, data)) if a != b), min(len(got), len(data))))
    print("TCP echo byte-exact: 1 B, 100 B, 1460 B, 5000 B, 64 KiB")
elif check in ("many", "queue"):
    # More clients at once than the firmware serves (4 connections in
    # event mode, one at a time in sync mode; a backlog of 2): the SYNs
    # beyond are dropped, the kernel retransmits them, every client is
    # served and none is refused or reset.
    n = 10 if check == "many" else 4
    results, errors = {}, {}

    def patient(i):
        try:
            data = b"client %d " % i * 50
            results[i] = echo_tcp(data, timeout=60, hold=0.3) == data
        except OSError as e:
            errors[i] = repr(e)

    start = time.time()
    threads = [threading.Thread(target=patient, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(80)
    assert not errors, errors
    assert sorted(results) == list(range(n)) and all(results.values()), results
    print(f"{n} clients at once all served byte-exact, none reset, in {time.time() - start:.1f} s")
elif check == "udp":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(3)
    sizes = (0, 1, 512, 1472)
    for size in sizes:
        data = bytes((i * 13 + size) & 0xFF for i in range(size))
        for attempt in range(3):
            u.sendto(data, (HOST, port))
            try:
                got, addr = u.recvfrom(65536)
                break
            except socket.timeout:
                continue
        else:
            raise SystemExit(f"no reply to a {size}-byte datagram")
        assert got == data and addr == (HOST, port), (size, len(got), addr)
    print("UDP echo byte-exact: 0 B, 1 B, 512 B, 1472 B")
elif check == "garbage":
    # Hostile frames on the wire (raw AF_PACKET on tap0): random bytes
    # after the firmware's MAC, as IPv4, ARP and anything else, of every
    # length up to a full frame; then the echo must still answer (a panic
    # is a HardFault: the firmware would have exited).
    import random
    rng = random.Random(16)
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    raw.bind(("tap0", 0))
    fw = bytes([2, 0, 0, 0, 0, 1])
    me = bytes([2, 0, 0, 0, 0, 0x64])
    sent = 0
    for i in range(3000):
        kind = rng.choice([b"\x08\x00", b"\x08\x06", b"\x86\xdd", bytes(rng.randrange(256) for _ in range(2))])
        n = rng.choice([0, 1, 8, 19, 20, 27, 28, 40, 60, rng.randrange(0, 1500)])
        body = bytearray(rng.randrange(256) for _ in range(n))
        if kind == b"\x08\x00" and n >= 20 and rng.random() < 0.7:
            # A plausible IPv4 header with random fields, addressed to the
            # firmware, so that the parsers past the header get exercised.
            body[0] = 0x45
            body[9] = rng.choice([1, 6, 17, rng.randrange(256)])
            body[16:20] = bytes([192, 168, 69, 1])
        dst = fw if rng.random() < 0.8 else b"\xff" * 6
        raw.send(dst + me + kind + bytes(body))
        sent += 1
        if i % 100 == 0:
            time.sleep(0.01)
    data = b"still here " * 100
    assert echo_tcp(data) == data, "no echo after the hostile frames"
    print(f"{sent} hostile frames sent; the firmware still echoes byte-exact")
else:
    raise SystemExit(f"unknown check {check}")
