//! The `smoltcp_http` example (the `http_server` handler serving a site
//! from memory on smoltcp) against the Linux kernel's TCP stack and real
//! clients (curl, Python's http.client) over a TAP device, inside a
//! network namespace this test creates (`unshare --net`).
//!
//! Needs root: for other users it is skipped with a `SKIPPED (needs
//! root)` line (failed when `SOCKSERV_REQUIRE_ROOT_TESTS=1`, as `.ci/run`
//! sets).

mod util;

use std::path::PathBuf;
use std::process::Command;

/// The example, built with the facade's `tap` feature and this profile.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = profile_dir.join("examples").join("smoltcp_http");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--features", "tap", "--example", "smoltcp_http"]);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    assert!(build.status().unwrap().success(), "building the smoltcp_http example failed");
    path
}

/// Runs inside the namespace: `$1` is the example.
const SCRIPT: &str = r#"
set -u
example=$1
fail() { echo "FAIL: $*"; exit 1; }
ip link set lo up || fail "cannot configure the namespace's loopback"
ip tuntap add dev tap0 mode tap || { echo "FAIL: cannot create a TAP device here"; exit 3; }
ip addr add 192.168.69.100/24 dev tap0 || fail "cannot address tap0"
ip link set tap0 up || fail "cannot bring tap0 up"
pid=
trap '[ -n "$pid" ] && kill -TERM $pid 2>/dev/null && wait $pid' EXIT
for mode in sync event; do
    out=$(mktemp)
    timeout -s KILL 100 "$example" --tap tap0 --addr 192.168.69.1:8080 --mode $mode >"$out" 2>&1 &
    pid=$!
    for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done
    [ "$(head -1 "$out")" = "listening on 192.168.69.1:8080" ] || fail "first line: $(cat "$out")"
    url=http://192.168.69.1:8080
    echo "=== $mode"
    # Keep-alive across URLs, one connection.
    curl -sS -v --max-time 20 $url/ $url/style.css $url/docs/readme.txt -o /dev/null -o /dev/null -o - \
        2>"$out.curl" || fail "curl: $(cat "$out.curl")"
    grep -c "Re-using existing connection" "$out.curl"
    grep "^< HTTP/1.1" "$out.curl" | tr -d '\r'
    grep -i "^< content-type" "$out.curl" | tr -d '\r'
    curl -sS --max-time 20 $url/ | grep -q "Hello from smoltcp" && echo "index served"
    curl -sS --max-time 20 $url/docs/ | grep -o 'href="[^"]*"' | tr '\n' ' '; echo
    for p in docs nothing ../index.html; do
        curl -sS --max-time 20 --path-as-is -o /dev/null -w "%{http_code} " $url/$p
    done; echo
    curl -sS --max-time 20 -r 0-4 $url/docs/readme.txt; echo
    curl -sS --max-time 20 -o /dev/null -w "%{http_code}\n" -X POST -d x=1 $url/
    python3 -c "
import http.client
c = http.client.HTTPConnection('192.168.69.1', 8080, timeout=20)
for p in ['/', '/docs/data.json', '/style.css', '/nope']:
    c.request('GET', p); r = c.getresponse(); b = r.read()
    print('python', p, r.status, len(b))
" || fail "python client"
    kill -TERM $pid; wait $pid; status=$?; pid=
    [ $status = 0 ] || fail "exit status $status after SIGTERM: $(cat "$out")"
    echo "stopped with status 0"
done
echo "ALL OK"
"#;

#[test]
fn smoltcp_http_serves_a_site_from_memory_over_tap() {
    if !util::root::can_run("smoltcp_http over a TAP device") {
        return;
    }
    let example = example();
    let dir = std::env::temp_dir().join(format!("sockserv-tap-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("tap.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = Command::new("timeout")
        .args(["-s", "KILL", "300", "unshare", "--net", "--", "bash"])
        .arg(&script)
        .arg(&example)
        .output()
        .expect("cannot run timeout/unshare");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "status {:?}:\n{stdout}",
        out.status
    );
    for mode in ["sync", "event"] {
        let section = stdout.split(&format!("=== {mode}")).nth(1).unwrap_or_default();
        let section = section.split("===").next().unwrap_or_default();
        let expected = [
            "2\n",
            "< HTTP/1.1 200 OK\n< HTTP/1.1 200 OK\n< HTTP/1.1 200 OK\n",
            "< Content-Type: text/html\n< Content-Type: text/css\n< Content-Type: text/plain\n",
            "index served\n",
            "href=\"data.json\" href=\"readme.txt\" \n",
            "301 404 200 \n",
            "Serve\n",
            "501\n",
            "python / 200 ",
            "python /docs/data.json 200 18\n",
            "python /style.css 200 34\n",
            "python /nope 404 ",
            "stopped with status 0",
        ];
        for e in expected {
            assert!(section.contains(e), "{mode}: {e:?} missing in:\n{section}");
        }
    }
}
