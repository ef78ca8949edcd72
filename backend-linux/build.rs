//! Two things for the binaries:
//!
//! - Links them with `.text.hot.*` sections kept together (lld, rustc's default linker here,
//!   needs `-z keep-text-section-prefix` for it; GNU ld ignores the flag with a warning and
//!   groups them by its default script anyway): the supervisor's and the init's waiting
//!   code is one such section, so that what a waiting supervisor faults back in after
//!   giving back its start's pages is one fault-around window instead of one per function
//!   (see `src/process/footprint.rs`).
//! - Builds the reaper (`reaper/main.rs`, what the task's init execs once the task runs) on
//!   x86-64 Linux, with rustc alone: it has no std and no libc, so it needs `panic=abort`
//!   and its own link, which a cargo target of this package cannot have. The crate embeds
//!   it (`src/isolation/reaper.rs`); elsewhere the init waits in place, as before.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-link-arg-bins=-zkeep-text-section-prefix");
    println!("cargo::rustc-check-cfg=cfg(execdriver_reaper)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=reaper/main.rs");
    println!("cargo::rerun-if-changed=src/isolation/wire.rs");
    let env = |key: &str| std::env::var(key).unwrap_or_default();
    if env("CARGO_CFG_TARGET_ARCH") != "x86_64" || env("CARGO_CFG_TARGET_OS") != "linux" {
        return;
    }
    let out = PathBuf::from(env("OUT_DIR")).join("execdriver-reaper");
    let source = PathBuf::from(env("CARGO_MANIFEST_DIR")).join("reaper/main.rs");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(rustc)
        .args(["--edition", "2024", "--crate-name", "execdriver_reaper"])
        .args(["--crate-type", "bin", "--target", &env("TARGET")])
        .args([
            "-C",
            "panic=abort",
            "-C",
            "opt-level=s",
            "-C",
            "debuginfo=0",
        ])
        .args(["-C", "strip=symbols", "-C", "relocation-model=pie"])
        .args([
            "-C",
            "target-feature=+crt-static",
            "-C",
            "link-arg=-nostartfiles",
        ])
        .args(["-C", "link-arg=-nostdlib", "-C", "link-arg=-static-pie"])
        .arg("-o")
        .arg(&out)
        .arg(&source)
        .status();
    match status {
        Ok(s) if s.success() => println!("cargo::rustc-cfg=execdriver_reaper"),
        Ok(s) => panic!("building the reaper from {} failed: {s}", source.display()),
        Err(e) => panic!("running rustc for the reaper failed: {e}"),
    }
}
