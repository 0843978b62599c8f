//! The flood demo: the problem and the fix in one command.
//!
//! ```text
//! cargo run --release --example flood
//! cargo run --release --example flood -- --policy bytes:128MiB --policy unbounded --updates 5000 --json
//! ```
//!
//! Starts an embedded mock Bot API server with a backlog, drains it once per admission
//! policy (each in a fresh child process, so peak-memory figures do not contaminate each
//! other), and prints drain time, peak RSS, handler latency and efficiency per policy.
//! SIGTERM or Ctrl-C lets the running policy drain and report, and starts no further one.
//! The command-line contract is in `cli.rs`; `docs/benchmarks.md` has measured figures.

mod child;
mod cli;
#[path = "../shared/logging.rs"]
mod logging;
mod parent;
mod plot;
#[path = "../shared/policy_spec.rs"]
mod policy_spec;
#[path = "../shared/proc_mem.rs"]
mod proc_mem;
#[path = "../shared/process.rs"]
mod process;
mod report;
#[path = "../shared/size.rs"]
mod size;
mod stop;
#[path = "../shared/token_bucket.rs"]
mod token_bucket;
#[path = "../shared/workload.rs"]
mod workload;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    let args = cli::Args::parse();
    if let Err(message) = args.validate() {
        cli::Args::command()
            .error(clap::error::ErrorKind::ValueValidation, message)
            .exit();
    }
    logging::init_tracing("warn");
    ExitCode::from(if args.child {
        child::main(args)
    } else {
        parent::main(args)
    })
}
