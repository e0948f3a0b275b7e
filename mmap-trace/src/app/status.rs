//! Stderr while tracing: `record`'s status line, and log lines kept from
//! drawing over it or over the live view.
//!
//! The status line is drawn as `\r`, clear-to-end-of-line, then the text,
//! with the cursor left after it; it is cleared the same way before
//! anything else is said. A log line (the logger writes through
//! [`LogStderr`]) clears it first, and the next refresh draws it again
//! below; while the live view owns the screen, log lines are held and said
//! when it closes.

use std::{
    fmt,
    io::{self, IsTerminal as _, Write as _},
    sync::{
        Mutex,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use super::cli::RecordArgs;
use crate::{
    account::{Book, Role},
    model::StoppedBy,
    report::text::bytes,
    session::Watcher,
    sys::{loader::Tracer, terminal},
};

/// How often the status line is redrawn.
const REFRESH: Duration = Duration::from_millis(250);

/// Carriage return and clear to the end of the line.
const CLEAR: &[u8] = b"\r\x1b[K";

/// What stderr shows besides plain lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Stderr {
    Plain = 0,
    /// A status line, without its newline.
    StatusLine = 1,
    /// The live view has the terminal: nothing may be written.
    LiveView = 2,
}

static STDERR: AtomicU8 = AtomicU8::new(Stderr::Plain as u8);

/// Log lines written while the live view was up, said when it closes.
static HELD: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Most bytes of log lines held (a noisy warning must not grow without
/// bound); past this the rest is dropped, and a line says so.
const HELD_MAX: usize = 64 << 10;

fn stderr_shows() -> Stderr {
    match STDERR.load(Ordering::Acquire) {
        1 => Stderr::StatusLine,
        2 => Stderr::LiveView,
        _ => Stderr::Plain,
    }
}

/// The logger's stderr: clears a status line before a log line, and holds
/// log lines while the live view is up.
pub struct LogStderr;

impl io::Write for LogStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match stderr_shows() {
            Stderr::LiveView => {
                let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
                if held.len() < HELD_MAX {
                    held.extend_from_slice(buf);
                    if held.len() >= HELD_MAX {
                        held.extend_from_slice(b"\n(more log lines were dropped)\n");
                    }
                }
                Ok(buf.len())
            }
            Stderr::StatusLine => {
                let mut stderr = io::stderr().lock();
                if take_status_line() {
                    stderr.write_all(CLEAR)?;
                }
                stderr.write(buf)
            }
            Stderr::Plain => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// While held, log lines wait (the live view has the terminal); dropped,
/// they are said.
pub(super) struct HeldLogs(());

impl HeldLogs {
    pub(super) fn hold() -> HeldLogs {
        STDERR.store(Stderr::LiveView as u8, Ordering::Release);
        HeldLogs(())
    }
}

impl Drop for HeldLogs {
    fn drop(&mut self) {
        STDERR.store(Stderr::Plain as u8, Ordering::Release);
        let held = std::mem::take(&mut *HELD.lock().unwrap_or_else(|p| p.into_inner()));
        if !held.is_empty() {
            // Nowhere else to say it: a stderr that fails loses the lines.
            io::stderr().write_all(&held).unwrap_or(());
        }
    }
}

/// What the status line says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Status {
    pub elapsed: Duration,
    pub events: u64,
    pub lost: u64,
    pub live: i64,
    /// Resident bytes of traced mappings at the last sample; `None` before
    /// one, or when no traced process runs.
    pub resident: Option<u64>,
}

impl Status {
    /// From the books, `elapsed` into tracing, with the records the kernel
    /// lost.
    pub(super) fn of(book: &Book, elapsed: Duration, kernel_lost: u64) -> Status {
        let counts = &book.collector.counts;
        Status {
            elapsed,
            events: counts.calls.total(),
            lost: counts.lost + kernel_lost,
            live: book.live.live(Role::Issuer).map(|(_, live)| live).sum(),
            resident: book
                .timeline
                .last()
                .filter(|sample| !sample.rss.is_empty())
                .map(|sample| sample.resident_by_kind.total()),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mmap-trace: elapsed {}, {} events, {} lost, live {}, resident {}",
            clock(self.elapsed),
            self.events,
            self.lost,
            bytes(self.live.max(0) as u64),
            self.resident.map_or_else(|| "unknown".to_owned(), bytes),
        )
    }
}

/// `0:07`, `12:30`, `1:02:03`.
pub(super) fn clock(elapsed: Duration) -> String {
    let s = elapsed.as_secs();
    match s / 3600 {
        0 => format!("{}:{:02}", s / 60, s % 60),
        h => format!("{h}:{:02}:{:02}", s / 60 % 60, s % 60),
    }
}

/// `text` cut to fit `columns` (one column is left free: a line that
/// fills the last column wraps on some terminals, and `\r` would then
/// return to the wrong line).
fn fit(text: &str, columns: u16) -> &str {
    let room = usize::from(columns.saturating_sub(1)).max(1);
    match text.char_indices().nth(room) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// `record`'s status line on stderr, refreshed every [`REFRESH`] while
/// the session runs; cleared when dropped.
pub(super) struct StatusLine<'t> {
    tracer: &'t Tracer,
    started: Instant,
    next_draw: Instant,
    /// Writing failed once: no more tries.
    broken: bool,
}

impl<'t> StatusLine<'t> {
    /// Whether `record` shows one: stderr is a terminal, the report does
    /// not go to that terminal (`-o`, or stdout redirected), and not `-q`.
    pub(super) fn wanted(args: &RecordArgs) -> bool {
        !args.quiet
            && io::stderr().is_terminal()
            && (args.output.is_some() || !io::stdout().is_terminal())
    }

    pub(super) fn new(tracer: &'t Tracer) -> Self {
        let now = Instant::now();
        StatusLine {
            tracer,
            started: now,
            next_draw: now,
            broken: false,
        }
    }

    fn draw(&mut self, status: &Status) {
        let text = status.to_string();
        let text = fit(&text, terminal::columns(io::stderr()).unwrap_or(80));
        let mut stderr = io::stderr().lock();
        let written = stderr
            .write_all(CLEAR)
            .and_then(|()| stderr.write_all(text.as_bytes()))
            .and_then(|()| stderr.flush());
        match written {
            Ok(()) => STDERR.store(Stderr::StatusLine as u8, Ordering::Release),
            Err(_) => self.broken = true,
        }
    }
}

impl Watcher for StatusLine<'_> {
    fn tick(&mut self, book: &Book) -> Option<StoppedBy> {
        let now = Instant::now();
        if self.broken || now < self.next_draw {
            return None;
        }
        self.next_draw = now + REFRESH;
        let lost = self.tracer.counters().lost_records;
        self.draw(&Status::of(book, self.started.elapsed(), lost));
        None
    }
}

/// Is a status line drawn? If so, stderr is plain from now on (the caller
/// clears it while holding stderr's lock).
fn take_status_line() -> bool {
    STDERR
        .compare_exchange(
            Stderr::StatusLine as u8,
            Stderr::Plain as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
}

impl Drop for StatusLine<'_> {
    fn drop(&mut self) {
        let mut stderr = io::stderr().lock();
        if take_status_line() {
            // Nothing can be done about a stderr that fails here.
            stderr
                .write_all(CLEAR)
                .and_then(|()| stderr.flush())
                .unwrap_or(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        account::{MemoryProbe, Recorder},
        model::{Call, Event, ProcessRss, RawStack, StackId, SyscallEvent},
        resolve::Attribution,
    };
    use std::{convert::Infallible, ops::Range};

    /// Every range is half resident; every process has 1 MiB of RSS.
    struct HalfResident;

    impl MemoryProbe for HalfResident {
        fn rss(&mut self, pid: u32) -> Option<ProcessRss> {
            Some(ProcessRss {
                pid,
                vm_rss: 1 << 20,
                ..Default::default()
            })
        }

        fn resident(&mut self, _: u32, ranges: &[Range<u64>]) -> Option<Vec<u64>> {
            Some(ranges.iter().map(|r| (r.end - r.start) / 2).collect())
        }
    }

    fn attribute(_: StackId, _: &RawStack, _: u64) -> Result<Attribution, Infallible> {
        Ok(Attribution {
            issuer: Some("liba.so".into()),
            requester: Some("app".into()),
        })
    }

    #[test]
    fn says_events_lost_live_and_resident() {
        let mut book = Book::new(0);
        let recorder: &mut dyn Recorder = &mut ();
        book.collector.add_target(7, "app", 0);
        let event = |time_ns, addr| {
            Event::Syscall(SyscallEvent::for_test(
                7,
                time_ns,
                Call::anonymous_mmap(64 << 10),
                addr,
                &[1],
            ))
        };
        book.apply(event(10, 0x100000), recorder, attribute)
            .unwrap();
        book.apply(event(20, 0x200000), recorder, attribute)
            .unwrap();
        book.lost(2, recorder);
        let before = Status::of(&book, Duration::from_secs(3), 5);
        assert_eq!(before.resident, None, "no sample yet");
        book.sample(1_000_000_000, &mut HalfResident, recorder);
        let status = Status::of(&book, Duration::from_secs(75), 5);
        assert_eq!(
            status,
            Status {
                elapsed: Duration::from_secs(75),
                events: 2,
                lost: 7,
                live: 128 << 10,
                resident: Some(64 << 10),
            }
        );
        assert_eq!(
            status.to_string(),
            "mmap-trace: elapsed 1:15, 2 events, 7 lost, live 128.0 KiB, resident 64.0 KiB"
        );
    }

    #[test]
    fn log_lines_wait_while_the_live_view_is_up_and_are_bounded() {
        let held = HeldLogs::hold();
        assert_eq!(stderr_shows(), Stderr::LiveView);
        LogStderr.write_all(b"first\n").unwrap();
        assert_eq!(*HELD.lock().unwrap(), b"first\n");
        LogStderr.write_all(&[b'x'; HELD_MAX]).unwrap();
        LogStderr.write_all(b"never said\n").unwrap();
        {
            let held = HELD.lock().unwrap();
            assert!(held.ends_with(b"x\n(more log lines were dropped)\n"));
            assert_eq!(held.len(), 6 + HELD_MAX + 31);
        }
        // Said (on the test's stderr) when the view closes.
        drop(held);
        assert!(HELD.lock().unwrap().is_empty());
        assert_eq!(stderr_shows(), Stderr::Plain);
    }

    #[test]
    fn clocks_and_fitting() {
        assert_eq!(clock(Duration::from_millis(7900)), "0:07");
        assert_eq!(clock(Duration::from_secs(750)), "12:30");
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
        assert_eq!(fit("elapsed 0:07", 9), "elapsed ");
        assert_eq!(fit("elapsed", 80), "elapsed");
        assert_eq!(fit("elapsed", 0), "e");
    }
}
