//! The `http_server` example (the twin of `python3 -m http.server`) as a
//! real process, with real clients: curl (keep-alive across URLs, HEAD,
//! ranges, uploads, HTTP/1.0), Python's `http.client` and `urllib`,
//! `wget -r` (the mirrored tree compared byte for byte), headless
//! Chromium (a listing's DOM and a screenshot that is not blank), `ab` and
//! `wrk` (every request answered). Hostile paths (`..` in every spelling,
//! links out, a directory it may not read, huge ranges), and the same
//! request list against `python3 -m http.server` with the answers that
//! should agree compared.

mod util;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::process::example_binary;

/// A server process (ours, or Python's): its first line and port.
struct Server {
    child: Child,
    line: String,
    port: u16,
}

impl Server {
    fn start(dir: &Path, args: &[&str]) -> Self {
        let mut cmd = Command::new(example_binary("http_server"));
        cmd.args(["0", "-d"]).arg(dir).args(args);
        Self::spawn(cmd)
    }

    /// As `nobody` (a root test user reads everything: permissions would
    /// not be tested).
    fn start_unprivileged(dir: &Path, args: &[&str]) -> Self {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        cmd.arg(example_binary("http_server")).args(["0", "-d"]).arg(dir).args(args);
        Self::spawn(cmd)
    }

