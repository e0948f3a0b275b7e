//! The terminal while the live view has it: raw mode, the alternate screen,
//! the cursor hidden, log lines held. Given back as it was on every way
//! out: the guard's drop (a normal end, an error), and a panic (its hook
//! gives the terminal back before the message is printed, so the message
//! is readable on the main screen).

use std::{
    io::{self, BufWriter, Stdout, Write as _},
    sync::{
        Once,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use ratatui::{
    Frame, Terminal,
    backend::CrosstermBackend,
    crossterm::{
        cursor::{Hide, Show},
        event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
        execute, queue,
        terminal::{
            BeginSynchronizedUpdate, EndSynchronizedUpdate, EnterAlternateScreen,
            LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
        },
    },
};

use crate::app::status::HeldLogs;

/// Whether the terminal is ours now (raw mode, alternate screen): what
/// must be undone, once, by whichever way out comes first.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The terminal, ours until dropped.
pub struct Tty {
    // Dropped in this order: ratatui's terminal shows the cursor it hid
    // (on the alternate screen), then the screen and the mode are given
    // back, then held log lines are said.
    terminal: Terminal<CrosstermBackend<BufWriter<Stdout>>>,
    _taken: Taken,
    _logs: HeldLogs,
}

/// Undoes raw mode and the alternate screen when dropped.
struct Taken(());

impl Drop for Taken {
    fn drop(&mut self) {
        give_back();
    }
}

impl Tty {
    /// Takes the terminal on stdout.
    pub fn take() -> io::Result<Tty> {
        give_back_on_panic();
        let logs = HeldLogs::hold();
        enable_raw_mode()?;
        TAKEN.store(true, Ordering::Release);
        // From here on, a failure gives everything back as `taken` drops.
        let taken = Taken(());
        execute!(io::stdout(), EnterAlternateScreen, Hide)?;
        // Std's stdout flushes every 1 KiB; a frame is bigger. Buffered
        // whole, a frame leaves in one write (the pty or the terminal may
        // still split what it reads: the synchronized update below says
        // where a frame ends).
        let out = BufWriter::with_capacity(FRAME_BUFFER, io::stdout());
        let terminal = Terminal::new(CrosstermBackend::new(out))?;
        Ok(Tty {
            terminal,
            _taken: taken,
            _logs: logs,
        })
    }

    /// Draws one frame as a synchronized update (DEC private mode 2026):
    /// a terminal that knows it shows the frame whole, never half drawn;
    /// one that does not ignores the marks.
    pub fn draw(&mut self, render: impl FnOnce(&mut Frame)) -> io::Result<()> {
        queue!(self.terminal.backend_mut(), BeginSynchronizedUpdate)?;
        self.terminal.draw(render)?;
        let out = self.terminal.backend_mut();
        queue!(out, EndSynchronizedUpdate)?;
        out.flush()
    }
}

/// Room for a whole frame on most terminals; a bigger frame leaves in
/// pieces, still inside its synchronized update.
const FRAME_BUFFER: usize = 64 * 1024;

/// Shows the cursor, leaves the alternate screen, ends raw mode: the last
/// bytes written are the alternate screen's end. Once only.
fn give_back() {
    if !TAKEN.swap(false, Ordering::AcqRel) {
        return;
    }
    // The terminal is being given back, on the way out: a write that fails
    // now has nobody left to tell.
    execute!(io::stdout(), Show, LeaveAlternateScreen).unwrap_or(());
    disable_raw_mode().unwrap_or(());
}

/// Installs (once) a panic hook that gives the terminal back before the
/// panic is reported.
fn give_back_on_panic() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            give_back();
            report(info);
        }));
    });
}

/// What the keyboard (or the terminal) asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// `q`, or Ctrl-C (which raw mode delivers as a key, not a signal).
    Quit,
    /// The window changed size: draw again now.
    Resized,
}

/// What came in since the last call, without waiting: a quit wins.
pub fn pending_input() -> io::Result<Option<Input>> {
    let mut input = None;
    while event::poll(Duration::ZERO)? {
        match event::read()? {
            Event::Key(key) if key.kind == KeyEventKind::Press => {
                let ctrl_c =
                    key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
                if ctrl_c || matches!(key.code, KeyCode::Char('q' | 'Q')) {
                    return Ok(Some(Input::Quit));
                }
            }
            Event::Resize(..) => input = Some(Input::Resized),
            _ => {}
        }
    }
    Ok(input)
}
