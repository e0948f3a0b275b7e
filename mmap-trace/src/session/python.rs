//! Python and JIT processes, as the session meets them: the kernel is told
//! where each CPython process keeps its runtime (so it can walk Python
//! frames at each call), code objects are read while their process lives,
//! and perf maps are read for JIT code.

use mmap_trace_common::{py_signature, py_signature_step};
use std::{
    collections::{HashMap, hash_map::Entry},
    sync::Arc,
};

use crate::{
    model::{ObjectId, PyFrameRaw, SyscallEvent},
    resolve::{
        ModuleMaps, Runtimes,
        python::{CodeInfo, Interpreter, NotInterpreter, NotRead, ReadMemory, may_be_interpreter},
    },
    sys::{memory::ProcessMemory, perf_map, python_map::PythonMap},
};

/// What the session knows of its Python and JIT processes.
pub struct Languages {
    /// Absent with `--python off` (or if the kernel's map could not be
    /// opened): no Python frames are walked.
    kernel: Option<PythonMap>,
    /// Objects inspected, and whether each is an interpreter.
    inspected: HashMap<ObjectId, Option<Arc<Interpreter>>>,
    /// Processes whose Python frames the kernel walks.
    processes: HashMap<u32, PythonProcess>,
    /// Perf-map sizes when last read, by pid.
    perf_map_sizes: HashMap<u32, u64>,
    pub runtimes: Runtimes,
}

struct PythonProcess {
    interpreter: Arc<Interpreter>,
    runtime: u64,
    /// The address space the kernel was told of.
    asid: u64,
}

impl Languages {
    pub fn new(kernel: Option<PythonMap>) -> Self {
        Languages {
            kernel,
            inspected: HashMap::new(),
            processes: HashMap::new(),
            perf_map_sizes: HashMap::new(),
            runtimes: Runtimes::default(),
        }
    }

    /// `pid` mapped code of `object` (file offset `file_offset` at
    /// `start`): if it is a CPython interpreter, the kernel learns where
    /// that process's runtime is.
    pub fn on_code_mapped(
        &mut self,
        modules: &ModuleMaps,
        pid: u32,
        object: ObjectId,
        (start, file_offset): (u64, u64),
    ) {
        let Some(kernel) = &mut self.kernel else {
            return;
        };
        let interpreter = match self.inspected.entry(object) {
            Entry::Occupied(known) => known.get().clone(),
            Entry::Vacant(new) => {
                let info = modules.object(object);
                let found = if may_be_interpreter(&info.name) {
                    match Interpreter::inspect(modules.objects().access_path(object), &info.name) {
                        Ok(interpreter) => Some(Arc::new(interpreter)),
                        // Said once per object: its stacks show native
                        // frames only.
                        Err(NotInterpreter::NoRuntime) => None,
                        Err(why) => {
                            log::warn!("no Python frames for {}: {why}", info.display);
                            None
                        }
                    }
                } else {
                    None
                };
                new.insert(found).clone()
            }
        };
        let Some(interpreter) = interpreter else {
            return;
        };
        let Some(runtime) = interpreter.runtime_in_process(start, file_offset) else {
            return;
        };
        self.runtimes
            .python
            .interpreters
            .insert(object, interpreter.clone());
        let asid = kernel.asid(pid).unwrap_or(0);
        if self
            .processes
            .get(&pid)
            .is_some_and(|known| (known.runtime, known.asid) == (runtime, asid))
        {
            return;
        }
        kernel.set(pid, interpreter.layout.config(runtime, asid));
        log::info!(
            "pid {pid} runs Python 3.{}: walking its frames",
            interpreter.minor
        );
        self.processes.insert(
            pid,
            PythonProcess {
                interpreter,
                runtime,
                asid,
            },
        );
    }

    /// A traced process forked: a child of a Python process runs the same
    /// interpreter at the same addresses, in an address space of its own.
    pub fn on_fork(&mut self, pid: u32, parent: u32) {
        let (Some(kernel), Some(process)) = (&mut self.kernel, self.processes.get(&parent)) else {
            return;
        };
        let child = PythonProcess {
            interpreter: process.interpreter.clone(),
            runtime: process.runtime,
            asid: kernel.asid(pid).unwrap_or(0),
        };
        kernel.set(
            pid,
            child.interpreter.layout.config(child.runtime, child.asid),
        );
        self.processes.insert(pid, child);
    }

    /// Looks at the code `pid` mapped again, now that it is known to be
    /// traced (its mapping records may have been read before).
    pub fn recheck(&mut self, modules: &ModuleMaps, pid: u32) {
        let mapped: Vec<(ObjectId, u64, u64)> = modules
            .own_mappings(pid)
            .iter()
            .filter(|m| {
                self.inspected
                    .get(&m.object)
                    .is_none_or(|interpreter| interpreter.is_some())
            })
            .map(|m| (m.object, m.start, m.file_offset))
            .collect();
        for (object, start, file_offset) in mapped {
            self.on_code_mapped(modules, pid, object, (start, file_offset));
        }
    }

