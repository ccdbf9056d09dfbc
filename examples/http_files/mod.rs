//! What `python3 -m http.server` answers (CPython's
//! `SimpleHTTPRequestHandler`), as a function from a request to an
//! [`Answer`], over a directory on disk or a few files in memory; and the
//! two ways sockserv's HTTP layer sends it: [`Files`] for the blocking
//! handler (`sockserv::http::Http`), [`FilesEvents`] for event mode.
//! `#[path]`-included by the `http_server` and `smoltcp_http` examples.

#![allow(dead_code)] // each example uses its part

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use sockserv::embedded_io::{Read, Write};
use sockserv::std_adapter::files;
use sockserv_http::{
    BodyLength, Error, EventRespond, Reply, RequestHead, Respond, Sent, Transaction, http_date,
};

mod path;
pub use path::{percent_decode, quote, translate};

/// Where the files come from.
pub enum Source {
    /// A directory on disk, held open: every file is opened beneath it
    /// by the kernel (`openat2` with `RESOLVE_BENEATH`), so neither `..`
    /// nor a symbolic link leaves it.
    Disk(File),
    /// Files in memory, by path without the leading `/` (`index.html`,
    /// `css/site.css`); a path that is a prefix of others up to a `/` is a
    /// directory.
    Memory(&'static [(&'static str, &'static [u8])]),
}

impl Source {
    /// The directory `dir`, opened once.
    pub fn disk(dir: &Path) -> io::Result<Self> {
        let dir = File::open(dir)?;
        if !dir.metadata()?.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory"));
        }
        Ok(Self::Disk(dir))
    }
}

/// An opened file's content.
pub enum Content {
    Disk(File),
    Memory(&'static [u8]),
}

/// What a path names.
enum Node {
    Dir,
    File { content: Content, len: u64, modified: Option<SystemTime> },
}

/// Why a path names nothing servable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Miss {
    NotFound,
    Forbidden,
}

impl Source {
    /// Opens `rel` (`a/b`, no `.` / `..` / empty components; "" for the
    /// root).
    fn open(&self, rel: &[u8]) -> Result<Node, Miss> {
        match self {
            Self::Disk(root) => {
                let file = open_beneath(root, rel).map_err(miss)?;
                let meta = file.metadata().map_err(miss)?;
                if meta.is_dir() {
                    return Ok(Node::Dir);
                }
                if !meta.is_file() {
                    return Err(Miss::NotFound);
                }
                let (len, modified) = (meta.len(), meta.modified().ok());
                Ok(Node::File { content: Content::Disk(file), len, modified })
            }
            Self::Memory(files) => {
                if let Some((_, data)) = files.iter().find(|(p, _)| p.as_bytes() == rel) {
                    let len = data.len() as u64;
                    return Ok(Node::File { content: Content::Memory(data), len, modified: None });
                }
                let is_dir = rel.is_empty()
                    || files.iter().any(|(p, _)| {
                        p.as_bytes().starts_with(rel) && p.as_bytes().get(rel.len()) == Some(&b'/')
                    });
                if is_dir { Ok(Node::Dir) } else { Err(Miss::NotFound) }
            }
        }
    }

    /// The entries of directory `rel`: (name, is a directory, is a link).
    fn list(&self, rel: &[u8]) -> Result<Vec<(Vec<u8>, bool, bool)>, Miss> {
        match self {
            Self::Disk(root) => {
                let dir = open_beneath(root, rel).map_err(miss)?;
                // The directory as opened beneath the root (no second
                // lookup by name that a swapped link could redirect).
                let at = format!("/proc/self/fd/{}", dir.as_raw_fd());
                let mut names = Vec::new();
                for entry in std::fs::read_dir(&at).map_err(miss)? {
                    let entry = entry.map_err(miss)?;
                    let link = entry.file_type().is_ok_and(|t| t.is_symlink());
                    // Python's `os.path.isdir` follows links.
                    let is_dir = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
                    names.push((entry.file_name().as_bytes().to_vec(), is_dir, link));
                }
                Ok(names)
            }
            Self::Memory(files) => {
                let prefix = if rel.is_empty() { Vec::new() } else { [rel, b"/"].concat() };
                let mut names: Vec<(Vec<u8>, bool, bool)> = Vec::new();
                for (p, _) in files.iter() {
                    let Some(rest) = p.as_bytes().strip_prefix(&prefix[..]) else { continue };
                    let (name, is_dir) = match rest.iter().position(|&b| b == b'/') {
                        Some(i) => (&rest[..i], true),
                        None => (rest, false),
                    };
                    if !names.iter().any(|(n, _, _)| n == name) {
                        names.push((name.to_vec(), is_dir, false));
                    }
                }
                Ok(names)
            }
        }
    }
}

