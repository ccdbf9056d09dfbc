#!/usr/bin/env python3
"""Checks of the runner's own logic (`run`), with a stand-in for QEMU
(`QEMU_SYSTEM_ARM` names it) so that no TAP device or emulator is needed:

- the settings reach the image as numbers on `-append`, after `--`;
- the image's records come out as `smoltcp_echo`'s lines (`L` ->
  `listening on ADDR` on stdout, the address normalized as smoltcp_echo
  prints it, `S`, `C`, `E` on stderr, `P` -> `peak
  stack N bytes`), other lines as they are;
- the emulator's exit status is the runner's, and a SIGTERM that arrives
  just after the emulator exited does not change it (it killed the
  runner while its interpreter exited: 7 of 24 tries before the fix).

Run by `ci` after the images are built (the runner checks that they are
up to date first). Exits 1 on the first failure.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, "run")


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def fake_qemu(tmp, script):
    """A stand-in emulator: saves its argv, then runs `script` (sh)."""
    path = os.path.join(tmp, "qemu")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp}/argv\n{script}\n')
    os.chmod(path, 0o755)
    return path


def runner(qemu, *args, addr="10.1.2.3:7000"):
    env = dict(os.environ, QEMU_SYSTEM_ARM=qemu)
    return subprocess.Popen([RUN, "--tap", "tapx", "--addr", addr, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def main():
    tmp = tempfile.mkdtemp(prefix="runner-test-")
    # Settings and records.
    qemu = fake_qemu(tmp, "echo L; echo 'C 4'; echo 'S 3 5'; echo 'E 4'; echo 'fault: x'; "
                          "echo 'P 1234'; exit 3")
    p = runner(qemu, "--gateway", "10.1.2.254", "--proto", "udp", "--mode", "event",
               "--max-connections", "9", "--when-full", "refuse", addr="10.1.2.3:07000")
    out, err = (s.decode() for s in p.communicate(timeout=120))
    if p.returncode != 3:
        fail(f"status {p.returncode}, not the emulator's 3: {err}")
    argv = open(os.path.join(tmp, "argv")).read().split("\n")
    append = argv[argv.index("-append") + 1].split(" ")
    want = ["--", str(0x0A010203), "7000", str(0x0A0102FE), "1", "1", "9", "2"]
    if append[:8] != want or len(append) != 9 or not append[8].endswith("/stop"):
        fail(f"-append {append}, want {want} + the stop file")
    if out != "listening on 10.1.2.3:7000\n":
        fail(f"stdout {out!r}")
    for line in ["mps2-an386: note: --max-connections capped at 4",
                 "mps2-an386: 3 SYNs dropped while the backlog was full, "
                 "5 datagrams lost on arrival",
                 "mps2-an386: error: cannot bind", "mps2-an386: fault: x",
                 "peak stack 1234 bytes"]:
        if line not in err.splitlines():
            fail(f"no line {line!r} on stderr: {err!r}")
    print("settings as numbers and records worded: ok")

    # A SIGTERM just after the emulator exited (as a test harness that
    # stops the runner sends it) must not change the status.
    qemu = fake_qemu(tmp, f"sleep 0.2; touch {tmp}/exited; exit 0")
    tries = 16
    for i in range(tries):
        exited = os.path.join(tmp, "exited")
        if os.path.exists(exited):
            os.remove(exited)
        p = runner(qemu)
        deadline = time.monotonic() + 120
        while not os.path.exists(exited) and p.poll() is None:
            if time.monotonic() > deadline:
                p.kill()
                fail("the stand-in emulator never ran")
            time.sleep(0.002)
        time.sleep((i % 8) * 0.004)
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        _, err = p.communicate(timeout=30)
        if p.returncode != 0:
            fail(f"try {i}: status {p.returncode} after a late SIGTERM: {err.decode()}")
    print(f"a SIGTERM just after the emulator exited: status 0 in {tries} of {tries} tries")
    print("ALL OK")


if __name__ == "__main__":
    main()
