#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(feature = "document-features", doc = "# Feature flags")]
#![cfg_attr(feature = "document-features", doc = document_features::document_features!())]
#![no_std]
// No `unsafe` at all, except with `tap` in its device's module (two
// `ioctl`s, each with its SAFETY line).
#![cfg_attr(not(feature = "tap"), forbid(unsafe_code))]
#![cfg_attr(feature = "tap", deny(unsafe_code))]
#![warn(missing_docs)]

mod conn;
mod error;
mod event;
mod gate;
mod loss;
mod millis;
mod neighbor;
mod net;
mod pool;
mod serve;
mod stack;
#[cfg(feature = "tap")]
mod tap;
mod tcp;
mod udp;
mod wait;

pub use conn::TcpConn;
pub use error::{BindError, Error, ListenError};
pub use event::{NbTcpConn, TcpEventSource};
pub use loss::{DatagramLoss, Loss, Stats};
pub use serve::{EventTcpServer, StackClock, TcpServer, UdpServer};
pub use stack::{Stack, Storage};
#[cfg(feature = "tap")]
pub use tap::{TapDevice, TapRx, TapTx};
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
        ("neighbor", include_str!("neighbor.rs")),
        ("wait", include_str!("wait.rs")),
        ("error", include_str!("error.rs")),
        ("serve", include_str!("serve.rs")),
        ("millis", include_str!("millis.rs")),
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
