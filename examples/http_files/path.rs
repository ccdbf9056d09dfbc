//! Request targets to paths beneath the served directory, and back to links.

/// The path a target names, relative to the served directory, as CPython's
/// `translate_path` makes it: the query and fragment dropped, percent
/// escapes decoded (`%2e%2e` is `..`, `%2f` a separator, as in CPython),
/// then `.`, empty components and `..` resolved lexically, `..` stopping at
/// the top (`/../../etc` is `etc` beneath the directory). `None` for a NUL
/// byte. The opening is then confined by the kernel as well (symbolic links).
pub fn translate(target: &str) -> Option<Vec<u8>> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(path.as_bytes());
    if decoded.contains(&0) {
        return None;
    }
    let mut words: Vec<&[u8]> = Vec::new();
    for word in decoded.split(|&b| b == b'/') {
        match word {
            b"" | b"." => {}
            b".." => {
                words.pop();
            }
            word => words.push(word),
        }
    }
    Some(words.join(&b'/'))
}

/// `%XX` escapes decoded (a `%` not followed by two hex digits is kept, as
/// `urllib.parse.unquote` keeps it).
pub fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(h), Some(l)) =
                (s.get(i + 1).copied().and_then(hex), s.get(i + 2).copied().and_then(hex))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// `urllib.parse.quote(name)`: letters, digits, `_.-~` and `/` as they
/// are, every other byte `%XX`.
pub fn quote(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name {
        if b.is_ascii_alphanumeric() || b"_.-~/".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}
