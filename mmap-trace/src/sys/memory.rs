//! Reading a traced process's memory (`process_vm_readv`), for what the
//! kernel side only points at: Python code objects and their strings.

/// The memory of one process.
pub struct ProcessMemory {
    pub pid: u32,
    /// A read failed because the process is gone (rather than because
    /// nothing is mapped at the address).
    gone: bool,
}

impl ProcessMemory {
    pub fn new(pid: u32) -> Self {
        ProcessMemory { pid, gone: false }
    }

    pub fn gone(&self) -> bool {
        self.gone
    }

    /// Fills `buffer` from `address`; false if that memory cannot be read.
    pub fn read(&mut self, address: u64, buffer: &mut [u8]) -> bool {
        if buffer.is_empty() {
            return true;
        }
        let local = libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: buffer.len(),
        };
        let remote = libc::iovec {
            iov_base: address as *mut libc::c_void,
            iov_len: buffer.len(),
        };
        // SAFETY: `local` describes `buffer`, which is ours and writable for
        // its length; `remote` is only read by the kernel, in the other
        // process, and a bad address there is an error, not a fault here.
        let read =
            unsafe { libc::process_vm_readv(self.pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if read < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            self.gone = true;
        }
        read == buffer.len() as isize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_memory_and_refuses_unmapped_addresses() {
        let text = *b"a code object's name";
        let mut memory = ProcessMemory::new(std::process::id());
        let mut buffer = [0u8; 20];
        assert!(memory.read(text.as_ptr() as u64, &mut buffer));
        assert_eq!(buffer, text);
        assert!(!memory.read(8, &mut buffer), "page 0 is never mapped");
        assert!(!memory.gone());
        let mut gone = ProcessMemory::new(u32::MAX >> 2);
        assert!(!gone.read(text.as_ptr() as u64, &mut buffer));
        assert!(gone.gone(), "no such process");
    }
}
