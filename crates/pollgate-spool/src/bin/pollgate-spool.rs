//! `pollgate-spool`: a stopped spool's dead letters from the shell.
//!
//! ```text
//! pollgate-spool dead list DIR [--json]
//! pollgate-spool dead replay DIR (--all | ID...)
//! pollgate-spool dead purge DIR (--all | ID...)
//! ```
//!
//! A running bot holds its spool locked: stop it first (or use `SpoolTransport`'s
//! methods in the bot). Replayed letters are handled first at the next start.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::UNIX_EPOCH;

use clap::{Args, Parser, Subcommand};
use pollgate_spool::{DeadLetters, Which};

/// A pollgate spool's dead letters: updates whose handler failed on every attempt.
#[derive(Debug, Parser)]
#[command(name = "pollgate-spool", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work on the dead letters.
    #[command(subcommand)]
    Dead(Dead),
}

#[derive(Debug, Subcommand)]
enum Dead {
    /// List them: id, attempts, when, error (or one JSON object a line).
    List {
        /// The spool's directory (holding spool.redb).
        dir: PathBuf,
        /// One JSON object a line, with the update's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put them back among the entries: the next start handles them first.
    Replay(Select),
    /// Delete them for good.
    Purge(Select),
}

#[derive(Debug, Args)]
struct Select {
    /// The spool's directory (holding spool.redb).
    dir: PathBuf,
    /// Every dead letter.
    #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
    all: bool,
    /// These update ids.
    ids: Vec<i64>,
}

impl Select {
    fn which(&self) -> Which<'_> {
        if self.all { Which::All } else { Which::Ids(&self.ids) }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain: the store's own reason is the part that helps.
            let mut message = format!("pollgate-spool: {}", pollgate_core::ErrorChain(&e));
            if e.is_locked() {
                message.push_str(" (a running bot holds it: stop it first)");
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), pollgate_spool::SpoolError> {
    match cli.command {
        Command::Dead(Dead::List { dir, json }) => {
            let letters = DeadLetters::open(&dir)?.list()?;
            for l in &letters {
                let at = l.failed_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                if json {
                    let line = serde_json::json!({
                        "update_id": l.update_id,
                        "attempts": l.attempts,
                        "failed_at": at,
                        "error": l.error,
                        "update": serde_json::from_str::<serde_json::Value>(&l.json).unwrap_or_else(|_| l.json.clone().into()),
                    });
                    println!("{line}");
                } else {
                    println!("{}\t{}\t{}\t{}", l.update_id, l.attempts, at, l.error);
                }
            }
            if !json {
                eprintln!("{} dead letter(s)", letters.len());
            }
        }
        Command::Dead(Dead::Replay(select)) => {
            let n = DeadLetters::open(&select.dir)?.replay(select.which())?;
            println!("replayed {n}");
        }
        Command::Dead(Dead::Purge(select)) => {
            let n = DeadLetters::open(&select.dir)?.purge(select.which())?;
            println!("purged {n}");
        }
    }
    Ok(())
}