fn miss(e: io::Error) -> Miss {
    match e.kind() {
        io::ErrorKind::PermissionDenied => Miss::Forbidden,
        _ => Miss::NotFound,
    }
}

/// Opens `rel` beneath `root` (the std adapter's `open_beneath`: the
/// kernel refuses any `..` or symbolic link that would leave it).
fn open_beneath(root: &File, rel: &[u8]) -> io::Result<File> {
    files::open_beneath(root, OsStr::from_bytes(rel))
}

/// A request as the answer needs it (owned: in event mode the head's bytes
/// are gone before the answer).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub if_modified_since: Option<String>,
    pub if_none_match: bool,
    pub range: Option<String>,
    pub if_range: Option<String>,
}

impl Request {
    pub fn of(head: &RequestHead<'_, '_>) -> Self {
        let text = |name| head.header(name).map(|v| String::from_utf8_lossy(v).into_owned());
        Self {
            method: head.method.to_owned(),
            target: head.target.to_owned(),
            if_modified_since: text("If-Modified-Since"),
            if_none_match: head.header("If-None-Match").is_some(),
            range: text("Range"),
            if_range: text("If-Range"),
        }
    }
}

/// A response: status, fields, body.
pub struct Answer {
    pub status: u16,
    pub fields: Vec<(&'static str, Vec<u8>)>,
    pub body: Body,
}

pub enum Body {
    Bytes(Vec<u8>),
    /// `len` bytes of `content` from `start`.
    File {
        content: Content,
        start: u64,
        len: u64,
    },
}

impl Answer {
    fn new(status: u16, body: Body) -> Self {
        let fields = vec![("Server", b"sockserv-http_server".to_vec())];
        Self { status, fields, body }
    }

    fn field(mut self, name: &'static str, value: impl Into<Vec<u8>>) -> Self {
        self.fields.push((name, value.into()));
        self
    }