    fn python(dir: &Path, args: &[&str]) -> Self {
        let mut cmd = Command::new("python3");
        cmd.args(["-u", "-m", "http.server", "0", "-d"]).arg(dir).args(args);
        Self::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let line = line.trim_end().to_owned();
        let port = line
            .split(" port ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("first line: {line:?}"));
        Self { child, line, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// SIGTERM / SIGINT: the exit status must be 0 within 10 s.
    fn stop(mut self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit status after signal {sig}: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "still running 10 s after signal {sig}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory tree of our own in the temporary directory: files of
/// several types, a 3 MB file, odd names, an index.html, links in and
/// out, a secret beside it, a directory nobody may read.
fn tree(tag: &str) -> PathBuf {
    let top = std::env::temp_dir().join(format!("sockserv-http-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&top);
    let root = top.join("root");
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(root.join("site")).unwrap();
    std::fs::create_dir_all(root.join("locked")).unwrap();
    std::fs::write(top.join("secret.txt"), "SECRET\n").unwrap();
    std::fs::write(root.join("a.txt"), "hello\n").unwrap();
    std::fs::write(root.join("page.html"), "<p>page</p>\n").unwrap();
    std::fs::write(root.join("data.json"), "{\"x\": 1}\n").unwrap();
    std::fs::write(root.join("style.css"), "body {}\n").unwrap();
    std::fs::write(root.join("app.js"), "let x;\n").unwrap();
    std::fs::write(root.join("blob.bin"), [0u8, 1, 2, 3]).unwrap();
    std::fs::write(root.join("noext"), "plain").unwrap();
    std::fs::write(root.join("we ird&<b>.txt"), "odd\n").unwrap();
    std::fs::write(root.join("ünï.txt"), "utf8\n").unwrap();
    std::fs::write(root.join("sub/deeper/x.c"), "int x;\n").unwrap();
    std::fs::write(root.join("sub/b.md"), "# b\n").unwrap();
    std::fs::write(root.join("site/index.html"), "<h1>site</h1>\n").unwrap();
    std::fs::write(root.join("locked/inside.txt"), "locked\n").unwrap();
    let big: Vec<u8> =
        (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(root.join("big.bin"), big).unwrap();
    symlink("a.txt", root.join("link-in")).unwrap();
    symlink("/etc/passwd", root.join("link-abs-out")).unwrap();
    symlink("../secret.txt", root.join("link-rel-out")).unwrap();
    symlink("..", root.join("link-up")).unwrap();
    for dir in [&top, &root] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(root.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    root
}

/// An answer read from a raw socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    fields: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// Sends `head` (a request line and fields, without the blank line) with
/// `Connection: close` and reads the answer to EOF.
fn raw(port: u16, request_line: &str, extra: &[&str]) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!("{request_line}\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for f in extra {
        head += f;
        head += "\r\n";
    }
    head += "\r\n";
    s.write_all(head.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    parse(&out)
}

fn parse(out: &[u8]) -> Answer {
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&out[..end]);
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let fields = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
        .collect();
    Answer { status, fields, body: out[end..].to_vec() }
}

fn get(port: u16, path: &str) -> Answer {
    raw(port, &format!("GET {path} HTTP/1.1"), &[])
}

fn run(cmd: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} runs (installed by .ci/run): {e}"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_first_line_is_python_s_and_every_mode_stops_cleanly() {
    let root = tree("modes");
    for mode in ["sync", "threading", "forking", "event"] {
        let server = Server::start(&root, &["-b", "127.0.0.1", "--mode", mode]);
        let p = server.port;
        assert_eq!(
            server.line,
            format!("Serving HTTP on 127.0.0.1 port {p} (http://127.0.0.1:{p}/) ...")
        );
        assert_eq!(get(p, "/a.txt").body, b"hello\n", "{mode}");
        // An idle keep-alive client must not hold the stop.
        let _idle = TcpStream::connect(("127.0.0.1", p)).unwrap();
        server.stop(if mode == "forking" { libc::SIGINT } else { libc::SIGTERM });
    }
    // Python's first line for ::1, port aside.
    let ours = Server::start(&root, &["-b", "::1"]);
    let python = Server::python(&root, &["-b", "::1"]);
    let expected = python.line.replace(&python.port.to_string(), &ours.port.to_string());
    assert_eq!(ours.line, expected);
    // Without -b: `::` taking IPv4 too (Python's dual-stack server where
    // IPv6 comes first), both families served.
    let ours = Server::start(&root, &[]);
    let p = ours.port;
    assert_eq!(ours.line, format!("Serving HTTP on :: port {p} (http://[::]:{p}/) ..."));
    assert_eq!(get(p, "/a.txt").body, b"hello\n");
    let mut v6 = TcpStream::connect(("::1", p)).unwrap();
    v6.write_all(b"GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    v6.read_to_end(&mut out).unwrap();
    assert!(out.ends_with(b"\r\n\r\nhello\n"));
    ours.stop(libc::SIGINT);
}

/// A self-signed certificate for 127.0.0.1 (openssl): (cert, key).
fn certificate(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (ok, _, err) = run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
    );
    assert!(ok, "{err}");
    (cert.to_string_lossy().into_owned(), key.to_string_lossy().into_owned())
}

#[test]
fn https_in_the_blocking_modes_and_a_usage_error_in_event_mode() {
    let root = tree("tls");
    let (cert, key) = certificate(root.parent().unwrap());
    let out = Command::new(example_binary("http_server"))
        .args(["0", "--mode", "event", "--tls-cert", &cert, "--tls-key", &key])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"));
    for mode in ["threading", "forking"] {
        let server = Server::start(
            &root,
            &["-b", "127.0.0.1", "--mode", mode, "--tls-cert", &cert, "--tls-key", &key],
        );
        let url = format!("https://127.0.0.1:{}", server.port);
        let (ok, out, err) = run(
            "curl",
            &[
                "-sS",
                "-v",
                "--cacert",
                &cert,
                &format!("{url}/a.txt"),
                &format!("{url}/big.bin"),
                "-o",
                "/dev/null",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download} ",
            ],
        );
        assert!(ok, "{mode}: {err}");
        assert_eq!(out.trim(), "6 3000000", "{mode}: {err}");
        assert!(err.contains("Re-using existing connection"), "{err}");
        server.stop(libc::SIGTERM);
    }
}

#[test]
fn curl_reuses_the_connection_and_gets_heads_ranges_and_501() {
    curl_checks("threading");
}

#[test]
fn curl_in_event_mode_streams_files_too() {
    curl_checks("event");
}

fn curl_checks(mode: &str) {
    let root = tree(&format!("curl-{mode}"));
    let server = Server::start(&root, &["-b", "127.0.0.1", "--mode", mode]);
    let (ok, out, err) = run(
        "curl",
        &["-sS", "-v", &server.url("/a.txt"), &server.url("/sub/b.md"), &server.url("/")],
    );
    assert!(ok, "{err}");
    assert_eq!(err.matches("Connected to").count(), 1, "{err}");
    assert_eq!(err.matches("Re-using existing connection").count(), 2, "{err}");
    assert!(out.starts_with("hello\n# b\n<!DOCTYPE HTML>"), "{out}");
    // HEAD: GET's length, no body.
    let (ok, out, err) = run("curl", &["-sS", "-I", &server.url("/big.bin")]);
    assert!(ok, "{err}");
    assert!(out.contains("Content-Length: 3000000\r\n"), "{out}");
    assert!(out.contains("Content-Type: application/octet-stream\r\n"), "{out}");
    // Ranges.
    let big = std::fs::read(root.join("big.bin")).unwrap();
    let part = Command::new("curl")
        .args(["-sS", "-r", "1000-1999", &server.url("/big.bin")])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(part, &big[1000..2000]);
    let part = Command::new("curl")
        .args(["-sS", "-r", "-500", &server.url("/big.bin")])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(part, &big[big.len() - 500..]);
    // Whole file, streamed.
    let whole = Command::new("curl").args(["-sS", &server.url("/big.bin")]).output().unwrap();
    assert!(whole.stdout == big, "3 MB file differs");
    // HTTP/1.0: answered and closed.
    let (ok, out, err) = run("curl", &["-sS", "-v", "--http1.0", &server.url("/a.txt")]);
    assert!(ok && out == "hello\n", "{err}");
    assert!(err.contains("< HTTP/1.0 200") || err.contains("< HTTP/1.1 200"), "{err}");
    // An upload: 501 as Python answers PUT, and the server goes on.
    let upload = root.parent().unwrap().join("upload.bin");
    std::fs::write(&upload, vec![7u8; 200_000]).unwrap();
    let (ok, out, err) = run(
        "curl",
        &[
            "-sS",
            "-T",
            upload.to_str().unwrap(),
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            &server.url("/up.bin"),
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "501");
    assert!(!root.join("up.bin").exists());
    assert_eq!(get(server.port, "/a.txt").body, b"hello\n");
    server.stop(libc::SIGTERM);
}

#[test]
fn python_http_client_and_urllib() {
    python_checks("threading");
}

#[test]
fn python_http_client_and_urllib_in_event_mode() {
    python_checks("event");
}

fn python_checks(mode: &str) {
    let root = tree(&format!("python-{mode}"));
    let server = Server::start(&root, &["-b", "127.0.0.1", "--mode", mode]);
    let script = r#"
import http.client, sys, urllib.request, urllib.error
port = int(sys.argv[1])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
c.request("GET", "/a.txt"); r = c.getresponse(); assert r.status == 200 and r.read() == b"hello\n"
sock = c.sock
lm = r.getheader("Last-Modified"); assert lm, r.getheaders()
c.request("GET", "/a.txt", headers={"If-Modified-Since": lm}); r = c.getresponse()
assert r.status == 304 and r.read() == b"", r.status
c.request("GET", "/a.txt", headers={"If-Modified-Since": lm, "If-None-Match": "x"}); r = c.getresponse()
assert r.status == 200 and r.read() == b"hello\n"
c.request("HEAD", "/page.html"); r = c.getresponse()
assert r.status == 200 and r.getheader("Content-Length") == "12" and r.read() == b""
c.request("GET", "/big.bin", headers={"Range": "bytes=10-19"}); r = c.getresponse()
assert r.status == 206 and r.getheader("Content-Range") == "bytes 10-19/3000000", r.getheaders()
assert len(r.read()) == 10
c.request("GET", "/big.bin", headers={"Range": "bytes=3000000-"}); r = c.getresponse()
assert r.status == 416 and r.getheader("Content-Range") == "bytes */3000000"; r.read()
c.request("POST", "/a.txt", body=b"x" * 1000); r = c.getresponse()
assert r.status == 501 and b"Unsupported method ('POST')" in r.read()
c.request("GET", "/nothing"); r = c.getresponse()
assert r.status == 404 and b"Error code: 404" in r.read()
assert c.sock is sock, "one connection for all"
with urllib.request.urlopen(f"http://127.0.0.1:{port}/sub") as r:
    assert r.url.endswith("/sub/") and b"deeper/" in r.read()
with urllib.request.urlopen(f"http://127.0.0.1:{port}/site/") as r:
    assert r.read() == b"<h1>site</h1>\n"
try:
    urllib.request.urlopen(f"http://127.0.0.1:{port}/link-abs-out")
    raise SystemExit("link out served")
except urllib.error.HTTPError as e:
    assert e.code == 404
print("ok")
"#;
    let (ok, out, err) = run("python3", &["-c", script, &server.port.to_string()]);
    assert!(ok && out.trim() == "ok", "{out}{err}");
    server.stop(libc::SIGINT);
}

#[test]
fn wget_mirrors_the_tree_byte_for_byte() {
    let root = tree("wget");
    std::fs::set_permissions(root.join("locked"), std::fs::Permissions::from_mode(0o755)).unwrap();
    for link in ["link-in", "link-abs-out", "link-rel-out", "link-up"] {
        std::fs::remove_file(root.join(link)).unwrap();
    }
    let server = Server::start(&root, &["-b", "127.0.0.1"]);
    let into = root.parent().unwrap().join("mirror");
    let (ok, _, err) = run(
        "wget",
        &[
            "-q",
            "-r",
            "-np",
            "-nH",
            "-l",
            "10",
            "-R",
            "index.html*",
            "-P",
            into.to_str().unwrap(),
            &server.url("/"),
        ],
    );
    assert!(ok, "{err}");
    let mut expected = files(&root);
    // A directory with an index.html is served as its index.
    expected.retain(|p, _| !p.starts_with("site/"));
    let mut got = files(&into);
    got.retain(|p, _| !p.starts_with("site/"));
    assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    assert!(got == expected, "contents differ");
    server.stop(libc::SIGTERM);
}

/// Every regular file beneath `dir`, by relative path, with its bytes
/// (index.html listings wget saved left out).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                if !rel.ends_with("index.html") {
                    out.insert(rel, std::fs::read(e.path()).unwrap());
                }
            }
        }
    }
    out
}

#[test]
fn chromium_shows_the_listing() {
    let root = tree("chromium");
    let server = Server::start(&root, &["-b", "127.0.0.1"]);
    let shot = root.parent().unwrap().join("shot.png");
    let profile = root.parent().unwrap().join("profile");
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok())
        .expect("chromium is installed (.ci/run installs it)");
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=800,600",
    ];
    let user_dir = format!("--user-data-dir={}", profile.display());
    let mut dom = Command::new(chromium);
    dom.args(common).arg(&user_dir).args(["--dump-dom", &server.url("/")]);
    let out = dom.output().unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    for name in ["a.txt", "big.bin", "sub/", "we ird&amp;&lt;b&gt;.txt", "ünï.txt", "link-in@"] {
        assert!(dom.contains(name), "{name} not in the DOM: {dom}");
    }
    assert!(dom.contains("Directory listing for /"), "{dom}");
    let mut shoot = Command::new(chromium);
    shoot.args(common).arg(&user_dir).arg(format!("--screenshot={}", shot.display()));
    let out = shoot.arg(server.url("/")).output().unwrap();
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    // Not blank: more than one colour among its pixels (decoded by
    // Python's zlib: the PNG's IDAT, filter bytes included, is enough).
    let check = r#"
import sys, zlib, struct
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n"
i, idat, w = 8, b"", 0
while i < len(data):
    n, kind = struct.unpack(">I4s", data[i:i+8])
    if kind == b"IHDR": w, h = struct.unpack(">II", data[i+8:i+16])
    if kind == b"IDAT": idat += data[i+8:i+8+n]
    i += 12 + n
raw = zlib.decompress(idat)
row = len(raw) // h
dark = sum(1 for y in range(h) for b in raw[y*row+1:(y+1)*row:3] if b < 128)
print(w, h, dark)
assert dark > 200, dark
"#;
    let (ok, out, err) = run("python3", &["-c", check, shot.to_str().unwrap()]);
    assert!(ok, "screenshot blank or unreadable: {out}{err}");
    server.stop(libc::SIGTERM);
}

