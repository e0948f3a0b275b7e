use std::{
    io::{self, IsTerminal as _},
    process::ExitCode,
};

use clap::Parser as _;
use mmap_trace::app::{self, cli::Cli, status::LogStderr};

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
        // Log lines must not run into `record`'s status line, nor draw over
        // `top`'s view: they go through the stderr that knows of both (in
        // colour when it is a terminal, as env_logger's own stderr would;
        // it cannot tell for a pipe, so it is told).
        .target(env_logger::Target::Pipe(Box::new(LogStderr)))
        .write_style(if io::stderr().is_terminal() {
            env_logger::WriteStyle::Always
        } else {
            env_logger::WriteStyle::Never
        })
        .parse_env("MMAP_TRACE_LOG")
        .init();
}
