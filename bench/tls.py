#!/usr/bin/env python3
"""sockserv's TLS benchmark: our echo behind sockserv-tls beside tokio-rustls
and nginx, as ratios. Run through bench/run:

    bench/run --only tls            # every TLS row (about 12 minutes on 2 cores)
    bench/run --only tls --quick    # a smoke run (about 3 minutes)

Options are bench/run's: --reps, --warmup, --duration, --quick, --no-build,
--out. The TLS workloads can also be picked one by one with
--only tls:KEY[,KEY] (keys: tls64 tls1000 tls16k tls1m handshake tlsmem).

One certificate for every server, made at run time with openssl (a P-256
CA and a leaf for localhost / 127.0.0.1, in a temporary directory, deleted
at the end); one client for every server: bench/loadgen --tls (rustls with
ring, no certificate check, no resumption). The servers, all on CPU 0, the
load generator on CPU 1, interleaved rounds, medians; see bench/README.md
("TLS"). This prints numbers; it asserts nothing.
"""

import datetime
import importlib.machinery
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
TOKIO_TLS = os.path.join(BENCH, "tokio-tls", "target", "release", "tokio-tls-echo")
NGINX_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def load_run():
    """bench/run as a module: its server start/stop, load generator and statistics."""
    loader = importlib.machinery.SourceFileLoader("bench_run", os.path.join(BENCH, "run"))
    spec = importlib.util.spec_from_loader("bench_run", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


run = load_run()
log = run.log
HOST = run.HOST

# ------------------------------------------------------------------ certificate


def make_certificate(d):
    """A P-256 CA and a leaf for localhost and 127.0.0.1 signed by it (rustls
    refuses a CA certificate as the leaf). Returns (cert.pem, key.pem)."""
    def ossl(*a):
        subprocess.run(["openssl", *a], cwd=d, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ossl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=sockserv bench CA", "-keyout", "ca.key", "-out", "ca.pem")
    ossl("req", *ec, "-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "leaf.csr")
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    ossl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
         "-extfile", "ext", "-out", "cert.pem")
    return os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")


# ------------------------------------------------------------------ servers

NGINX_CONF = """\
load_module {module};
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {dir}/nginx-{port}.pid;
error_log stderr error;
events {{ worker_connections 30000; }}
stream {{
    upstream echo {{ server {host}:{backend}; }}
    server {{
        listen {host}:{port} ssl backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        proxy_pass echo;
    }}
}}
"""


class Nginx:
    """nginx's stream module cannot echo by itself: it terminates TLS and
    proxies to the C epoll echo (bench/c/echo_epoll.c, also on CPU 0). Its
    single process (master_process off, one worker loop) is the server PID
    the load generator measures; the backend's CPU is not in it."""

    def __init__(self, tmp, cert, key):
        self.tmp, self.cert, self.key = tmp, cert, key

    def argv(self, port, buf):
        backend = port + 6000
        conf = os.path.join(self.tmp, f"nginx-{port}.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(module=NGINX_MODULE, dir=self.tmp, port=port, host=HOST, backend=backend,
                                      cert=self.cert, key=self.key))
        epoll = os.path.join(run.CBUILD, "echo_epoll")
        # The backend starts first (and is killed with the process group);
        # nginx then replaces the shell, so the PID measured is nginx's; the
        # line `listening on` is printed once nginx accepts TCP connections.
        script = (f"{epoll} {HOST} {backend} {buf} >/dev/null & "
                  f"(for i in $(seq 200); do "
                  f"python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 0.2).close()' "
                  f"{HOST} {port} 2>/dev/null && break; sleep 0.05; done; echo listening on {HOST}:{port}) & "
                  f"exec nginx -p {self.tmp} -e stderr -c {conf}")
        return ["sh", "-c", script]


def tls_servers(cert, key, tmp):
    tls = ["--tls-cert", cert, "--tls-key", key]

    def ours(mode, *extra):
        return {"tcp": lambda port, buf: [run.ECHO, "--proto", "tcp", "--mode", mode, "--addr", f"{HOST}:{port}",
                                          "--buffer", str(buf), *tls, *extra]}

    def tokio(rt):
        return {"tcp": lambda port, buf: [TOKIO_TLS, rt, f"{HOST}:{port}", cert, key, str(buf)]}

    nginx = Nginx(tmp, cert, key)
    return {
        "sockserv threading": ("threading", "echo --mode threading --tls-cert --tls-key", ours("threading")),
        "sockserv pool": ("threading", f"echo --mode threading --pool {run.POOL} --tls-cert --tls-key",
                          ours("threading", "--pool", str(run.POOL))),
        "sockserv event": ("event", "echo --mode event --tls-cert --tls-key", ours("event")),
        "tokio-rustls current-thread": ("event", "tokio-rustls, current-thread runtime", tokio("current")),
        "tokio-rustls multi-thread": ("event", "tokio-rustls, multi-thread runtime (1 worker under taskset -c 0)",
                                      tokio("multi")),
        "nginx": ("event", "nginx stream ssl, 1 worker, proxy_pass to C epoll echo", {"tcp": nginx.argv}),
    }


NAMES = ["sockserv threading", "sockserv pool", "sockserv event", "tokio-rustls current-thread", "tokio-rustls multi-thread", "nginx"]
# nginx holds a second (upstream) connection per client: not in the memory rows.
MEM_NAMES = [n for n in NAMES if n not in ("nginx", "sockserv pool")]
TOKIOS = ["tokio-rustls current-thread", "tokio-rustls multi-thread"]

# key -> (title, loadgen args, read buffer)
WORKLOADS = [
    ("tls64", "TLS echo 64 B, 50 connections", ["--conns", "50", "--size", "64"], 16384),
    ("tls1000", "TLS echo 64 B, 1,000 connections", ["--conns", "1000", "--size", "64", "--max-connecting", "256"],
     16384),
    ("tls16k", "TLS echo 16 KiB, 50 connections", ["--conns", "50", "--size", "16384"], 65536),
    ("tls1m", "TLS echo 1 MiB, 10 connections", ["--conns", "10", "--size", "1048576"], 65536),
    ("handshake", "New TLS handshakes, 50 clients: connect, full handshake, one 64 B echo, close_notify, close",
     ["--conns", "50", "--size", "64", "--churn"], 16384),
]
MEM_CONNS = 10_000
# (ours, goal against the faster tokio-rustls runtime, which workloads)
GOALS = [("sockserv event", 1.0, ["tls64", "tls1000", "tls16k", "tls1m"]),
         ("sockserv pool", 0.9, ["tls64", "tls1000", "tls16k", "tls1m"]),
         ("sockserv threading", 0.9, ["tls64", "tls1000", "tls16k", "tls1m"]),
         ("sockserv event", 1.0, ["handshake"]),
         ("sockserv threading", 1.0, ["handshake"]),
         ("sockserv pool", 1.0, ["handshake"])]


def rustls_versions():
    """rustls's version in each Cargo.lock: the server, the peer and the client must match."""
    out = {}
    for what, lock in (("sockserv-tls", os.path.join(ROOT, "Cargo.lock")),
                       ("tokio-rustls peer", os.path.join(BENCH, "tokio-tls", "Cargo.lock")),
                       ("loadgen", os.path.join(BENCH, "loadgen", "Cargo.lock"))):
        try:
            blocks = open(lock).read().split("[[package]]")
            out[what] = next(b.split('version = "')[1].split('"')[0] for b in blocks if 'name = "rustls"\n' in b)
        except (OSError, StopIteration, IndexError):
            out[what] = "?"
    return out


def ensure_tools():
    """openssl and nginx (with its stream module): installed with apt-get when missing and we are root."""
    missing = [p for p, ok in (("openssl", shutil.which("openssl")),
                               ("nginx-light", shutil.which("nginx")),
                               ("libnginx-mod-stream", os.path.exists(NGINX_MODULE))) if not ok]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"tls: installing {' '.join(missing)} (apt-get)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env,
                       stdout=subprocess.DEVNULL)
    if not shutil.which("openssl"):
        sys.exit("bench/run --only tls: openssl is required (apt-get install openssl)")
    if not shutil.which("nginx") or not os.path.exists(NGINX_MODULE):
        return "nginx with its stream module is not installed (apt-get install nginx-light libnginx-mod-stream)"
    return True


