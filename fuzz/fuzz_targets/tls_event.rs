//! The event-mode TLS path (`sockserv_tls::tls` as an `EventHandler`)
//! driven as the connection table drives it: a real rustls client's
//! records (handshake, application data, close_notify) arrive in pieces
//! of fuzzer-chosen sizes, into an input buffer of a fuzzer-chosen size
//! whose unconsumed bytes stay as the handler left them, with a
//! fuzzer-chosen outbox room per call; optionally a byte of the client's
//! stream flipped or arbitrary bytes inserted. Invariants: no panic; the
//! handler never consumes more than it was offered and never writes more
//! than the room; an untouched stream gets its echo back, byte for byte;
//! memory stays bounded while it runs (a counting allocator: at most
//! 1 MiB live) and everything is freed when the connection goes.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::{arbitrary, fuzz_target};
use sockserv_core::{EventHandler, Next, Outbox, Service, Step, service_fn};
use sockserv_tls::rustls::pki_types::pem::PemObject;
use sockserv_tls::rustls::pki_types::{CertificateDer, ServerName};
use sockserv_tls::rustls::{self, ClientConfig, ClientConnection, RootCertStore, ServerConfig};
use sockserv_tls::{server_config_from_pem, tls};

/// Live heap bytes.
static LIVE: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator, counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Debug, arbitrary::Arbitrary)]
struct Case {
    /// Sizes of the pieces the client's bytes arrive in (cycled; 0 = 1).
    pieces: Vec<u16>,
    /// Outbox room per call (cycled; scaled up to 64 KiB).
    rooms: Vec<u8>,
    /// The input buffer's size: 18.5, 32 or 64 KiB.
    buffer: u8,
    /// Application data the client sends after the handshake.
    data: Vec<u8>,
    /// Flip a byte of the client's stream at this offset (xor the value).
    flip: Option<(u16, u8)>,
    /// Insert these bytes into the client's stream at this offset.
    insert: Option<(u16, Vec<u8>)>,
    /// End with close_notify (else a bare EOF).
    close_notify: bool,
}

struct Echo;

impl EventHandler for Echo {
    type Error = core::convert::Infallible;
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        Ok(Step::consumed(out.write(input)))
    }
}

fn configs() -> &'static (Arc<ServerConfig>, Arc<ClientConfig>) {
    static C: OnceLock<(Arc<ServerConfig>, Arc<ClientConfig>)> = OnceLock::new();
    C.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sockserv-fuzz-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        let script = format!(
            "openssl req -x509 -days 1 -subj '/CN=fuzz CA' {ec} -keyout ca.key -out ca.pem \
             && openssl req -subj /CN=localhost {ec} -keyout key.pem -out leaf.csr \
             && openssl x509 -req -days 1 -in leaf.csr -CA ca.pem -CAkey ca.key \
                -CAcreateserial -extfile leaf.ext -out cert.pem"
        );
        let out = Command::new("sh").args(["-c", &script]).current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
        let mut server = server_config_from_pem(dir.join("cert.pem"), dir.join("key.pem")).unwrap();
        // No session caches: what a run leaves behind is a leak.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.resumption = rustls::client::Resumption::disabled();
        (Arc::new(server), Arc::new(client))
    })
}

fuzz_target!(|case: Case| {
    let (server, client) = configs();
    let before = LIVE.load(Ordering::Relaxed);
    run(&case, server, client);
    let after = LIVE.load(Ordering::Relaxed);
    // The first run makes the loop thread's scratch room (35 KiB, kept);
    // after it, a run leaves nothing (session caches are off): allow a
    // little for allocator-level noise, never a connection's worth.
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    if RUNS.fetch_add(1, Ordering::Relaxed) > 0 {
        assert!(after <= before + 16 * 1024, "{} bytes not freed", after.saturating_sub(before));
    }
});

