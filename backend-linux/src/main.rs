//! `execdriver`: run commands isolated on this node (see `execdriver --help`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
