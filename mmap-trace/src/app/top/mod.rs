//! `mmap-trace top`: a live view of running processes. The session runs as
//! for `record`; the view watches its books every tick (a
//! [`Watcher`]), draws them at every sample, and ends the session on `q`.
//!
//! - `model`: what a frame shows, from the books (pure);
//! - `view`: drawing it with ratatui (tested on its test backend);
//! - `terminal`: taking the terminal and giving it back on every way out.

mod model;
mod terminal;
mod view;

use std::{
    io::{self, IsTerminal as _},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::{ArgGroup, Args};

use super::{
    cli::parse_duration,
    live::{self, TracingArgs},
    output::Failure,
};
use crate::{
    account::Book,
    model::StoppedBy,
    report::Judging,
    session::{Signals, StopWhen, Watcher},
    sys::{self, loader::Tracer, targets},
};
use model::{Moment, Rate, Screen};
use terminal::{Input, Tty, pending_input};

pub const EXAMPLES: &str = "\
Examples:
  mmap-trace top --pid 4242
      Watch a process and its children, existing and new.
  mmap-trace top --cgroup system.slice/docker-3f2a.scope --interval 5s
      Watch a container (every process of its cgroup), sampling every 5 s.
  mmap-trace top --comm python3 --min-window 1m

What it shows, refreshed at every sample (--interval):
  Who is growing  objects whose resident memory grows steadily, with the rate of
                  the steady part (the report's verdict, so far: none before
                  --min-window and 5 samples); address space that grows untouched
  Processes       each running process's RSS, and the live bytes it holds in
                  traced mappings
  By requester    resident and live bytes, and the resident growth, per requester
                  (the first frame outside libc, ld.so, allocators and memory
                  hooks); By issuer below it when there is room
  the top line    time elapsed, events traced (per second), records lost

q or Ctrl-C quits: tracing stops and everything is detached. top draws on a
terminal (stdout); for a report, a trace or a script, use `mmap-trace record`.";

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .multiple(true)
        .args(["pids", "comms", "cgroup"])
))]
pub struct TopArgs {
    /// Watch this running process, its existing children and the children
    /// it forks from now on (repeatable). Mappings made before count as
    /// pre-existing. The view ends when all of them have exited.
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Watch the running processes with this name (/proc/PID/comm;
    /// repeatable), as --pid does.
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,

    /// Watch every process of this cgroup v2 and of the cgroups below it (a
    /// container or a pod), including processes that start or move in
    /// later. A path, absolute or relative to the cgroup mount.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// The shortest traced window that gets a growth verdict (it also
    /// needs 5 samples); until then the view says why it has none.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_duration)]
    pub min_window: Duration,

    #[command(flatten)]
    pub tracing: TracingArgs,
}

/// Runs `top` until `q`; 0 then, and when the watched processes exit.
pub fn run(args: TopArgs, verbose: bool) -> Result<i32, Failure> {
    // Checked first: nothing is loaded for a view nobody can see.
    if !io::stdout().is_terminal() {
        return Err(anyhow::anyhow!(
            "top draws a live view on a terminal, and stdout is not one \
             (for a report or a trace, use `mmap-trace record`)"
        )
        .into());
    }
    let targets = targets::select(&args.pids, &args.comms, args.cgroup.as_deref())?;
    sys::privileges::check()?;
    sys::priority::raise();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    runtime.block_on(watch(&args, targets, verbose))
}

async fn watch(args: &TopArgs, targets: targets::Selection, verbose: bool) -> Result<i32, Failure> {
    let mut tracer = live::load(&args.tracing, &targets, verbose)?;
    // The view reads the books; nobody else listens.
    let mut nobody = ();
    let mut session = live::session(&mut tracer, &args.tracing, &mut nobody)?;
    let signals = Signals::catch().context("catching signals")?;
    live::attach(&mut tracer, &mut session, &targets)?;
    let stop = StopWhen {
        command: None,
        // A cgroup has no last process: only q (or a signal) ends the view.
        targets: match targets.cgroup {
            Some(_) => None,
            None => Some(targets.watched),
        },
        duration: None,
    };
    let judging = Judging {
        min_window_s: args.min_window.as_secs_f64(),
        ..Default::default()
    };
    let mut view = LiveView::new(
        Tty::take().context("taking the terminal")?,
        &tracer,
        judging,
        args.tracing.interval,
    );
    let end = session.run(stop, signals, &mut view).await;
    let (quit, failed) = (view.quit, view.failed.take());
    drop(view); // the terminal is given back before anything is said
    drop(session);
    drop(tracer); // detached
    if let Some(error) = failed {
        return Err(anyhow::Error::new(error).context("drawing the view").into());
    }
    let end = end.context("tracing")?;
    if !quit {
        eprintln!("mmap-trace: top stopped by {}", end.stopped_by);
    }
    Ok(0)
}

/// The live view: draws the books at every sample (and on a resize), ends
/// the session on `q`.
struct LiveView<'t> {
    tty: Tty,
    tracer: &'t Tracer,
    judging: Judging,
    interval: Duration,
    started: Instant,
    rate: Rate,
    /// Samples in the books when last drawn.
    drawn: Option<usize>,
    /// The user quit (rather than the processes exiting, or a signal).
    quit: bool,
    /// Drawing or reading the keyboard failed: the session ends with it.
    failed: Option<io::Error>,
}

