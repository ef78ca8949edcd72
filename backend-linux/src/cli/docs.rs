//! `completion` and `man`: shell completions and man pages, generated from the same clap
//! definition as `--help`, so they cannot drift from it.

use std::io::{self, Write};
use std::path::Path;

use clap::CommandFactory;

use super::args::Cli;
use super::{Result, fail};

/// Writes the completion script for `shell` to stdout.
pub fn completion(shell: clap_complete::Shell) -> Result<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "execdriver", &mut out);
    write_stdout(&out)?;
    Ok(0)
}

/// Writes the main man page to stdout, or every page (one per command) into `dir`.
pub fn man(dir: Option<&Path>) -> Result<u8> {
    let cmd = Cli::command();
    match dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(|e| fail!("rendering the man page: {e}"))?;
            write_stdout(&out)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| fail!("creating {}: {e}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .map_err(|e| fail!("writing the man pages into {}: {e}", dir.display()))?;
        }
    }
    Ok(0)
}

/// A closed stdout (`| head`) is not an error worth a message.
fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(fail!("writing to stdout: {e}")),
        _ => Ok(()),
    }
}
