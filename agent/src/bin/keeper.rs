//! `bosun-keeper __keeper <dir>`: the process that creates, supervises and records one
//! container (see `bosun_runtime::keeper`). A binary of its own so that each running container
//! costs the node only the keeper's code and data, not a copy of the agent's: with position
//! independent executables every process relocates the binary's `.data.rel.ro` into private
//! memory, which for the agent (Kubernetes API types, TLS, HTTP) is most of a mebibyte.
//!
//! The command line keeps the `__keeper` word so that the agent recognises its keepers by
//! `/proc/<pid>/cmdline` whichever binary runs them (`bosun __keeper` also still works).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let code = match (args.next(), args.next(), args.next()) {
        (Some(role), Some(dir), None) if role == "__keeper" => {
            bosun_runtime::keeper::main(PathBuf::from(dir))
        }
        _ => {
            eprintln!("usage: bosun-keeper __keeper <container folder> (started by bosun)");
            2
        }
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}
