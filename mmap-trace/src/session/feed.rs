//! Feeding the books: records from the kernel, decoded, unwound and
//! attributed; mapping records into the module maps; /proc for processes
//! found running.

use std::{convert::Infallible, os::unix::ffi::OsStrExt as _, path::Path};

use super::Session;
use crate::account::check::check;
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
    /// What is in the buffer is decoded first, and what cannot wait is
    /// done for all of it (see [`Session::prepare`]: a Python code object
    /// may be freed at any time, and a short-lived process takes its
    /// memory with it) before anything slower (unwinding stack copies).
    /// Events are then applied in the order they took effect
    /// (`account::order`), which holds each for a moment.
    pub fn drain_events(&mut self) {
        loop {
            let mut batch = Vec::new();
            while batch.len() < DRAIN_BATCH {
                let decoded = match self.events.next() {
                    Some(item) => decode(&item),
                    None => break,
                };
                match decoded.map_err(|e| e.to_string()).and_then(|event| {
                    check(&event).map_err(|e| e.to_string())?;
                    Ok(event)
                }) {
                    Ok(event) => batch.push(event),
                    Err(error) => {
                        // The first few are named; a flood is counted.
                        if self.malformed < 5 {
                            log::warn!("dropping a malformed record: {error}");
                        } else {
                            log::debug!("dropping a malformed record: {error}");
                        }
                        self.malformed += 1;
                    }
                }
            }
            if batch.is_empty() {
                return;
            }
            for event in &mut batch {
                self.prepare(event);
            }
            for event in batch {
                self.order.push(event);
            }
            self.release(0);
        }
    }

    /// Applies the held events that no later record can precede (`now_ns`:
    /// the clock, when no record says how far time has gone).
    pub(super) fn release(&mut self, now_ns: u64) {
        while let Some(event) = self.order.pop_ready(now_ns) {
            self.handle(event);
        }
    }

    /// Applies every held event (the session ends).
    pub(super) fn release_all(&mut self) {
        while let Some(event) = self.order.pop() {
            self.handle(event);
        }
    }

    /// What must be done as soon as a record arrives, before it waits its
    /// turn: read what the process may soon take away (code objects, the
    /// path of a shared mapping, a joining process's maps), and set up what
    /// the kernel needs for a new process or image (its Python runtime).
    fn prepare(&mut self, event: &mut Event) {
        match event {
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
                if call.call.maps_code() && !call.failed() {
                    // A library was loaded: if it is a Python interpreter,
                    // the kernel walks its frames from now, not from the
                    // next tick (a short script is done in milliseconds).
                    self.drain_perf();
                }
                self.languages.on_call(call);
                find_shmem(call);
                self.enrich(call);
            }
            Event::Exit(e) => self.languages.on_exit(e.pid),
        }
    }

    /// Applies an event to the books, in order.
    fn handle(&mut self, mut event: Event) {
        if let Event::Syscall(call) = &mut event {
            self.unwind(call);
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
    /// replay of its trace knows it too: what a madvise gave back, as the
    /// sample before it measured it (taken when the record arrives: a
    /// sample taken while the record waits its turn would find the pages
    /// gone already), and, see [`find_shmem`], whether a shared file
    /// mapping is memory.
    fn enrich(&mut self, call: &mut SyscallEvent) {
        if let Call::Madvise { addr, len, .. } = call.call
            && !call.failed()
        {
            call.resident_returned = Some(self.book.resident_in(call.pid, addr, len));
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
        let entries = match procmaps::read(pid) {
            Ok(entries) => entries,
            Err(error) => {
                log::info!("{error}");
                return;
            }
        };
        // The process runs on while its maps are read: a call it makes
        // meanwhile may or may not show in them. Stamped after the read,
        // such calls are reconciled with the seed, which tells by what it
        // holds (`Collector::reconcile_with_seed`).
        let read_at = monotonic_ns();
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

/// Whether a shared file mapping is memory (a memfd, /dev/shm), read from
/// /proc as soon as its record arrives: the mapping may be gone soon.
fn find_shmem(call: &mut SyscallEvent) {
    if let Call::Mmap { flags, fd, .. } = call.call
        && fd >= 0
        && flags & map_flags::SHARED != 0
        && !call.failed()
    {
        call.shmem = mapped_path(call.pid, call.ret as u64)
            .is_some_and(|path| is_shmem_path(path.as_os_str().as_bytes()));
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
