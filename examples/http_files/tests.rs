//! The answers without a socket, and the blocking handler on the core's
//! mock transport (the same `Http<Files>` the example serves).

use super::*;
use sockserv::driver::Stream;
use sockserv::mock::{MockConn, MockListener, MockNet};
use sockserv::std_adapter::Address;
use sockserv::{Inline, Server, ShutdownFlag, service_fn};
use sockserv_http::Http;

static SITE: &[(&str, &[u8])] = &[
    ("index.html", b"<h1>hi</h1>\n"),
    ("a b&c.txt", b"0123456789"),
    ("css/site.css", b"body{}\n"),
];

fn get(target: &str) -> Answer {
    let request = Request { method: "GET".into(), target: target.into(), ..Request::default() };
    answer(&Source::Memory(SITE), &request)
}

#[test]
fn paths_stay_beneath_the_top() {
    assert_eq!(translate("/a/./b/../c?x=/../..#f").unwrap(), b"a/c");
    assert_eq!(translate("/../../etc/passwd").unwrap(), b"etc/passwd");
    assert_eq!(translate("/%2e%2e/%2E%2E/etc%2fpasswd").unwrap(), b"etc/passwd");
    assert_eq!(translate("/..%2f..%2fx").unwrap(), b"x");
    assert_eq!(translate("/a%00b"), None);
    assert_eq!(translate("/").unwrap(), b"");
}

#[test]
fn links_are_quoted_as_python_quotes() {
    assert_eq!(quote(b"a b&c<\"x\">/~_.-"), "a%20b%26c%3C%22x%22%3E/~_.-");
    assert_eq!(quote("é".as_bytes()), "%C3%A9");
}

#[test]
fn ranges() {
    use RangeAsked::*;
    assert_eq!(parse_range("bytes=0-3", 10), Part(0, 3));
    assert_eq!(parse_range("bytes=5-", 10), Part(5, 9));
    assert_eq!(parse_range("bytes=-3", 10), Part(7, 9));
    assert_eq!(parse_range("bytes=-30", 10), Part(0, 9));
    assert_eq!(parse_range("bytes=8-100", 10), Part(8, 9));
    assert_eq!(parse_range("bytes=10-", 10), Unsatisfiable);
    assert_eq!(parse_range("bytes=99999999999999999999999-", 10), Unsatisfiable);
    assert_eq!(parse_range("bytes=0-99999999999999999999999", 10), Part(0, 9));
    assert_eq!(parse_range("bytes=-0", 10), Unsatisfiable);
    assert_eq!(parse_range("bytes=0-1,3-4", 10), Whole);
    assert_eq!(parse_range("bytes=4-2", 10), Whole);
    assert_eq!(parse_range("items=0-1", 10), Whole);
    assert_eq!(parse_range("bytes=x-1", 10), Whole);
}

#[test]
fn http_dates_parse_back() {
    for t in [0, 784_111_777, 1_700_000_000, 4_102_444_800] {
        let text = http_date(t);
        assert_eq!(parse_http_date(std::str::from_utf8(&text).unwrap()), Some(t));
    }
    assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
    assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
    assert_eq!(parse_http_date("garbage"), None);
}

#[test]
fn python_s_answers() {
    assert_eq!(get("/").status, 200);
    let Body::File { len, .. } = get("/?q=1").body else { panic!("index.html") };
    assert_eq!(len, 12);
    assert_eq!(get("/css").status, 301);
    assert!(get("/css?x").fields.contains(&("Location", b"/css/?x".to_vec())));
    let listing = get("/css/");
    let Body::Bytes(page) = &listing.body else { panic!() };
    assert!(String::from_utf8_lossy(page).contains("<li><a href=\"site.css\">site.css</a></li>"));
    assert_eq!(get("/a%20b%26c.txt").status, 200);
    assert_eq!(get("/a%20b%26c.txt/").status, 404);
    assert_eq!(get("/missing").status, 404);
    let post = Request { method: "POST".into(), target: "/".into(), ..Request::default() };
    assert_eq!(answer(&Source::Memory(SITE), &post).status, 501);
}

#[test]
fn a_listing_escapes_names_and_quotes_links() {
    static ODD: &[(&str, &[u8])] = &[("<b>&x.txt", b""), ("dir/é.txt", b"")];
    let request = Request { method: "GET".into(), target: "/".into(), ..Request::default() };
    let Body::Bytes(page) = answer(&Source::Memory(ODD), &request).body else { panic!() };
    let page = String::from_utf8(page).unwrap();
    assert!(
        page.contains("<li><a href=\"%3Cb%3E%26x.txt\">&lt;b&gt;&amp;x.txt</a></li>"),
        "{page}"
    );
    assert!(page.contains("<li><a href=\"dir/\">dir/</a></li>"), "{page}");
    assert!(page.contains("<title>Directory listing for /</title>"), "{page}");
}

/// The mock's listener, handing out std addresses as the example's server does.
fn listener<'n, 's>(net: &'n MockNet<'s>) -> Stream<MockListener<'n, 's, Address>> {
    Stream(net.listener())
}

#[test]
fn the_blocking_handler_on_the_mock_serves_keep_alive_ranges_and_304() {
    let requests = b"GET /a%20b%26c.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=2-4\r\n\r\n\
        HEAD /css/site.css HTTP/1.1\r\nHost: x\r\n\r\n\
        GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n\
        GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let net = MockNet::new();
    net.connect(MockConn::new(1, requests).one_byte_at_a_time());
    let flag = ShutdownFlag::new();
    let source = Arc::new(Source::Memory(SITE));
    let service = service_fn(move |_| Http::<_>::new(Files::new(Arc::clone(&source))));
    let mut server = Server::new(listener(&net), service, &net, &flag, Inline::new());
    server.handle_request().unwrap();
    let out = net.conn(0).unwrap();
    let out = String::from_utf8_lossy(out.output()).into_owned();
    let statuses: Vec<_> = out.split("HTTP/1.1 ").skip(1).map(|s| &s[..3]).collect();
    assert_eq!(statuses, ["206", "200", "404", "200"], "{out}");
    assert!(out.contains("Content-Range: bytes 2-4/10\r\n"), "{out}");
    assert!(out.contains("\r\n\r\n234HTTP/1.1 200 OK"), "{out}");
    assert!(
        out.contains("Content-Type: text/css\r\nContent-Length: 7\r\n\r\nHTTP/1.1 404"),
        "{out}"
    );
    assert!(out.ends_with("\r\n\r\n<h1>hi</h1>\n"), "{out}");
}