    pub fn body_len(&self) -> u64 {
        match &self.body {
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }
}

/// CPython's error page (`DEFAULT_ERROR_MESSAGE`), with its
/// `text/html;charset=utf-8`.
pub fn error(status: u16, message: &str) -> Answer {
    let explain = match status {
        400 => "Bad request syntax or unsupported method",
        403 => "Request forbidden -- authorization will not help",
        404 => "Nothing matches the given URI",
        416 => "Cannot satisfy request range",
        501 => "Server does not support this operation",
        _ => "Server got itself in trouble",
    };
    let page = format!(
        "<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head>\n        <meta charset=\"utf-8\">\n        \
         <title>Error response</title>\n    </head>\n    <body>\n        <h1>Error response</h1>\n        \
         <p>Error code: {status}</p>\n        <p>Message: {}.</p>\n        \
         <p>Error code explanation: {status} - {}.</p>\n    </body>\n</html>\n",
        escape(message),
        escape(explain)
    );
    Answer::new(status, Body::Bytes(page.into_bytes()))
        .field("Content-Type", "text/html;charset=utf-8")
}

/// Answers `request` from `source` as `SimpleHTTPRequestHandler` would
/// (see the example's documentation for where it differs).
pub fn answer(source: &Source, request: &Request) -> Answer {
    if request.method != "GET" && request.method != "HEAD" {
        return error(501, &format!("Unsupported method ('{}')", request.method));
    }
    let Some(rel) = translate(&request.target) else {
        return error(404, "File not found");
    };
    let raw_path = request.target.split(['?', '#']).next().unwrap_or("");
    let trailing_slash = raw_path.ends_with('/');
    let node = match source.open(&rel) {
        Ok(node) => node,
        Err(Miss::Forbidden) => return error(403, "Forbidden"),
        Err(Miss::NotFound) => return error(404, "File not found"),
    };
    let (content, len, modified) = match node {
        Node::Dir if !trailing_slash => {
            // Python keeps the query (and fragment) after the new slash.
            let rest = &request.target[raw_path.len()..];
            let location = format!("{raw_path}/{rest}");
            return Answer::new(301, Body::Bytes(Vec::new())).field("Location", location);
        }
        Node::Dir => match index(source, &rel) {
            Some((content, len, modified, path)) => {
                return file(request, content, len, modified, guess_type(&path));
            }
            None => return listing(source, &rel, &request.target),
        },
        // A file named with a trailing slash (CPython issue 17324).
        Node::File { .. } if trailing_slash => return error(404, "File not found"),
        Node::File { content, len, modified } => (content, len, modified),
    };
    file(request, content, len, modified, guess_type(&rel))
}

/// `index.html` or `index.htm` in directory `rel`.
fn index(source: &Source, rel: &[u8]) -> Option<(Content, u64, Option<SystemTime>, Vec<u8>)> {
    for name in [&b"index.html"[..], b"index.htm"] {
        let path = if rel.is_empty() { name.to_vec() } else { [rel, b"/", name].concat() };
        if let Ok(Node::File { content, len, modified }) = source.open(&path) {
            return Some((content, len, modified, path));
        }
    }
    None
}

/// A file's answer: 304 for a fresh `If-Modified-Since`, 206 / 416 for a
/// `Range`, else 200 with the whole file.
fn file(
    request: &Request,
    content: Content,
    len: u64,
    modified: Option<SystemTime>,
    content_type: &'static str,
) -> Answer {
    let mtime = modified.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs());
    let last_modified = mtime.map(http_date);
    if let (Some(ims), Some(mtime), false) =
        (&request.if_modified_since, mtime, request.if_none_match)
        && let Some(since) = parse_http_date(ims)
        && mtime <= since
    {
        return with_modified(Answer::new(304, Body::Bytes(Vec::new())), &last_modified);
    }
    let range = match (&request.range, &request.if_range) {
        (Some(range), None) => parse_range(range, len),
        // A validator that is not exactly our Last-Modified: the whole file.
        (Some(range), Some(v)) if last_modified.is_some_and(|lm| lm[..] == *v.as_bytes()) => {
            parse_range(range, len)
        }
        _ => RangeAsked::Whole,
    };
    let answer = match range {
        RangeAsked::Whole => {
            Answer::new(200, Body::File { content, start: 0, len }).field("Accept-Ranges", "bytes")
        }
        RangeAsked::Part(start, end) => {
            Answer::new(206, Body::File { content, start, len: end - start + 1 })
                .field("Content-Range", format!("bytes {start}-{end}/{len}"))
        }
        RangeAsked::Unsatisfiable => {
            return error(416, "Requested Range Not Satisfiable")
                .field("Content-Range", format!("bytes */{len}"));
        }
    };
    with_modified(answer.field("Content-Type", content_type), &last_modified)
}

fn with_modified(answer: Answer, last_modified: &Option<[u8; 29]>) -> Answer {
    match last_modified {
        Some(lm) => answer.field("Last-Modified", lm.to_vec()),
        None => answer,
    }
}

/// What a `Range` field asks of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
enum RangeAsked {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range (`a-b`, `a-`, `-n`). Several ranges, another unit
/// or bad syntax: the whole file (RFC 9110 lets a server ignore `Range`).
/// Numbers too large for `u64` saturate (a huge start is unsatisfiable).
fn parse_range(field: &str, len: u64) -> RangeAsked {
    let Some(spec) = field.trim().strip_prefix("bytes=") else { return RangeAsked::Whole };
    let spec = spec.trim();
    if spec.contains(',') {
        return RangeAsked::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else { return RangeAsked::Whole };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(s.bytes().fold(0u64, |n, d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))))
    };
    if first.is_empty() {
        // The last `suffix` bytes.
        return match number(last) {
            None => RangeAsked::Whole,
            Some(0) => RangeAsked::Unsatisfiable,
            Some(_) if len == 0 => RangeAsked::Unsatisfiable,
            Some(suffix) => RangeAsked::Part(len - suffix.min(len), len - 1),
        };
    }
    let Some(start) = number(first) else { return RangeAsked::Whole };
    let end = match last {
        "" => u64::MAX,
        _ => match number(last) {
            Some(end) if end >= start => end,
            _ => return RangeAsked::Whole,
        },
    };
    if start >= len {
        return RangeAsked::Unsatisfiable;
    }
    RangeAsked::Part(start, end.min(len - 1))
}