impl<'t> LiveView<'t> {
    fn new(tty: Tty, tracer: &'t Tracer, judging: Judging, interval: Duration) -> Self {
        LiveView {
            tty,
            tracer,
            judging,
            interval,
            started: Instant::now(),
            rate: Rate::default(),
            drawn: None,
            quit: false,
            failed: None,
        }
    }

    fn draw(&mut self, book: &Book) -> io::Result<()> {
        let elapsed = self.started.elapsed();
        let samples = book.timeline.len();
        let events_per_s = if self.drawn != Some(samples) {
            self.rate
                .update(elapsed, book.collector.counts.calls.total())
        } else {
            self.rate.per_s()
        };
        let moment = Moment {
            elapsed,
            interval: self.interval,
            kernel_lost: self.tracer.counters().lost_records,
            events_per_s,
        };
        let screen = Screen::build(book, moment, &self.judging);
        self.tty.draw(|frame| view::draw(frame, &screen))?;
        self.drawn = Some(samples);
        Ok(())
    }
}

impl Watcher for LiveView<'_> {
    fn tick(&mut self, book: &Book) -> Option<StoppedBy> {
        let drawn = match pending_input() {
            Ok(Some(Input::Quit)) => {
                self.quit = true;
                // The user's interrupt, as Ctrl-C is without raw mode.
                return Some(StoppedBy::Sigint);
            }
            Ok(Some(Input::Resized)) => self.draw(book),
            Ok(None) if self.drawn != Some(book.timeline.len()) => self.draw(book),
            Ok(None) => Ok(()),
            Err(error) => Err(error),
        };
        match drawn {
            Ok(()) => None,
            Err(error) => {
                self.failed = Some(error);
                // The terminal is gone, most likely, as with a hangup.
                Some(StoppedBy::Sighup)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::{
        app::cli::{Cli, Command},
        model::UnwindMode,
    };

    fn top(args: &[&str]) -> Result<super::TopArgs, clap::Error> {
        let cli = Cli::try_parse_from(["mmap-trace", "top"].iter().chain(args))?;
        match cli.command {
            Command::Top(args) => Ok(args),
            other => panic!("not top: {other:?}"),
        }
    }

    #[test]
    fn top_needs_a_target_and_takes_the_tracing_options_of_record() {
        let error = top(&[]).unwrap_err();
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        let args = top(&["--pid", "42", "--interval", "250ms", "--unwind", "fp"]).unwrap();
        assert_eq!(args.pids, [42]);
        assert_eq!(args.tracing.interval, std::time::Duration::from_millis(250));
        assert_eq!(args.tracing.unwind, UnwindMode::Fp);
        assert_eq!(args.min_window, std::time::Duration::from_secs(10));
        assert_eq!(args.tracing.buffer_size, 16);
        assert!(top(&["--cgroup", "system.slice"]).is_ok());
        // What only a report has is not an option of the view.
        assert!(top(&["--pid", "42", "--format", "json"]).is_err());
        assert!(top(&["--pid", "42", "--", "ls"]).is_err());
    }

    #[test]
    fn record_takes_quiet() {
        let cli = Cli::try_parse_from(["mmap-trace", "record", "-q", "-o", "r.json"]).unwrap();
        let Command::Record(args) = cli.command else {
            panic!("not record")
        };
        assert!(args.quiet);
        assert_eq!(args.tracing.interval, std::time::Duration::from_secs(1));
    }
}
