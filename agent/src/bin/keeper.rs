//! `bosun-keeper`: the process that creates, supervises and records one container
//! (`bosun-keeper __keeper <dir>`, see `bosun_runtime::keeper`), and the agent's other helpers:
//! `__sandbox` (a pod's namespaces, and the pod init of a pod sharing its pid namespace) and
//! `__exec` (a process in a running container: exec probes, hooks, `kubectl exec`).
//!
//! A binary of its own so that each running container costs the node only the keeper's code
//! and data, not a copy of the agent's: with position independent executables every process
//! relocates the binary's `.data.rel.ro` into private memory, which for the agent (Kubernetes
//! API types, TLS, HTTP) is most of a mebibyte; and a fifth of the agent's code, without
//! relocations, starts quicker (every pod start runs the sandbox helper and a keeper).
//!
//! The command line keeps the role word (`__keeper`, ...) so that the agent recognises its
//! keepers by `/proc/<pid>/cmdline` whichever binary runs them (`bosun __keeper` also works).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let code = match bosun_runtime::helper_role(&args) {
        Some(code) => code,
        None => {
            eprintln!(
                "usage: bosun-keeper __keeper <container folder> | __sandbox ... | __exec ... \
                 (started by bosun)"
            );
            2
        }
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}
