//! Passes the target triple on: the tests ask the `cc` crate for the C++
//! compiler at run time, and `cc` wants to know the target.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=TESSERA_EMU_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
