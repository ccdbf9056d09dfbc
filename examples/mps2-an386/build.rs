//! Puts memory.x (cortex-m-rt's link.x includes it) and riscv.x on the
//! linker's search path.
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let here = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    for f in ["memory.x", "device.x", "riscv.x"] {
        std::fs::copy(here.join(f), out.join(f)).unwrap();
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rustc-link-search={}", out.display());
}
