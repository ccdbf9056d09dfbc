"""HTTP rows of bench/run (`bench/run --only http`): sockserv's HTTP layer in
event mode beside nginx (one worker, and two) and `python3 -m http.server`,
under `wrk`, with keep-alive and with `Connection: close`, 50 and 1,000
connections, a small file and a 1 MiB file; then resident memory per idle
keep-alive connection.

Every server is started as a direct child in its own process group, pinned
to CPU 0 (the two-loop / two-worker rows to CPUs 0,1); `wrk -t1` runs on
CPU 1. The servers of a workload take turns (A B C ... A B C ...) for
--reps rounds; the table shows medians and min-max, the server's CPU time
per request (summed over its process group) and the ratios. It prints
numbers and asserts nothing.

Options (from bench/run): --reps, --warmup, --duration, --quick,
--no-build, --out; `--only http` or `--only http:KEY,...` (keys below).
The sockserv server: examples/http_server (`--mode event`; built here
like every example the run uses); HTTP_EXAMPLE=http_static runs the
layer's own minimal file server instead.
"""

import datetime
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
HOST = "127.0.0.1"
SERVER_CPU = "0"
LOAD_CPU = "1"
BOTH = "0,1"
SMALL = "small.html"
BIG = "big.bin"
SMALL_SIZE = 612  # nginx's welcome page
BIG_SIZE = 1 << 20
IDLE_CONNS = 2000


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def example_path(name):
    return os.path.join(ROOT, "target", "release", "examples", name)


def pick_example():
    forced = os.environ.get("HTTP_EXAMPLE")
    if forced:
        return forced
    return "http_server"


# name -> (cpus, argv builder(port, root, conf_dir))
def servers(example):
    exe = example_path(example)

    def ours(workers):
        if example == "http_server":
            return lambda port, root, _: [exe, str(port), "-b", HOST, "-d", root, "--mode", "event",
                                          "--workers", str(workers)]
        return lambda port, root, _: [exe, "--dir", root, "--addr", f"{HOST}:{port}", "--workers", str(workers)]

    def nginx(workers):
        def argv(port, root, conf):
            path = os.path.join(conf, f"nginx-{port}.conf")
            with open(path, "w") as f:
                f.write(NGINX_CONF.format(workers=workers, conf=conf, port=port, root=root, host=HOST))
            return ["nginx", "-c", path, "-p", conf, "-e", os.path.join(conf, "error.log")]
        return argv

    python = lambda port, root, _: [sys.executable, "-m", "http.server", str(port), "-b", HOST, "-d", root]
    # Threading mode sends file bodies with sendfile(2), as nginx does;
    # event mode copies them through the pooled buffers.
    threading = lambda port, root, _: [exe, str(port), "-b", HOST, "-d", root, "--mode", "threading"]
    return {
        "sockserv threading": (SERVER_CPU, threading),
        "sockserv event": (SERVER_CPU, ours(1)),
        "nginx 1 worker": (SERVER_CPU, nginx(1)),
        "python http.server": (SERVER_CPU, python),
        "sockserv event w2": (BOTH, ours(2)),
        "nginx 2 workers": (BOTH, nginx(2)),
    }


# nginx as Debian ships it, but one or two workers, in the foreground, no
# access log: sendfile on (its default here), keep-alive on with no request cap.
NGINX_CONF = """
worker_processes {workers};
daemon off;
pid {conf}/nginx-{port}.pid;
error_log {conf}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  types {{ text/html html; application/octet-stream bin; }}
  server {{ listen {host}:{port} reuseport; root {root}; }}
}}
"""

ONE = ("sockserv event", "nginx 1 worker", "python http.server")
TWO = ("sockserv event w2", "nginx 2 workers")

# key -> (file, connections, keep-alive, servers)
WORKLOADS = [
    ("ka50", SMALL, 50, True, ONE + TWO),
    ("ka1000", SMALL, 1000, True, ONE + TWO),
    ("close50", SMALL, 50, False, ONE + TWO),
    ("close1000", SMALL, 1000, False, ONE),
    ("big50", BIG, 50, True, ("sockserv threading",) + ONE + TWO),
]


