//! Feeding the books: records from the kernel, decoded, unwound and
//! attributed; mapping records into the module maps; /proc for processes
//! found running.

use std::{convert::Infallible, os::unix::ffi::OsStrExt as _, path::Path};

use super::Session;
use crate::{
    model::{Call, Event, MemoryKind, StackSource, SyscallEvent, is_shmem_path, map_flags},
    resolve::{NewMapping, objects::name_from_kernel, place::attribute_raw},
    sys::{
        clock::monotonic_ns,
        decode::decode,
        perf::PerfRecord,
        procmaps::{self, MapsEntry},
    },
    unwind::CodeAt,
};

/// Most records decoded before they are handled (a bound on the memory a
/// full ring buffer takes in user space at once).
const DRAIN_BATCH: usize = 4096;

impl Session<'_> {
    /// Decodes every record in the ring buffer into the books.
    ///
    /// What is in the buffer is decoded first, and the Python code objects
    /// its calls ran are read before anything slower (unwinding stack
    /// copies) is done: a code object may be freed at any time, and a
    /// short-lived process takes its memory with it.
    pub fn drain_events(&mut self) {
        loop {
            let mut batch = Vec::new();
            while batch.len() < DRAIN_BATCH {
                let decoded = match self.events.next() {
                    Some(item) => decode(&item),
                    None => break,
                };
                match decoded {
                    Ok(event) => batch.push(event),
                    Err(error) => {
                        log::warn!("dropping a malformed record: {error}");
                        self.book.lost(1, &mut *self.recorder);
                    }
                }
            }
            if batch.is_empty() {
                return;
            }
            for event in &batch {
                if let Event::Syscall(call) = event {
                    self.languages.on_call(call);
                }
            }
            for event in batch {
                self.handle(event);
            }
        }
    }

    fn handle(&mut self, mut event: Event) {
        match &mut event {
            Event::Fork(e) => {
                self.modules.claim(e.pid);
                self.drain_perf();
                self.languages.on_fork(e.pid, e.parent_pid);
                self.languages.recheck(&self.modules, e.pid);
            }
            Event::Exec(e) => {
                self.modules.claim(e.pid);
                // Its new image's mappings may have come before it was
                // known to be traced.
                self.drain_perf();
                self.languages.recheck(&self.modules, e.pid);
            }

            Event::Join(e) => self.seed(e.pid),
            Event::Syscall(call) => {
                self.unwind(call);
                self.enrich(call);
            }
            Event::Exit(e) => self.languages.on_exit(e.pid),
        }
        let Session {
            book,
            modules,
            rules,
            code,
            recorder,
            ..
        } = self;
        let applied = book.apply(event, &mut **recorder, |_, raw, first_seen_ns| {
            Ok::<_, Infallible>(attribute_raw(raw, first_seen_ns, modules, rules, code))
        });
        match applied {
            Ok(()) => {}
            Err(never) => match never {},
        }
    }

    /// What only a live session can know, kept in the event so that a
    /// replay of its trace knows it too: whether a shared file mapping is
    /// memory (a memfd, /dev/shm), and what a madvise gave back.
    fn enrich(&mut self, call: &mut SyscallEvent) {
        if call.failed() {
            return;
        }
        match call.call {
            Call::Mmap { flags, fd, .. } if fd >= 0 && flags & map_flags::SHARED != 0 => {
                call.shmem = mapped_path(call.pid, call.ret as u64)
                    .is_some_and(|path| is_shmem_path(path.as_os_str().as_bytes()));
            }
            Call::Madvise { addr, len, .. } => {
                call.resident_returned = Some(self.book.resident_in(call.pid, addr, len));
            }
            _ => {}
        }
    }

    fn unwind(&mut self, call: &mut SyscallEvent) {
        if self.unwinder.is_none() {
            return;
        }
        if call.source == StackSource::Window {
            // The code's mapping records were written before the call ran;
            // make sure they are read before its stack is placed.
            self.drain_perf();
        }
        let (pid, time_ns) = (call.pid, call.time_ns);
        let (modules, languages) = (&self.modules, &mut self.languages);
        if let Some(unwinder) = &mut self.unwinder {
            unwinder.unwind(call, |address| {
                match modules.code_at(pid, address, time_ns) {
                    CodeAt::Anonymous if languages.is_python_trampoline(pid, address) => {
                        CodeAt::PythonTrampoline
                    }
                    code => code,
                }
            });
        }
    }

    /// Moves the kernel's mapping records into the module maps.
    pub fn drain_perf(&mut self) {
        let (modules, languages) = (&mut self.modules, &mut self.languages);
        let mut sink = |record: PerfRecord| match record {
            PerfRecord::Mmap2 {
                pid,
                addr,
                len,
                pgoff,
                inode,
                name,
                time_ns,
            } => {
                let object = modules.on_mmap(
                    pid,
                    NewMapping {
                        start: addr,
                        end: addr.saturating_add(len),
                        file_offset: pgoff,
                        name: &name_from_kernel(Some(&name)),
                        inode,
                        time_ns,
                    },
                );
                if modules.is_traced_or_descendant(pid) {
                    languages.on_code_mapped(modules, pid, object, (addr, pgoff));
                }
            }
            PerfRecord::Fork {
                pid, ppid, time_ns, ..
            } if pid != ppid => modules.on_fork(pid, ppid, time_ns),
            PerfRecord::Exec { pid, time_ns } => modules.on_exec(pid, time_ns),
            PerfRecord::Exit { pid, tid, time_ns } if pid == tid => modules.on_exit(pid, time_ns),
            PerfRecord::Lost { count } => modules.lost += count,
            _ => {}
        };
        for ring in &mut self.perf {
            ring.drain(&mut sink);
        }
    }

    /// Records what a running process already has mapped (a `--pid`
    /// target, or a process that joined the traced cgroup).
    pub fn seed(&mut self, pid: u32) {
        let read_at = monotonic_ns();
        let entries = match procmaps::read(pid) {
            Ok(entries) => entries,
            Err(error) => {
                log::info!("{error}");
                return;
            }
        };
        let names: Vec<_> = entries
            .iter()
            .map(|e| name_from_kernel(e.name.as_deref()))
            .collect();
        self.modules.claim(pid);
        for new in executable_mappings(&entries, &names) {
            let (start, file_offset) = (new.start, new.file_offset);
            let object = self.modules.on_mmap(pid, new);
            self.languages
                .on_code_mapped(&self.modules, pid, object, (start, file_offset));
        }
        let collector = &mut self.book.collector;
        if let Some(heap) = entries
            .iter()
            .find(|e| e.name.as_deref() == Some(Path::new("[heap]")))
        {
            collector.seed_brk(pid, heap.end);
        }
        for entry in entries
            .iter()
            .filter(|e| e.name.as_deref() != Some(Path::new("[vsyscall]")))
        {
            let kind = MemoryKind::of_maps_entry(entry.name.as_deref(), entry.shared);
            collector.seed_preexisting(pid, (entry.start, entry.end), (entry.prot, kind), read_at);
        }
    }
}