def build(no_build):
    failed = {}
    if no_build:
        return failed
    steps = [
        ("sockserv echo example", ["cargo", "build", "--release", "--example", "echo"], ROOT),
        ("loadgen", ["cargo", "build", "--release"], os.path.join(BENCH, "loadgen")),
        ("tokio-rustls peer", ["cargo", "build", "--release"], os.path.join(BENCH, "tokio-tls")),
    ]
    for what, cmd, cwd in steps:
        log(f"build: {what}: {' '.join(cmd)}")
        r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            log(r.stderr[-3000:])
            failed[what] = "build failed"
    os.makedirs(run.CBUILD, exist_ok=True)
    cmd = ["gcc", "-O2", "-Wall", "-o", os.path.join(run.CBUILD, "echo_epoll"), os.path.join(BENCH, "c", "echo_epoll.c")]
    if subprocess.run(cmd).returncode != 0:
        failed["echo_epoll"] = "build failed"
    return failed


def one_hold(name, n):
    p, port = run.start_server(name, "tcp", run.SERVER_CPU, 16384)
    try:
        time.sleep(0.2)
        return run.run_load(port, "tcp", ["--conns", str(n), "--size", "64"], p.pid, run.LOAD_CPU, 0, 0,
                            ["--tls", "--hold", "1", "--max-connecting", "256", "--connect-timeout", "120"])
    finally:
        run.stop_server(p)


