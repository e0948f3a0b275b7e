//! mmap-trace's eBPF programs.
//!
//! * `mmtrace_enter` (raw tracepoint `sys_enter`): when each traced call
//!   of a traced process entered the kernel.
//! * `mmtrace_exit` (raw tracepoint `sys_exit`): for the traced calls
//!   (mmap, munmap, mremap, brk, shmat, shmdt, mprotect, releasing
//!   madvise) of traced processes, one ring-buffer record with the
//!   arguments, the result, the user stack (native and Python frames) and
//!   when the call entered.
//! * `mmtrace_fork` / `mmtrace_exec` / `mmtrace_pexit` (raw tracepoints
//!   `sched_process_*`): follow children of traced processes, and report
//!   exec and exit so user space can end an address space.
//!
//! Raw tracepoints need no tracefs, and each program returns at once for
//! syscalls we do not trace, before touching any map.
#![no_std]
#![no_main]

mod layout;
mod maps;
mod process;
mod python;
mod regs;
mod syscall;
mod unwind;

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
