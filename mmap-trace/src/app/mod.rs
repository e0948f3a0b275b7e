//! The commands: `record`, `report`, `diff` and `top`. The only layer that
//! wires the others together; `report` and `diff` never touch the live
//! recorder.

pub mod cli;
pub mod diff;
pub mod dump;
pub mod files;
mod live;
pub mod metrics_server;
pub mod output;
pub mod record;
pub mod report;
pub mod status;
pub mod top;

use cli::{Cli, Command};
use output::Failure;

/// Runs the command `cli` names; returns the exit code.
pub fn run(cli: Cli) -> Result<i32, Failure> {
    match cli.command {
        Command::Record(args) => record::run(args, cli.verbose >= 1),
        Command::Report(args) => report::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Top(args) => top::run(args, cli.verbose >= 1),
        Command::Dump(args) => dump::run(args),
    }
}
