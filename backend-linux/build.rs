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
    // The reaper's start and system calls are x86-64 Linux's; musl's targets link their own
    // start files whatever -nostartfiles says.
    if env("CARGO_CFG_TARGET_ARCH") != "x86_64"
        || env("CARGO_CFG_TARGET_OS") != "linux"
        || env("CARGO_CFG_TARGET_ENV") != "gnu"
        || env("CARGO_CFG_TARGET_POINTER_WIDTH") != "64"
    {
        return;
    }
    let out = PathBuf::from(env("OUT_DIR")).join("execdriver-reaper");
    let source = PathBuf::from(env("CARGO_MANIFEST_DIR")).join("reaper/main.rs");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut command = Command::new(rustc);
    // The linker cargo was told to use for this target, when it was.
    if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
        command
            .arg("-C")
            .arg(format!("linker={}", linker.to_string_lossy()));
    }
    let status = command
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
    // Without it the init waits in place, as on other targets: a warning, not a failed
    // build (the reaper's tests fail loudly where it is expected).
    match status {
        Ok(s) if s.success() => println!("cargo::rustc-cfg=execdriver_reaper"),
        Ok(s) => println!(
            "cargo::warning=building the reaper from {} failed ({s}): the task's init will \
             wait in place",
            source.display()
        ),
        Err(e) => println!(
            "cargo::warning=running rustc for the reaper failed ({e}): the task's init will \
             wait in place"
        ),
    }
}