#[test]
fn ab_and_wrk_get_every_answer() {
    let root = tree("load");
    for mode in ["threading", "event"] {
        let server = Server::start(&root, &["-b", "127.0.0.1", "--mode", mode]);
        let (ok, out, err) =
            run("ab", &["-q", "-k", "-n", "2000", "-c", "10", &server.url("/a.txt")]);
        assert!(ok, "{err}");
        assert!(out.contains("Complete requests:      2000"), "{out}");
        assert!(out.contains("Failed requests:        0"), "{out}");
        assert!(!out.contains("Non-2xx"), "{out}");
        let (ok, out, err) = run("wrk", &["-t1", "-c20", "-d2s", &server.url("/page.html")]);
        assert!(ok, "{err}");
        assert!(out.contains("requests in"), "{out}");
        assert!(!out.contains("Non-2xx") && !out.contains("Socket errors"), "{mode}: {out}");
        server.stop(libc::SIGTERM);
    }
}

#[test]
fn hostile_paths_stay_inside() {
    hostile_checks("threading");
}

#[test]
fn hostile_paths_stay_inside_in_event_mode() {
    hostile_checks("event");
}

fn hostile_checks(mode: &str) {
    let root = tree(&format!("hostile-{mode}"));
    let server = Server::start(&root, &["-b", "127.0.0.1", "--mode", mode]);
    let p = server.port;
    for path in [
        "/../secret.txt",
        "/../../../../etc/passwd",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2fsecret.txt",
        "/sub/..%2f..%2fsecret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/./../secret.txt",
        "/link-rel-out",
        "/link-up/secret.txt",
        "/link-abs-out",
        "//etc/passwd",
        "/%00",
        "/a.txt%00.html",
    ] {
        let a = get(p, path);
        assert!(a.status == 404, "{path}: {} {:?}", a.status, String::from_utf8_lossy(&a.body));
        assert!(!String::from_utf8_lossy(&a.body).contains("SECRET"), "{path}");
        assert!(!String::from_utf8_lossy(&a.body).contains("root:"), "{path}");
    }
    // `..` stops at the top, as in Python.
    assert_eq!(get(p, "/../a.txt").body, b"hello\n");
    assert_eq!(get(p, "/sub/%2e%2e/a.txt").body, b"hello\n");
    assert_eq!(get(p, "/link-in").body, b"hello\n");
    // A raw `..` request line, not normalised by any client.
    let a = raw(p, "GET /../../secret.txt HTTP/1.1", &[]);
    assert_eq!(a.status, 404);
    // Huge and odd ranges.
    for (range, status) in [
        ("bytes=99999999999999999999999999-", 416),
        ("bytes=0-99999999999999999999999999", 206),
        ("bytes=-99999999999999999999999999", 206),
        ("bytes=5-1", 200),
        ("bytes=0-0,2-2,4-4", 200),
        ("bytes=18446744073709551615-18446744073709551615", 416),
    ] {
        let a = raw(p, "GET /a.txt HTTP/1.1", &[&format!("Range: {range}")]);
        assert_eq!(a.status, status, "{range}");
    }
    // The server still serves.
    assert_eq!(get(p, "/a.txt").body, b"hello\n");
    server.stop(libc::SIGTERM);
}

