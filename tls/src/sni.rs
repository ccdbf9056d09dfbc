//! The little of a ClientHello that rustls's unbuffered server connection
//! does not expose: the SNI host name. A bounds-checked reader of the
//! first handshake record; anything unexpected is `None`.

/// The SNI host name of the ClientHello at the front of `input` (the
/// first TLS record, if it is complete and holds the whole ClientHello).
pub(crate) fn server_name(input: &[u8]) -> Option<&str> {
    let mut r = Reader(record(input)?);
    // A handshake record (22) holding a ClientHello (1).
    r.u8().filter(|&t| t == 1)?;
    let len = r.u24()?;
    let mut hello = Reader(r.take(len)?);
    hello.take(2 + 32)?; // version, random
    let n = hello.u8()?;
    hello.take(n.into())?; // session id
    let n = hello.u16()?;
    hello.take(n)?; // cipher suites
    let n = hello.u8()?;
    hello.take(n.into())?; // compression methods
    let n = hello.u16()?;
    let mut exts = Reader(hello.take(n)?);
    while let (Some(typ), Some(n)) = (exts.u16(), exts.u16()) {
        let body = exts.take(n)?;
        if typ == 0 {
            let mut list = Reader(body);
            let n = list.u16()?;
            let mut names = Reader(list.take(n)?);
            while let Some(kind) = names.u8() {
                let n = names.u16()?;
                let name = names.take(n)?;
                if kind == 0 {
                    return core::str::from_utf8(name).ok();
                }
            }
            return None;
        }
    }
    None
}

/// The payload of the complete handshake record at the front of `input`.
fn record(input: &[u8]) -> Option<&[u8]> {
    let header = input.get(..5)?;
    if header[0] != 22 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    input.get(5..5 + len)
}

/// Whether `input` starts with a complete record (of any type).
pub(crate) fn holds_record(input: &[u8]) -> bool {
    input.get(..5).is_some_and(|h| input.len() >= 5 + usize::from(u16::from_be_bytes([h[3], h[4]])))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_name_and_refuses_what_is_cut() {
        // A minimal ClientHello with SNI "ab.c".
        let name = b"ab.c";
        let mut sni = vec![0, 0]; // type server_name
        let entry_len = 1 + 2 + name.len();
        sni.extend_from_slice(&((2 + entry_len) as u16).to_be_bytes());
        sni.extend_from_slice(&(entry_len as u16).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni.extend_from_slice(name);
        let mut hello = vec![3, 3];
        hello.extend_from_slice(&[0; 32]);
        hello.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        hello.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        hello.extend_from_slice(&sni);
        let mut hs = vec![1, 0];
        hs.extend_from_slice(&(hello.len() as u16).to_be_bytes());
        hs.extend_from_slice(&hello);
        let mut rec = vec![22, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        assert_eq!(server_name(&rec), Some("ab.c"));
        assert!(holds_record(&rec));
        for cut in 0..rec.len() {
            assert_eq!(server_name(&rec[..cut]), None, "cut at {cut}");
            assert!(!holds_record(&rec[..cut]));
        }
    }
}
