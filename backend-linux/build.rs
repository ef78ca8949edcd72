//! Links the binaries with `.text.hot.*` sections kept together (lld and GNU ld both take
//! `-z keep-text-section-prefix`): the supervisor's and the init's waiting code is one such
//! section, so that what a waiting supervisor faults back in after giving back its start's
//! pages is one fault-around window instead of one per function (see
//! `src/process/footprint.rs`).

fn main() {
    println!("cargo::rustc-link-arg-bins=-Wl,-z,keep-text-section-prefix");
}