#[test]
fn a_directory_it_may_not_read_is_403() {
    if !util::root::can_run("http_server as nobody (setpriv)") {
        return;
    }
    let root = tree("locked");
    let server = Server::start_unprivileged(&root, &["-b", "127.0.0.1"]);
    let p = server.port;
    assert_eq!(get(p, "/a.txt").body, b"hello\n");
    let a = get(p, "/locked/");
    assert_eq!(a.status, 403, "{:?}", String::from_utf8_lossy(&a.body));
    assert!(String::from_utf8_lossy(&a.body).contains("Error code: 403"));
    assert_eq!(get(p, "/locked/inside.txt").status, 403);
    assert_eq!(get(p, "/a.txt").status, 200);
    server.stop(libc::SIGTERM);
}

#[test]
fn the_same_answers_as_python_where_they_should_agree() {
    let root = tree("python-diff");
    let ours = Server::start(&root, &["-b", "127.0.0.1"]);
    let python = Server::python(&root, &["-b", "127.0.0.1"]);
    let paths = [
        "/",
        "/a.txt",
        "/page.html",
        "/data.json",
        "/style.css",
        "/app.js",
        "/blob.bin",
        "/noext",
        "/big.bin",
        "/sub",
        "/sub?x=1",
        "/sub/",
        "/sub/?q",
        "/sub/deeper/",
        "/sub/deeper/x.c",
        "/sub/b.md",
        "/site",
        "/site/",
        "/we%20ird%26%3Cb%3E.txt",
        "/%C3%BCn%C3%AF.txt",
        "/a.txt?query=1#frag",
        "/a.txt/",
        "/missing",
        "/missing/",
        "/../a.txt",
        "/%2e%2e/a.txt",
        "/sub/..%2fa.txt",
    ];
    for path in paths {
        for method in ["GET", "HEAD", "POST", "DELETE"] {
            let line = format!("{method} {path} HTTP/1.1");
            let extra: &[&str] = if method == "POST" { &["Content-Length: 0"] } else { &[] };
            let (a, b) = (raw(ours.port, &line, extra), raw(python.port, &line, extra));
            assert_eq!(a.status, b.status, "{line}");
            for field in ["content-type", "content-length", "location", "last-modified"] {
                // CPython's guess for `.c` comes from the system's
                // /etc/mime.types when there is one (text/x-csrc); ours
                // is its built-in table's (text/plain).
                if field == "content-type" && path.ends_with(".c") {
                    continue;
                }
                assert_eq!(a.fields.get(field), b.fields.get(field), "{line}: {field}");
            }
            assert!(a.body == b.body, "{line}: bodies differ");
        }
    }
    // If-Modified-Since, both ways.
    let lm = get(python.port, "/a.txt").fields["last-modified"].clone();
    for ims in [lm.as_str(), "Thu, 01 Jan 1970 00:00:00 GMT", "garbage"] {
        let f = format!("If-Modified-Since: {ims}");
        let (a, b) = (
            raw(ours.port, "GET /a.txt HTTP/1.1", &[&f]),
            raw(python.port, "GET /a.txt HTTP/1.1", &[&f]),
        );
        assert_eq!(a.status, b.status, "{ims}");
    }
    ours.stop(libc::SIGTERM);
}

/// The read system calls a process made (`/proc/PID/io`'s `syscr`).
fn read_calls(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    let line = io.lines().find_map(|l| l.strip_prefix("syscr: ")).unwrap();
    line.trim().parse().unwrap()
}

/// In the threading mode a file leaves by `sendfile(2)`: a 3 MB download
/// costs a few system calls that count as reads (the request's, the
/// sendfile calls), not one per 64 KiB piece (46) as a read/write copy
/// would.
#[test]
fn a_large_file_leaves_by_sendfile() {
    let root = tree("sendfile");
    let server = Server::start(&root, &["-b", "127.0.0.1"]);
    let pid = server.child.id();
    let before = read_calls(pid);
    let big = Command::new("curl").args(["-sS", &server.url("/big.bin")]).output().unwrap();
    assert_eq!(big.stdout.len(), 3_000_000);
    let calls = read_calls(pid) - before;
    assert!(calls < 20, "{calls} read calls for a 3 MB file");
    server.stop(libc::SIGTERM);
}
