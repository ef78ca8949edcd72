//! Links the binaries with `.text.hot.*` sections kept together (lld, rustc's default linker
//! here, needs `-z keep-text-section-prefix` for it; GNU ld ignores the flag with a warning and
//! groups them by its default script anyway): the supervisor's and the init's waiting code is one such
//! section, so that what a waiting supervisor faults back in after giving back its start's
//! pages is one fault-around window instead of one per function (see
//! `src/process/footprint.rs`).

fn main() {
    println!("cargo::rustc-link-arg-bins=-zkeep-text-section-prefix");
}