/// A directory listing as CPython writes it (`list_directory`).
fn listing(source: &Source, rel: &[u8], target: &str) -> Answer {
    let mut names = match source.list(rel) {
        Ok(names) => names,
        Err(Miss::Forbidden) => return error(403, "No permission to list directory"),
        Err(Miss::NotFound) => return error(404, "No permission to list directory"),
    };
    names.sort_by_cached_key(|(n, _, _)| String::from_utf8_lossy(n).to_lowercase());
    let shown = escape(&String::from_utf8_lossy(&percent_decode(target.as_bytes())));
    let title = format!("Directory listing for {shown}");
    let mut page = format!(
        "<!DOCTYPE HTML>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n<hr>\n<ul>\n"
    );
    for (name, is_dir, link) in names {
        let mut href = quote(&name);
        let mut display = String::from_utf8_lossy(&name).into_owned();
        if is_dir {
            href.push('/');
            display.push('/');
        }
        if link {
            // Python: `name@` for a link (a link to a directory links with `/`).
            display = String::from_utf8_lossy(&name).into_owned() + "@";
        }
        page += &format!("<li><a href=\"{href}\">{}</a></li>\n", escape(&display));
    }
    page += "</ul>\n<hr>\n</body>\n</html>\n";
    Answer::new(200, Body::Bytes(page.into_bytes()))
        .field("Content-Type", "text/html; charset=utf-8")
}

/// `html.escape(s, quote=False)`.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// CPython's guess for common extensions (its built-in `mimetypes`
/// table and `SimpleHTTPRequestHandler.extensions_map`), else
/// `application/octet-stream`.
pub fn guess_type(path: &[u8]) -> &'static str {
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    let ext = match name.iter().rposition(|&b| b == b'.') {
        Some(0) | None => return "application/octet-stream",
        Some(i) => OsStr::from_bytes(&name[i + 1..]).to_string_lossy().to_ascii_lowercase(),
    };
    match ext.as_str() {
        "html" | "htm" => "text/html",
        "txt" | "c" | "h" => "text/plain",
        "css" => "text/css",
        "js" | "mjs" => "text/javascript",
        "json" => "application/json",
        "xml" => "text/xml",
        "csv" => "text/csv",
        "md" => "text/markdown",
        "py" => "text/x-python",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "ico" => "image/vnd.microsoft.icon",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "avif" => "image/avif",
        "tif" | "tiff" => "image/tiff",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "bz2" => "application/x-bzip2",
        "xz" => "application/x-xz",
        "tar" | "tgz" => "application/x-tar",
        "wasm" => "application/wasm",
        "sh" => "application/x-sh",
        "webmanifest" => "application/manifest+json",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mpeg" => "video/mpeg",
        "mov" => "video/quicktime",
        "mp3" => "audio/mpeg",
        "wav" => "audio/x-wav",
        _ => "application/octet-stream",
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) as Unix seconds;
/// anything else is ignored (as CPython ignores what it cannot parse).
pub fn parse_http_date(s: &str) -> Option<u64> {
    let s = s.trim();
    let (_, rest) = s.split_once(", ")?;
    let mut parts = rest.split(' ');
    let day: u64 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let year: u64 = parts.next()?.parse().ok()?;
    let time = parts.next()?;
    if parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    let months =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = months.iter().position(|m| *m == month)? as u64 + 1;
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1970..=9999).contains(&year) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// The answer's fields as the HTTP layer takes them (it adds `Date`).
fn fields<'f>(fields: &'f [(&'static str, Vec<u8>)]) -> Vec<(&'f str, &'f [u8])> {
    fields.iter().map(|(n, v)| (*n, &v[..])).collect()
}

/// The blocking handler's application: `sockserv::http::Http::new(Files::new(..))`.
/// With [`Files::direct`] set to another handle of the connection's
/// socket, file bodies leave with `sendfile(2)` (std's `io::copy` from a
/// `File` to a `TcpStream` uses it on Linux).
pub struct Files {
    source: Arc<Source>,
    direct: Arc<OnceLock<OwnedFd>>,
    /// A file body's bounce buffer when it cannot go direct (TLS, smoltcp).
    buffer: Vec<u8>,
}

impl Files {
    pub fn new(source: Arc<Source>) -> Self {
        Self { source, direct: Arc::default(), buffer: Vec::new() }
    }

    /// Where the connection's own socket goes to enable `sendfile`.
    pub fn direct(&self) -> Arc<OnceLock<OwnedFd>> {
        Arc::clone(&self.direct)
    }
}

impl Respond for Files {
    fn respond<S: Read + Write>(
        &mut self,
        head: &RequestHead<'_, '_>,
        tx: &mut Transaction<'_, S>,
    ) -> Result<Sent, Error<S::Error>> {
        let Answer { status, fields: owned, body } = answer(&self.source, &Request::of(head));
        let fields = fields(&owned);
        let (content, start, len) = match body {
            Body::Bytes(bytes) => return tx.send(status, &fields, &bytes),
            Body::File { content: Content::Memory(data), start, len } => {
                let part = &data[start as usize..(start + len) as usize];
                return tx.send(status, &fields, part);
            }
            Body::File { content: Content::Disk(file), start, len } => (file, start, len),
        };
        let mut body = tx.start(status, &fields, BodyLength::Known(len))?;
        if let Some(socket) = self.direct.get() {
            body.send_direct(len, |_| sendfile(&content, start, len, socket))?;
            return body.finish();
        }
        if self.buffer.is_empty() {
            self.buffer = vec![0; 64 * 1024];
        }
        let mut at = start;
        while at < start + len {
            let want = (start + len - at).min(self.buffer.len() as u64) as usize;
            match content.read_at(&mut self.buffer[..want], at) {
                Ok(0) => break,
                Ok(n) => {
                    body.write_all(&self.buffer[..n])?;
                    at += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("http_server: reading a file: {e}");
                    break;
                }
            }
        }
        // Short (the file shrank, or failed): the layer closes the connection.
        body.finish()
    }
}

/// `len` bytes of `file` from `start` to `socket` with the std adapter's
/// `send_file` (`sendfile(2)`): how many went out.
fn sendfile(file: &File, start: u64, len: u64, socket: &impl AsFd) -> u64 {
    let mut sent = 0;
    while sent < len {
        let count = (len - sent).min(1 << 30) as usize;
        match files::send_file(socket, file, start + sent, count) {
            Ok(0) => break, // the file shrank
            Ok(n) => sent += n as u64,
            Err(e) => {
                if !matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) {
                    eprintln!("http_server: sending a file: {e}");
                }
                break;
            }
        }
    }
    sent
}

