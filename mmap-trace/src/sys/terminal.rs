//! The terminal on a descriptor: how wide it is.

use std::os::fd::{AsFd, AsRawFd as _};

/// The width in columns of the terminal `fd` is, if it is one (and says).
pub fn columns(fd: impl AsFd) -> Option<u16> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which
    // points at `size`, alive across the call; the descriptor is borrowed
    // open for the call's duration.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(size.ws_col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_no_terminal() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(columns(&file), None);
    }
}