# ------------------------------------------------------------------ report


def best_name(row, best):
    return next((n for n in TOKIOS if row.get(n) is best), "tokio-rustls")


def render(meta, results, mem, avail):
    out = []
    w = out.append
    m = meta["m"]
    w(f"# sockserv TLS benchmark, {meta['date']}{' (--quick)' if meta['quick'] else ''}")
    w("")
    w(f"Machine: {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}; commit {m['commit']}; {m['rustc']}; "
      f"rustls {meta['rustls']}; tokio-rustls {meta['tokio_rustls']}; {meta['nginx']}.")
    w(f"Load average (1/5/15 min) at start {' '.join(meta['load_start'])}, at end {' '.join(meta['load_end'])} "
      "(other engineers compile on this machine: a busy neighbour shows as a wide range and in `others`).")
    w(f"Each point: warm-up {meta['warmup']} s, then {meta['duration']} s measured; servers interleaved for "
      f"{meta['reps']} rounds; median shown, range = min–max. Servers on CPU {run.SERVER_CPU}, the load generator "
      f"on CPU {run.LOAD_CPU}. Run time {meta['elapsed']:.0f} s. Command: `bench/run {' '.join(meta['argv'])}`.")
    w("")
    w("One certificate for every server (ECDSA P-256 leaf signed by a P-256 CA, made with openssl at run time); "
      "one client for every server: `bench/loadgen --tls` (rustls, ring; TLS 1.3 negotiated, X25519, "
      "AES-256-GCM; no certificate check, no resumption). Servers: sockserv's echo example with "
      "`--tls-cert/--tls-key` (sockserv-tls: rustls with ring), tokio-rustls (bench/tokio-tls: the same rustls, "
      "the same provider, the same `ServerConfig` defaults), nginx (stream module, `ssl`, one process; it "
      "proxies to the C epoll echo on CPU 0, whose CPU is not in nginx's column: nginx does more work per request "
      "than an echo, so its row is an anchor, not a like-for-like peer).")
    w("")
    for k, v in avail.items():
        if v is not True:
            w(f"- `{k}`: n/a ({v})")
    if any(v is not True for v in avail.values()):
        w("")
    w("Columns as in bench/run's table: req/s (handshakes: connections/s), p50/p99 latency in ms, server CPU per "
      "request (µs), load generator CPU per request, others = CPU on the two cores charged to neither (worst round).")
    w("")
    for key, title, args, buf in WORKLOADS:
        if key not in results:
            continue
        w(f"## {title}")
        w("")
        w(f"Read buffer {buf // 1024} KiB (`--buffer {buf}` for sockserv's blocking modes and tokio-rustls).")
        w("")
        w("| server | req/s | range | p50 ms | p99 ms | server CPU µs/req | server core | load CPU µs/req | load core | others | errors | stalled |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n in NAMES:
            s = results[key].get(n)
            if s is None:
                continue
            if s.get("n", 0) == 0:
                w(f"| {n} | n/a | | | | | | | | | | {s.get('error', '')[:60]} |")
                continue
            w(f"| {n} | {run.fmt(s['rps'])} | {run.fmt(s['rps_min'])}–{run.fmt(s['rps_max'])} | {run.ms(s['p50'])} | "
              f"{run.ms(s['p99'])} | {run.fmt(s['server_us'], 1)} | {run.pc(s['server_util'])} | {run.fmt(s['load_us'], 1)} | "
              f"{run.pc(s['load_util'])} | {run.pc(s.get('other_util'))} | {s['errors'] + s['lost']} | {s['stalled']}/{s['conns']} |")
        w("")
        lines = []
        for ours in ("sockserv threading", "sockserv pool", "sockserv event"):
            a = results[key].get(ours)
            if not a or not a.get("n"):
                continue
            parts = []
            for pn in TOKIOS + ["nginx"]:
                b = results[key].get(pn)
                r = run.ratio(a, b) if b and b.get("n") else None
                parts.append(f"{r:.2f}x {pn}" if r else f"n/a vs {pn}")
            lines.append(f"- {ours}: " + ", ".join(parts))
        if lines:
            w("Ratios (req/s, ours / peer):")
            w("")
            out.extend(lines)
            w("")
    if mem:
        w(f"## Memory: {MEM_CONNS:,} idle TLS connections (each handshaken and echoed once, then idle)")
        w("")
        w("VmRSS of the server process before the clients connect and while it "
          "holds them; per connection = the difference / connections held. Includes rustls's own per-session "
          "state (its buffers, the session's keys).")
        w("")
        w("| server | held | RSS idle MiB | RSS holding MiB | (holding − idle) / connections, bytes | RSS holding / connections, bytes |")
        w("|---|---:|---:|---:|---:|---:|")
        for n in MEM_NAMES:
            runs = [r for r in mem.get(n, []) if "error" not in r]
            if not runs:
                err = (mem.get(n) or [{}])[0].get("error", "n/a")
                w(f"| {n} | n/a | | | | {err[:60]} |")
                continue
            b = run.med([r["rss_before_kib"] for r in runs])
            a = run.med([r["rss_after_kib"] for r in runs])
            per = run.med([r["bytes_per_conn"] for r in runs])
            held = min(r["held"] for r in runs)
            w(f"| {n} | {held:,} | {b / 1024:.1f} | {a / 1024:.1f} | {run.fmt(per)} | {run.fmt(a * 1024 / max(held, 1))} |")
        w("")
    w("## Goals, against the faster tokio-rustls runtime of each row")
    w("")
    for ours, target, keys in GOALS:
        for k in keys:
            a = results.get(k, {}).get(ours)
            ts = [results.get(k, {}).get(t) for t in TOKIOS]
            ts = [t for t in ts if t and t.get("n")]
            if not a or not a.get("n") or not ts:
                w(f"- {ours}, {k}: n/a (goal ≥ {target}x)")
                continue
            best = max(ts, key=lambda t: t["rps"])
            r = run.ratio(a, best)
            verdict = "met" if r >= target else f"missed by {(1 - r / target) * 100:.1f}%"
            # On a shared machine the req/s follow the CPU each server got;
            # the server CPU per request is the steadier comparison.
            cpu = ""
            if a.get("server_us") and best.get("server_us"):
                cpu = f"; server CPU per request {a['server_us'] / best['server_us']:.2f}x tokio-rustls's"
            w(f"- {ours}, {k}: {r:.3f}x {best_name(results[k], best)} (goal ≥ {target}x) — {verdict}{cpu}")
    w("")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ main


def main(a):
    """Called by bench/run with its parsed arguments when --only names tls
    (or --render names a saved *-tls*.json)."""
    if a.render:
        d = json.load(open(a.render))
        text = render(d["meta"], d["summary"], d["mem"], d["avail"])
        print(text)
        with open(a.out or os.path.splitext(a.render)[0] + ".md", "w") as f:
            f.write(text)
        return
    reps = a.reps or 3
    warmup = a.warmup if a.warmup is not None else (0.2 if a.quick else 1.0)
    duration = a.duration if a.duration is not None else (0.5 if a.quick else 3.0)
    keys = set()
    for part in a.only.split(","):
        if part == "tls":
            keys |= {k for k, *_ in WORKLOADS} | {"tlsmem"}
        elif part.startswith("tls:"):
            keys.add(part[4:])
    t_start = time.monotonic()
    load_start = run.loadavg()
    nginx_ok = ensure_tools()
    failed = build(a.no_build)
    if "loadgen" in failed:
        sys.exit("bench/run: the load generator did not build")
    versions = rustls_versions()
    log(f"tls: rustls versions: {versions}")
    if len(set(versions.values())) != 1:
        log("tls: WARNING: the rustls versions differ; the comparison is not like for like")
    run.raise_nofile()
    tmp = tempfile.mkdtemp(prefix="sockserv-tls-bench-")
    try:
        cert, key = make_certificate(tmp)
        run.SERVERS.update(tls_servers(cert, key, tmp))
        avail = {}
        for n in NAMES:
            if n.startswith("sockserv") and "sockserv echo example" in failed:
                avail[n] = "the echo example did not build"
            elif n.startswith("tokio") and "tokio-rustls peer" in failed:
                avail[n] = "the tokio-rustls peer did not build"
            elif n == "nginx":
                avail[n] = nginx_ok if "echo_epoll" not in failed else "the C epoll backend did not build"
            else:
                avail[n] = True
        # A mode the echo refuses with TLS (exit status 2) is n/a.
        for n in ("sockserv event",):
            if avail[n] is True:
                try:
                    p, _ = run.start_server(n, "tcp", run.SERVER_CPU)
                    run.stop_server(p)
                except run.Unavailable:
                    avail[n] = "this build's echo refuses --tls-cert with --mode event (exit status 2)"
                    log(f"{n}: n/a: {avail[n]}")
                except RuntimeError as e:
                    avail[n] = str(e)[:200]
                    log(f"{n}: n/a: {e}")
        results, raw, mem = {}, {}, {}
        for key, title, args, buf in WORKLOADS:
            if key not in keys:
                continue
            log(f"== {title}")
            runs = {n: [] for n in NAMES if avail[n] is True}
            for rep in range(reps):
                for n in runs:
                    try:
                        r = run.one_point(n, "tcp", args + ["--tls"], False, warmup, duration, buf)
                        log(f"  [{rep + 1}/{reps}] {n:30s} {r['rps']:>10,.0f} req/s  p99 {r['p99_us'] or 0:>9,.0f} us  "
                            f"server {r['server_cpu_us_per_req'] or 0:7.1f} us/req  load {r['self_cpu_us_per_req'] or 0:6.1f} "
                            f"us/req  others {r.get('other_util') or 0:.2f}  err {r['errors'] + r['mismatches']} "
                            f"stalled {r['stalled']}")
                    except Exception as e:  # one server failing must not end the run
                        r = {"error": str(e)[:300]}
                        log(f"  [{rep + 1}/{reps}] {n}: {r['error']}")
                    runs[n].append(r)
            results[key] = {n: run.summarize(v) for n, v in runs.items()}
            for n in NAMES:
                if avail[n] is not True:
                    results[key][n] = {"n": 0, "error": "n/a"}
            raw[key] = runs
        if "tlsmem" in keys:
            log(f"== memory: {MEM_CONNS} idle TLS connections")
            for rep in range(1 if a.quick else min(reps, 2)):
                for n in MEM_NAMES:
                    if avail[n] is not True:
                        mem.setdefault(n, []).append({"error": "n/a"})
                        continue
                    try:
                        r = one_hold(n, MEM_CONNS)
                        log(f"  {n:30s} held {r['held']} -> {r['bytes_per_conn']} B/conn")
                    except Exception as e:
                        r = {"error": str(e)[:300]}
                        log(f"  {n}: {r['error']}")
                    mem.setdefault(n, []).append(r)
            raw["mem"] = mem
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    date = datetime.datetime.now()
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip() if shutil.which("nginx") else "nginx n/a"
    try:
        blocks = open(os.path.join(BENCH, "tokio-tls", "Cargo.lock")).read().split("[[package]]")
        tokio_rustls = next(b.split('version = "')[1].split('"')[0] for b in blocks if 'name = "tokio-rustls"' in b)
    except (OSError, StopIteration, IndexError):
        tokio_rustls = "?"
    meta = {"date": date.strftime("%Y-%m-%d %H:%M"), "quick": a.quick, "reps": reps, "warmup": warmup,
            "duration": duration, "m": run.machine(), "load_start": load_start, "load_end": run.loadavg(),
            "elapsed": time.monotonic() - t_start, "argv": sys.argv[1:], "rustls": versions.get("sockserv-tls"),
            "rustls_all": versions, "tokio_rustls": tokio_rustls, "nginx": nginx_v.replace("nginx version: ", "")}
    os.makedirs(os.path.join(BENCH, "results"), exist_ok=True)
    out = a.out or os.path.join(BENCH, "results", date.strftime("%Y-%m-%d") + "-tls" + ("-quick" if a.quick else "") + ".md")
    text = render(meta, results, mem, avail)
    print(text)
    with open(out, "w") as f:
        f.write(text)
    with open(os.path.splitext(out)[0] + ".json", "w") as f:
        json.dump({"meta": meta, "summary": results, "mem": mem, "avail": avail, "raw": raw}, f, indent=1)
    log(f"wrote {os.path.relpath(out, ROOT)} (+ .json)")
