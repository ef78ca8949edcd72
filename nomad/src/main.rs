//! `execdriver-nomad`: the execdriver task driver as a Nomad plugin. Started by the Nomad
//! agent (never by hand), or by itself as a task's supervisor.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    std::process::exit(execdriver_nomad::server::main_with_args(&args));
}