/// One connection, driven as the table drives it.
fn run(case: &Case, server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) {
    let cap = match case.buffer % 3 {
        0 => 18 * 1024 + 512,
        1 => 32 * 1024,
        _ => 64 * 1024,
    };
    let service = tls(Arc::clone(server), service_fn(|_| Echo));
    let mut h = Service::<u32>::handler(&service, &7);
    let mut out_buf = vec![0u8; 64 * 1024];
    let mut c =
        ClientConnection::new(Arc::clone(client), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let data = &case.data[..case.data.len().min(100_000)];
    let tampered = case.flip.is_some() || case.insert.is_some();
    // The client's bytes on their way (after tampering), the table's held
    // input, what the client got back.
    let mut wire: Vec<u8> = Vec::new();
    let mut sent_total = 0usize;
    let mut held: Vec<u8> = Vec::new();
    let mut echoed: Vec<u8> = Vec::new();
    let mut data_sent = false;
    let mut eof_sent = false;
    let mut drain = false;
    let mut told_closed = false;
    let mut peak_live = 0usize;
    let start_live = LIVE.load(Ordering::Relaxed);
    let mut piece = case.pieces.iter().cycle();
    let mut rooms = case.rooms.iter().cycle();
    let room = |r: Option<&u8>| r.map_or(64 * 1024, |&r| (usize::from(r) + 1) * 256);

    let mut out = Outbox::gather(&mut out_buf[..]);
    if h.opened(&mut out).unwrap() == Next::Close {
        return;
    }
    for _turn in 0..4000 {
        // The client's output, tampered with as asked.
        while c.wants_write() {
            let mut bytes = Vec::new();
            c.write_tls(&mut bytes).unwrap();
            for (i, b) in bytes.iter_mut().enumerate() {
                if case.flip.is_some_and(|(at, _)| usize::from(at) == sent_total + i) {
                    *b ^= case.flip.unwrap().1.max(1);
                }
            }
            if let Some((at, extra)) = &case.insert {
                let at = usize::from(*at);
                if (sent_total..sent_total + bytes.len()).contains(&at) {
                    let k = at - sent_total;
                    bytes.splice(k..k, extra.iter().copied().take(4096));
                }
            }
            sent_total += bytes.len();
            wire.extend_from_slice(&bytes);
        }
        // One piece into the held input, as much as fits.
        let n = piece.next().map_or(wire.len(), |&p| usize::from(p).max(1));
        let n = n.min(wire.len()).min(cap - held.len());
        held.extend(wire.drain(..n));
        let room = room(rooms.next());
        let mut out = Outbox::gather(&mut out_buf[..room]);
        let step = if !held.is_empty() {
            let len = held.len();
            let step = h.received_mut(&mut held, &mut out).unwrap();
            peak_live = peak_live.max(LIVE.load(Ordering::Relaxed).saturating_sub(start_live));
            assert!(step.consumed <= len, "consumed {} of {len}", step.consumed);
            held.drain(..step.consumed);
            if step.consumed == 0 && held.len() == cap && out.gathered() == 0 {
                break; // the table would close it: Stalled
            }
            step.next
        } else if wire.is_empty() && eof_sent && !told_closed {
            // The table tells it once.
            told_closed = true;
            h.peer_closed(&mut out).unwrap()
        } else if drain {
            drain = false;
            h.drained(&mut out).unwrap()
        } else {
            Next::Continue
        };
        drain |= out.drain_requested();
        let wrote = out.gathered();
        assert!(wrote <= room, "wrote {wrote} into {room}");
        // The server's output to the client.
        let mut back = &out_buf[..wrote];
        while !back.is_empty() {
            if c.read_tls(&mut back).is_err() {
                break;
            }
            if c.process_new_packets().is_err() {
                assert!(tampered, "the client rejected the server's records");
                return;
            }
        }
        let mut buf = [0u8; 16 * 1024];
        while let Ok(k) = c.reader().read(&mut buf) {
            if k == 0 {
                break;
            }
            echoed.extend_from_slice(&buf[..k]);
        }
        if step == Next::Close {
            break;
        }
        if !c.is_handshaking() && !data_sent {
            c.writer().write_all(data).unwrap();
            data_sent = true;
        }
        if data_sent && !eof_sent && echoed.len() >= data.len() && wire.is_empty() {
            if case.close_notify {
                c.send_close_notify();
            }
            eof_sent = true;
        }
        if told_closed && wire.is_empty() && held.is_empty() && !c.wants_write() {
            break;
        }
    }
    if !tampered && data_sent {
        assert_eq!(echoed.len().min(data.len()), echoed.len(), "more echoed than sent");
        assert_eq!(&echoed[..], &data[..echoed.len()], "the echo differs from what was sent");
    }
    // This connection's share: the handler, the client, the buffers here
    // (held input, the outbox, the client's own), under 1 MiB in all.
    assert!(peak_live < 1 << 20, "{peak_live} bytes live at the peak");
}