/// The event-mode application: the answer is made when the request is
/// complete; its head is written then and its body streamed as the peer
/// reads (`fill`, from the open file or the page), so a connection holds
/// its open file, never the file's bytes.
pub struct FilesEvents {
    source: Arc<Source>,
    request: Request,
    /// The body being sent: the file (and where its part starts) or a page.
    body: Option<Body>,
}

impl FilesEvents {
    pub fn new(source: Arc<Source>) -> Self {
        Self { source, request: Request::default(), body: None }
    }
}

impl EventRespond for FilesEvents {
    type Error = io::Error;

    fn head(&mut self, head: &RequestHead<'_, '_>) -> Result<(), io::Error> {
        self.request = Request::of(head);
        Ok(())
    }

    fn respond(&mut self, reply: &mut Reply<'_, '_>) -> Result<(), io::Error> {
        let answer = answer(&self.source, &self.request);
        let len = answer.body_len();
        reply
            .start(answer.status, &fields(&answer.fields), BodyLength::Known(len))
            .map_err(io::Error::other)?;
        self.body = Some(answer.body);
        Ok(())
    }

    fn fill(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, io::Error> {
        let (data, at): (&[u8], u64) = match &self.body {
            None => return Ok(0),
            Some(Body::Bytes(bytes)) => (bytes, offset),
            Some(Body::File { content: Content::Memory(data), start, .. }) => {
                (data, start + offset)
            }
            Some(Body::File { content: Content::Disk(file), start, len }) => {
                let want = buf.len().min(len.saturating_sub(offset) as usize);
                return file.read_at(&mut buf[..want], start + offset);
            }
        };
        let rest = data.get(at as usize..).unwrap_or(&[]);
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