    /// Is `address` of `pid` in one of CPython's `-X perf` trampolines?
    /// (The perf map is read again when an address is not in it: a
    /// trampoline is written to it before it first runs.) Asked for
    /// anonymous code met while unwinding a stack copy only, which the
    /// rules learned make rare.
    pub fn is_python_trampoline(&mut self, pid: u32, address: u64) -> bool {
        if self.runtimes.jit.lookup(pid, address).is_none() {
            self.refresh_perf_map(pid);
        }
        self.runtimes
            .jit
            .lookup(pid, address)
            .is_some_and(|symbol| symbol.is_python_trampoline())
    }

    pub fn on_exit(&mut self, pid: u32) {
        if self.processes.remove(&pid).is_some()
            && let Some(kernel) = &mut self.kernel
        {
            kernel.remove(pid);
        }
        self.perf_map_sizes.remove(&pid);
    }

    /// Reads the code objects a call's Python frames run, while the process
    /// still has them; and, if the kernel was told of an older image of
    /// this process (it read the target map before an exec landed), tells
    /// it again.
    pub fn on_call(&mut self, call: &SyscallEvent) {
        let Some(process) = self.processes.get_mut(&call.pid) else {
            return;
        };
        if process.asid != call.asid {
            // The kernel did not walk this call's frames; later ones will be.
            process.asid = call.asid;
            if let Some(kernel) = &mut self.kernel {
                kernel.set(
                    call.pid,
                    process
                        .interpreter
                        .layout
                        .config(process.runtime, call.asid),
                );
            }
        }
        if call.python.is_empty() {
            return;
        }
        let codes = &mut self.runtimes.python.codes;
        let mut memory = Memory(ProcessMemory::new(call.pid));
        let mut signature = py_signature(call.pid);
        for frame in call.python.iter().filter(|f| !f.is_empty_group()) {
            if frame.code != 0 {
                signature = py_signature_step(signature, frame.code, frame.identity);
            }
            if let Entry::Vacant(slot) = codes.entry(frame.code_key(call.pid, call.asid)) {
                slot.insert(read_code(&mut memory, frame, process));
            }
        }
        if let Some(kernel) = &mut self.kernel {
            kernel.mark_seen(signature);
        }
    }

    /// Reads the perf maps of `pids` that appeared or grew (before stacks
    /// are resolved).
    pub fn refresh_perf_maps(&mut self, pids: impl IntoIterator<Item = u32>) {
        for pid in pids {
            self.refresh_perf_map(pid);
        }
    }

    /// Reads `pid`'s perf map if it appeared or grew since it was last
    /// read: JIT code is named by it, and CPython's `-X perf` trampolines
    /// are found in it.
    pub fn refresh_perf_map(&mut self, pid: u32) {
        let Some(size) = perf_map::size(pid) else {
            return;
        };
        if self.perf_map_sizes.get(&pid) == Some(&size) {
            return;
        }
        if let Some(text) = perf_map::read(pid) {
            self.perf_map_sizes.insert(pid, size);
            self.runtimes.jit.load(pid, &text);
        }
    }
}

/// The code object a frame runs, checked to be one: its type must be
/// `PyCode_Type` (moved by the same load bias as `_PyRuntime`).
/// A process's memory, as code objects are read from it.
struct Memory(ProcessMemory);

impl ReadMemory for Memory {
    fn read(&mut self, address: u64, buffer: &mut [u8]) -> bool {
        self.0.read(address, buffer)
    }
}

fn read_code(
    memory: &mut Memory,
    frame: &PyFrameRaw,
    process: &PythonProcess,
) -> Result<Arc<CodeInfo>, NotRead> {
    let interpreter = &process.interpreter;
    let bias = process.runtime.wrapping_sub(interpreter.runtime);
    let code_type = (interpreter.code_type != 0).then(|| interpreter.code_type.wrapping_add(bias));
    CodeInfo::read(
        memory,
        frame.code,
        frame.identity,
        &interpreter.layout.code,
        interpreter.layout.style,
        code_type,
    )
    .map(Arc::new)
    // No memory at the address of a process that is still there: the
    // frame was not a frame.
    .map_err(|why| match why {
        NotRead::Object if !memory.0.gone() => NotRead::NotCode,
        why => why,
    })
    .inspect_err(|why| {
        log::debug!(
            "pid {}: code object at {:#x}: {why}",
            memory.0.pid,
            frame.code
        )
    })
}
