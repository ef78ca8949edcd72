//! `execdriver-supervisor`: the supervisor of one task, `execdriver-supervisor supervise
//! --state-dir DIR ...`, as the `execdriver` CLI starts it (see `execdriver_linux::supervise_main`).

fn main() {
    std::process::exit(execdriver_linux::supervise_main().unwrap_or(2));
}