/// The path of the mapping at `start` of `pid`, from /proc/PID/maps.
fn mapped_path(pid: u32, start: u64) -> Option<std::path::PathBuf> {
    procmaps::read(pid)
        .ok()?
        .into_iter()
        .find(|entry| entry.start == start)?
        .name
}

/// The code mappings among a process's maps (`names[i]` is entry i's
/// name), as mappings that were there before tracing began.
fn executable_mappings<'a>(
    entries: &'a [MapsEntry],
    names: &'a [std::path::PathBuf],
) -> impl Iterator<Item = NewMapping<'a>> {
    entries
        .iter()
        .zip(names)
        .filter(|(entry, _)| entry.executable)
        .map(|(entry, name)| NewMapping {
            start: entry.start,
            end: entry.end,
            file_offset: entry.offset,
            name,
            inode: entry.inode,
            time_ns: 0,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_executable_mappings_are_code() {
        let entries = procmaps::parse(
            "1000-2000 r--p 00000000 fe:00 5 /bin/x\n2000-3000 r-xp 00001000 fe:00 5 /bin/x\n",
        )
        .unwrap();
        let names: Vec<_> = entries
            .iter()
            .map(|e| name_from_kernel(e.name.as_deref()))
            .collect();
        let code: Vec<_> = executable_mappings(&entries, &names).collect();
        assert_eq!(code.len(), 1);
        assert_eq!((code[0].start, code[0].file_offset), (0x2000, 0x1000));
        assert_eq!(code[0].name, Path::new("/bin/x"));
    }
}