class Unavailable(Exception):
    pass


def process_group_cpu(pgid):
    """utime+stime (seconds) of every live process in the group."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def group_rss_kib(pgid):
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def wait_port(port, p, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if p.poll() is not None:
            raise Unavailable(f"exited with status {p.returncode}")
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise Unavailable("never accepted")


_port = [21001]


def start(name, table, root, conf):
    cpus, argv = table[name]
    port = _port[0]
    _port[0] += 1
    cmd = ["taskset", "-c", cpus] + argv(port, root, conf)
    err = open(os.path.join(conf, f"server-{port}.err"), "w")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        wait_port(port, p)
    except Unavailable:
        stop(p)
        raise
    return p, port


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def wrk(port, path, conns, keep_alive, warmup, duration):
    base = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", "--timeout", "5s"]
    if not keep_alive:
        base += ["-H", "Connection: close"]
    url = f"http://{HOST}:{port}/{path}"
    if warmup > 0:
        subprocess.run(base + [f"-d{warmup}s", url], capture_output=True, timeout=warmup + 30)
    if duration <= 0:
        return None
    out = subprocess.run(base + [f"-d{duration}s", "--latency", url], capture_output=True, text=True,
                         timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)

    def to_ms(mm):
        if not mm:
            return None
        v = float(mm.group(1))
        return v / 1000 if mm.group(2) == "us" else v * 1000 if mm.group(2) == "s" else v

    return {
        "rps": rps,
        "requests": int(m.group(1)) if m else 0,
        "errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "p50_ms": to_ms(p50),
        "p99_ms": to_ms(p99),
    }


def one_point(name, table, root, conf, path, conns, keep_alive, warmup, duration):
    p, port = start(name, table, root, conf)
    try:
        pg = os.getpgid(p.pid)
        wrk(port, path, conns, keep_alive, warmup, 0)
        cpu0 = process_group_cpu(pg)
        r = wrk(port, path, conns, keep_alive, 0, duration)
        cpu1 = process_group_cpu(pg)
        r["cpu_us_per_req"] = (cpu1 - cpu0) * 1e6 / r["requests"] if r["requests"] else None
        return r
    finally:
        stop(p)


def idle_memory(name, table, root, conf, n=IDLE_CONNS):
    """Resident memory the server's group gains per idle keep-alive
    connection: n connections, each served one small request, then held."""
    p, port = start(name, table, root, conf)
    socks = []
    try:
        pg = os.getpgid(p.pid)
        # One request first, so that lazily built state (buffers, pools) is there.
        s = socket.create_connection((HOST, port))
        s.sendall(f"GET /{SMALL} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        read_answer(s)
        time.sleep(0.3)
        before = group_rss_kib(pg)
        req = f"GET /{SMALL} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        for _ in range(n):
            c = socket.create_connection((HOST, port))
            c.sendall(req)
            socks.append(c)
        for c in socks:
            read_answer(c)
        time.sleep(0.5)
        after = group_rss_kib(pg)
        alive = sum(1 for c in socks if still_open(c))
        return {"before_kib": before, "after_kib": after, "conns": n, "open": alive,
                "per_conn_bytes": (after - before) * 1024 / n}
    finally:
        for c in socks:
            c.close()
        s.close()
        stop(p)


def read_answer(s):
    s.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("closed before an answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    want = int(m.group(1)) if m else 0
    while len(body) < want:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk


def still_open(s):
    s.setblocking(False)
    try:
        return s.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        s.setblocking(True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, d=0):
    return "n/a" if x is None else f"{x:,.{d}f}"


def render(meta, summary, mem):
    lines = [f"# HTTP: sockserv beside nginx and python3 -m http.server ({meta['date']})", "",
             f"Machine: {meta['machine']}; commit {meta['commit']}; {meta['versions']}",
             f"sockserv server: `examples/{meta['example']}` (event mode); files: {SMALL} ({SMALL_SIZE} B), "
             f"{BIG} (1 MiB); wrk -t1 on CPU {LOAD_CPU}, one-loop/one-worker servers on CPU {SERVER_CPU}, "
             f"w2 rows on CPUs {BOTH} (sharing CPU 1 with wrk); {meta['reps']} interleaved rounds of "
             f"{meta['warmup']} s warm-up + {meta['duration']} s; medians (min-max).",
             f"Load average: {meta['load_start']} at the start, {meta['load_end']} at the end "
             f"(the machine is shared: read ratios, not absolutes).", ""]
    for key, path, conns, ka, names in WORKLOADS:
        if key not in summary:
            continue
        lines += [f"## {key}: {path}, {conns} connections, {'keep-alive' if ka else 'Connection: close'}", "",
                  "| server | req/s | range | CPU µs/req | p99 ms | errors | vs nginx (same CPUs) | vs python |",
                  "|---|---:|---|---:|---:|---:|---:|---:|"]
        rows = summary[key]
        for name in names:
            r = rows.get(name)
            if not r:
                continue
            if "na" in r:
                lines.append(f"| {name} | n/a ({r['na']}) | | | | | | |")
                continue
            peer = rows.get("nginx 2 workers" if name.endswith("w2") else "nginx 1 worker", {})
            py = rows.get("python http.server", {})
            vs_ngx = f"{r['rps'] / peer['rps']:.2f}x" if peer.get("rps") and not name.startswith("nginx") else ""
            vs_py = f"{r['rps'] / py['rps']:.1f}x" if py.get("rps") and name != "python http.server" else ""
            lines.append(f"| {name} | {fmt(r['rps'])} | {fmt(r['min'])}-{fmt(r['max'])} | {fmt(r['cpu'], 1)} | "
                         f"{fmt(r['p99'], 1)} | {r['errors']} | {vs_ngx} | {vs_py} |")
        lines.append("")
    if mem:
        lines += ["## Resident memory per idle keep-alive connection", "",
                  f"{IDLE_CONNS} connections, each served one request of {SMALL}, then held open; the "
                  "server's process group's VmRSS before and after.", "",
                  "| server | before KiB | after KiB | open at the end | bytes per connection |",
                  "|---|---:|---:|---:|---:|"]
        for name, m in mem.items():
            if "na" in m:
                lines.append(f"| {name} | n/a ({m['na']}) | | | |")
            else:
                lines.append(f"| {name} | {m['before_kib']:,} | {m['after_kib']:,} | {m['open']} | "
                             f"{m['per_conn_bytes']:,.0f} |")
        lines.append("")
    lines += goals(summary, mem)
    return "\n".join(lines)


def goals(summary, mem):
    out = ["## Goals", ""]

    def ratio(key, a, b):
        ra = summary.get(key, {}).get(a, {}).get("rps")
        rb = summary.get(key, {}).get(b, {}).get("rps")
        return ra / rb if ra and rb else None

    def line(text, v, target, unit="x"):
        if v is None:
            out.append(f"- {text}: n/a")
            return
        ok = v >= target if unit == "x" else v <= target
        out.append(f"- {text}: {v:.2f}{unit} (goal {'≥' if unit == 'x' else '≤'} {target}{unit}) "
                   f"{'met' if ok else 'MISSED'}")

    line("small file, keep-alive, 50 conns vs nginx 1 worker", ratio("ka50", "sockserv event", "nginx 1 worker"), 1.0)
    line("small file, Connection: close, 50 conns vs nginx", ratio("close50", "sockserv event", "nginx 1 worker"), 1.0)
    line("1 MiB file, keep-alive, 50 conns vs nginx", ratio("big50", "sockserv event", "nginx 1 worker"), 0.9)
    line("small file, keep-alive, 50 conns vs python http.server",
         ratio("ka50", "sockserv event", "python http.server"), 20)
    m = mem.get("sockserv event", {}) if mem else {}
    if "per_conn_bytes" in m:
        line("resident memory per idle keep-alive connection (bytes)", m["per_conn_bytes"], 1024, " B")
    out.append("")
    return out


def machine():
    cpus = os.cpu_count()
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return f"{cpus} CPUs, {model}, Linux {os.uname().release}"


def versions():
    parts = []
    for cmd in (["nginx", "-v"], ["wrk", "-v"], [sys.executable, "--version"]):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            parts.append((r.stdout + r.stderr).strip().splitlines()[0])
        except (OSError, IndexError):
            parts.append(f"{cmd[0]}: missing")
    return "; ".join(parts)


def commit():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return "?"


def build(example):
    log(f"building examples/{example} (release)")
    r = subprocess.run(["cargo", "build", "--release", "--example", example], cwd=ROOT)
    return r.returncode == 0


def main(a):
    keys = set()
    for k in a.only.split(","):
        if k == "http":
            keys |= {w[0] for w in WORKLOADS} | {"mem"}
        elif k.startswith("http:"):
            keys.add(k[5:])
    for tool in ("taskset", "wrk", "nginx"):
        if not shutil.which(tool):
            sys.exit(f"bench/run --only http: {tool} is required (apt-get install wrk nginx-light util-linux)")
    example = pick_example()
    if not a.no_build and not build(example):
        sys.exit(f"bench/run --only http: examples/{example} did not build")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    reps = a.reps or 3
    # wrk takes whole seconds.
    warmup = round(a.warmup) if a.warmup is not None else 1
    duration = max(1, round(a.duration)) if a.duration is not None else (1 if a.quick else 3)
    table = servers(example)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "commit": commit(), "versions": versions(), "example": example,
            "reps": reps, "warmup": warmup, "duration": duration, "load_start": loadavg()}
    root = tempfile.mkdtemp(prefix="sockserv-http-bench-")
    conf = tempfile.mkdtemp(prefix="sockserv-http-conf-")
    with open(os.path.join(root, SMALL), "wb") as f:
        f.write((b"<!DOCTYPE html><title>sockserv</title>" * 20)[:SMALL_SIZE])
    with open(os.path.join(root, BIG), "wb") as f:
        f.write(os.urandom(BIG_SIZE))
    # nginx's workers run as its unprivileged user: the files must be theirs to read.
    os.chmod(root, 0o755)
    for name in (SMALL, BIG):
        os.chmod(os.path.join(root, name), 0o644)
    raw, summary = {}, {}
    try:
        for key, path, conns, ka, names in WORKLOADS:
            if key not in keys:
                continue
            raw[key] = {n: [] for n in names}
            na = {}
            for rep in range(reps):
                for name in names:
                    if name in na:
                        continue
                    log(f"[{key}] round {rep + 1}/{reps}: {name}")
                    try:
                        raw[key][name].append(one_point(name, table, root, conf, path, conns, ka, warmup, duration))
                    except (Unavailable, subprocess.TimeoutExpired, AttributeError) as e:
                        na[name] = str(e) or type(e).__name__
                        log(f"  n/a: {na[name]}")
            summary[key] = {}
            for name in names:
                runs = raw[key][name]
                if not runs:
                    summary[key][name] = {"na": na.get(name, "no run")}
                    continue
                rps = [r["rps"] for r in runs]
                summary[key][name] = {"rps": med(rps), "min": min(rps), "max": max(rps),
                                      "cpu": med([r["cpu_us_per_req"] for r in runs]),
                                      "p99": med([r["p99_ms"] for r in runs]),
                                      "errors": sum(r["errors"] + r["non2xx"] for r in runs)}
                log(f"  {name}: {summary[key][name]}")
        mem = {}
        if "mem" in keys:
            for name in ("sockserv event", "nginx 1 worker"):
                log(f"[mem] {name}")
                try:
                    mem[name] = idle_memory(name, table, root, conf)
                except (Unavailable, RuntimeError, OSError) as e:
                    mem[name] = {"na": str(e)}
                log(f"  {mem[name]}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    meta["load_end"] = loadavg()
    text = render(meta, summary, mem)
    print(text)
    out = a.out or os.path.join(BENCH, "results", datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
                                + ("-http-quick" if a.quick else "-http") + ".md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text + "\n")
    with open(os.path.splitext(out)[0] + ".json", "w") as f:
        json.dump({"meta": meta, "summary": summary, "raw": raw, "mem": mem}, f, indent=1)
    log(f"wrote {out}")
    shutil.rmtree(conf, ignore_errors=True)
