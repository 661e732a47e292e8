//! Link flags for the `intake` executable.
//!
//! Packed relative relocations (`-z pack-relative-relocs`, "RELR"): a position-independent
//! executable lists every pointer the loader must adjust at start. As RELA entries that
//! list is 1.2 MB for `intake`, which the loader reads whole at every start, so it stayed
//! resident in every process; packed, it takes a few kilobytes (docs/performance.md, idle
//! connections). The executable stays position-independent. It needs glibc 2.36 at run
//! time (a build on Debian 12 already needs 2.34) and GNU ld 2.38 or lld to link.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
