//! The terminal while the live view has it: raw mode, the alternate screen,
//! the cursor hidden, log lines held. Given back as it was on every way
//! out: the guard's drop (a normal end, an error), and a panic (its hook
//! gives the terminal back before the message is printed, so the message
//! is readable on the main screen).

use std::{
    io::{self, Stdout, Write},
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
    terminal: Terminal<CrosstermBackend<FrameWriter<Stdout>>>,
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
        // Std's stdout passes on every 1 KiB; a frame is bigger. Held whole,
        // a frame leaves in one write (a terminal may still read it in
        // pieces: the synchronized update below says where a frame ends).
        let terminal = Terminal::new(CrosstermBackend::new(FrameWriter::new(
            io::stdout(),
            &TAKEN,
        )))?;
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

/// The view's writer: holds what is drawn until ratatui flushes the
/// frame, then writes it whole, in one call. Once the terminal has been
/// given back (a panic in the middle of a frame: the hook gives it back
/// before the message is printed), it writes nothing: the half-drawn frame
/// would land on the main screen, over the message.
struct FrameWriter<W> {
    frame: Vec<u8>,
    out: W,
    /// Whether the terminal is still ours ([`TAKEN`]).
    ours: &'static AtomicBool,
}

impl<W: Write> FrameWriter<W> {
    fn new(out: W, ours: &'static AtomicBool) -> Self {
        FrameWriter {
            frame: Vec::new(),
            out,
            ours,
        }
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.frame.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let written = if self.ours.load(Ordering::Acquire) {
            self.out
                .write_all(&self.frame)
                .and_then(|()| self.out.flush())
        } else {
            Ok(())
        };
        // Kept for the next frame: its capacity is a frame's size.
        self.frame.clear();
        written
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame leaves whole at the flush, and nothing at all once the
    /// terminal is no longer ours.
    #[test]
    fn a_frame_is_written_whole_and_never_after_the_terminal_is_given_back() {
        static OURS: AtomicBool = AtomicBool::new(true);
        let mut writer = FrameWriter::new(Vec::new(), &OURS);
        writer.write_all(b"\x1b[1;1Hhalf").unwrap();
        assert!(writer.out.is_empty(), "held until the frame is flushed");
        writer.write_all(b" and the rest").unwrap();
        writer.flush().unwrap();
        assert_eq!(writer.out, b"\x1b[1;1Hhalf and the rest");
        writer
            .write_all(b"\x1b[2;1Ha frame cut by a panic")
            .unwrap();
        OURS.store(false, Ordering::Release);
        writer.flush().unwrap();
        assert_eq!(writer.out, b"\x1b[1;1Hhalf and the rest", "nothing more");
        assert!(writer.frame.is_empty());
    }
}
