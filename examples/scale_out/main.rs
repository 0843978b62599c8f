//! Scale-out on one machine: the mock Bot API backlog → the bridge → a Redis stream → N
//! budgeted worker processes.
//!
//! ```text
//! cargo run --release --example scale_out
//! cargo run --release --example scale_out -- --workers 3 --updates 20000 --budget 64MiB --kill-one-after 3 --json
//! ```
//!
//! Starts a private `redis-server` (unless `--redis-url`), the embedded mock Bot API
//! server with the backlog, the bridge (`examples/bridge.rs`) and the workers, each in its
//! own process; optionally SIGKILLs one worker mid-run; waits until every update was
//! handled (or dead-lettered) and nothing is pending; then stops everything and reports
//! per worker (handled, peak RSS vs. budget) and in total (unique, lost, duplicates,
//! dead-lettered, drain time). `docs/scale-out.md` explains the topology.

#[path = "../shared/bridge.rs"]
mod bridge;
mod cli;
#[path = "../shared/logging.rs"]
mod logging;
mod parent;
#[path = "../shared/proc_mem.rs"]
mod proc_mem;
#[path = "../shared/process.rs"]
mod process;
#[path = "../shared/size.rs"]
mod size;
mod worker;
#[path = "../shared/workload.rs"]
#[allow(dead_code)] // the ordering checks are flood's
mod workload;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    logging::init_tracing("warn"); // examples/shared/logging.rs
    let mut argv: Vec<String> = std::env::args().collect();
    let code = match argv.get(1).map(String::as_str) {
        Some("__worker") => {
            argv.remove(1);
            worker::main(cli::WorkerArgs::parse_from(argv))
        }
        Some("__bridge") => {
            argv.remove(1);
            parent::bridge_main(bridge::BridgeArgs::parse_from(argv))
        }
        _ => {
            let args = cli::Args::parse();
            if let Err(message) = args.validate() {
                cli::Args::command()
                    .error(clap::error::ErrorKind::ValueValidation, message)
                    .exit();
            }
            parent::main(args)
        }
    };
    ExitCode::from(code)
}
