#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod conn;
mod error;
mod event;
mod gate;
mod loss;
mod net;
mod pool;
mod stack;
mod tcp;
mod udp;
mod wait;

pub use conn::TcpConn;
pub use error::{BindError, Error, ListenError};
pub use event::{NbTcpConn, TcpEventSource};
pub use loss::{DatagramLoss, Loss, Stats};
pub use stack::{Stack, Storage};
pub use tcp::{Options, TcpListener, WhenFull};
pub use udp::UdpSocket;
#[cfg(feature = "tap")]
pub use wait::TapWait;
pub use wait::{Spin, Wait};

pub use smoltcp;

#[cfg(test)]
mod layering {
    /// Each module's `use crate::` imports.
    const MODULES: &[(&str, &str)] = &[
        ("net", include_str!("net.rs")),
        ("conn", include_str!("conn.rs")),
        ("tcp", include_str!("tcp.rs")),
        ("udp", include_str!("udp.rs")),
        ("event", include_str!("event.rs")),
        ("gate", include_str!("gate.rs")),
        ("pool", include_str!("pool.rs")),
        ("loss", include_str!("loss.rs")),
        ("wait", include_str!("wait.rs")),
        ("error", include_str!("error.rs")),
    ];

    /// The module graph goes one way (leaves ← sockets ← `stack` ← the
    /// public API): no module below the stack imports it, and the leaf
    /// `net` imports no socket module.
    #[test]
    fn the_module_graph_goes_one_way() {
        for (name, src) in MODULES {
            assert!(!src.contains("use crate::stack"), "{name} imports the stack");
        }
        let net = MODULES[0].1;
        for socket in ["conn", "tcp", "udp", "event"] {
            let import = ["use crate::", socket].concat();
            assert!(!net.contains(&import), "net imports {socket}");
        }
    }
}
