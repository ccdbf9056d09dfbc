//! One transport conformance suite: the same cases (`cases.rs`) over
//! every transport, one module each — the mock, std sockets, smoltcp over
//! its loopback device, smoltcp over a TAP device with the kernel as peer
//! (in a network namespace this test makes), the mps2-an386 firmware
//! (the smoltcp adapter on a Cortex-M4 under QEMU, on a TAP device in
//! such a namespace), and the embedded-nal
//! transport over std-embedded-nal. A transport that really differs says
//! so in its fixture (`Fixture::differs`), and the case checks what it
//! states.

mod cases;
mod firmware;
mod kernel;
mod mock;
mod nal;
#[path = "../util/root.rs"]
mod root;
mod smoltcp_loopback;
mod smoltcp_tap;
#[path = "../smoltcp_world/mod.rs"]
mod smoltcp_world;
mod std_sockets;
