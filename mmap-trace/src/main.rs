use std::process::ExitCode;

use clap::Parser as _;
use mmap_trace::app::{self, cli::Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match app::run(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(failure) => {
            // One line: the error and its causes, joined.
            eprintln!("mmap-trace: {:#}", failure.source);
            ExitCode::from(failure.code.clamp(1, 255) as u8)
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format_target(false)
        .format_timestamp(None)
        .parse_env("MMAP_TRACE_LOG")
        .init();
}
