//! Stack frames as addresses, how stacks are unwound, and why a walk ends.

use mmap_trace_common::stop;

/// A frame's code address, and what kind of address it is.
///
/// Frame 0 of a stack is where the thread was (the syscall's instruction
/// pointer); every outer frame is a return address, which points just
/// *after* its call instruction. Looking a return address up as is finds
/// the wrong function when the call is the last instruction of its function
/// (a `noreturn` call), and the wrong line more often; the call itself is at
/// least one byte earlier. framehop makes the same distinction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameAddress {
    InstructionPointer(u64),
    ReturnAddress(u64),
}

impl FrameAddress {
    /// The `index`-th frame of a stack whose addresses are `addr`.
    pub fn of_frame(index: usize, addr: u64) -> Self {
        if index == 0 {
            FrameAddress::InstructionPointer(addr)
        } else {
            FrameAddress::ReturnAddress(addr)
        }
    }

    /// The address as captured.
    pub fn address(self) -> u64 {
        match self {
            FrameAddress::InstructionPointer(a) | FrameAddress::ReturnAddress(a) => a,
        }
    }

    /// An address inside the instruction that was executing (for a return
    /// address, inside the call): the one to look symbols and unwind rules
    /// up by.
    pub fn lookup_address(self) -> u64 {
        match self {
            FrameAddress::InstructionPointer(a) => a,
            FrameAddress::ReturnAddress(a) => a.saturating_sub(1),
        }
    }

    /// The same adjustment for a file offset of this address.
    pub fn lookup_offset(self, offset: u64) -> u64 {
        match self {
            FrameAddress::InstructionPointer(_) => offset,
            FrameAddress::ReturnAddress(_) => offset.saturating_sub(1),
        }
    }

    pub fn is_return_address(self) -> bool {
        matches!(self, FrameAddress::ReturnAddress(_))
    }
}

/// A Python frame as the kernel found it: the code object's address in the
/// process and its identity there, the bytecode offset, and where
/// eval-loop calls begin and end (`mmap_trace_common::py_flags`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct PyFrameRaw {
    pub code: u64,
    pub offset: i32,
    pub flags: u32,
    /// `mmap_trace_common::py_code_identity` of the code object at the
    /// call (absent from traces written before it was recorded).
    #[serde(default)]
    pub identity: u32,
}

impl PyFrameRaw {
    /// Which code object the frame ran.
    pub fn code_key(&self, pid: u32, asid: u64) -> CodeKey {
        CodeKey {
            pid,
            asid,
            address: self.code,
            identity: self.identity,
        }
    }

    pub fn ends_group(&self) -> bool {
        self.flags & mmap_trace_common::py_flags::GROUP_END != 0
    }

    /// An eval-loop call that ran no frame of its own: a place holder.
    pub fn is_empty_group(&self) -> bool {
        self.flags & mmap_trace_common::py_flags::EMPTY_GROUP != 0
    }

    /// The walk stopped after this frame with more beyond.
    pub fn is_cut(&self) -> bool {
        self.flags & mmap_trace_common::py_flags::CUT != 0
    }
}

/// A code object of one process: its address in one address space, and
/// its identity there (an address is reused once its object is freed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CodeKey {
    pub pid: u32,
    pub asid: u64,
    pub address: u64,
    pub identity: u32,
}

/// What a frame is.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// Machine code in an object (or anonymous executable memory).
    #[default]
    Native,
    /// A Python function's frame.
    Python,
    /// JIT code, named from the process's perf map (/tmp/perf-PID.map).
    Jit,
}

impl FrameKind {
    pub fn is_native(&self) -> bool {
        *self == FrameKind::Native
    }
}

/// Why a stack walk ended where it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StopReason {
    /// It reached the outermost frame (`_start`, a thread's start routine).
    Complete,
    /// The frame limit (`MAX_STACK_FRAMES`).
    FrameLimit,
    /// A stack read failed.
    ReadFailed,
    /// A pc in no known object: frame pointers led astray, or a mapping
    /// record was lost.
    NoObject,
    /// The code at a pc has no usable call-frame information.
    NoUnwindInfo,
    /// The frame-pointer chain stopped making sense: rbp moved backwards,
    /// was unaligned or jumped too far (code without frame pointers).
    FramePointerInvalid,
    /// The stack copy (`--stack-bytes`) ended before the stack did.
    CopyExhausted,
    /// The walk stopped early, for a reason not recorded (traces made
    /// before stop reasons were).
    Unknown,
}

impl StopReason {
    /// The reason the kernel gave (`mmap_trace_common::stop`), if it is
    /// one the kernel gives.
    pub fn from_kernel(code: u32) -> Option<Self> {
        Some(match code {
            stop::COMPLETE => StopReason::Complete,
            stop::FRAME_LIMIT => StopReason::FrameLimit,
            stop::READ_FAILED => StopReason::ReadFailed,
            stop::NO_UNWIND_INFO => StopReason::NoUnwindInfo,
            stop::FRAME_POINTER_INVALID => StopReason::FramePointerInvalid,
            // MISSING_RULE is no final reason: user space finishes the walk.
            _ => return None,
        })
    }

    pub fn is_complete(self) -> bool {
        self == StopReason::Complete
    }

    /// The stable name (JSON `stop_reason`).
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Complete => "complete",
            StopReason::FrameLimit => "frame_limit",
            StopReason::ReadFailed => "read_failed",
            StopReason::NoObject => "no_object",
            StopReason::NoUnwindInfo => "no_unwind_info",
            StopReason::FramePointerInvalid => "frame_pointer_invalid",
            StopReason::CopyExhausted => "copy_exhausted",
            StopReason::Unknown => "unknown",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            StopReason::Complete,
            StopReason::FrameLimit,
            StopReason::ReadFailed,
            StopReason::NoObject,
            StopReason::NoUnwindInfo,
            StopReason::FramePointerInvalid,
            StopReason::CopyExhausted,
            StopReason::Unknown,
        ]
        .into_iter()
        .find(|reason| reason.name() == name)
    }

    /// What it means, for people.
    pub fn explanation(self) -> &'static str {
        match self {
            StopReason::Complete => "the outermost frame",
            StopReason::FrameLimit => "the frame limit",
            StopReason::ReadFailed => "the stack could not be read further",
            StopReason::NoObject => {
                "a return address in no known code (frame pointers lost in code built without them)"
            }
            StopReason::NoUnwindInfo => "code without usable call-frame information",
            StopReason::FramePointerInvalid => {
                "the frame-pointer chain broke (code built without frame pointers)"
            }
            StopReason::CopyExhausted => "the end of the stack copy (see --stack-bytes)",
            StopReason::Unknown => "a reason the recording does not say",
        }
    }
}

impl serde::Serialize for StopReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for StopReason {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        StopReason::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown stop reason {name:?}")))
    }
}

/// How stacks are captured (`--unwind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UnwindMode {
    /// Frame pointers only: cheapest, but stacks stop at the first code
    /// built without frame pointers.
    Fp,
    /// CFI everywhere; a frame in code without CFI ends the stack.
    Dwarf,
    /// CFI where objects have it, frame pointers where they do not.
    Auto,
}

impl UnwindMode {
    pub fn name(self) -> &'static str {
        match self {
            UnwindMode::Fp => "fp",
            UnwindMode::Dwarf => "dwarf",
            UnwindMode::Auto => "auto",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [UnwindMode::Fp, UnwindMode::Dwarf, UnwindMode::Auto]
            .into_iter()
            .find(|mode| mode.name() == name)
    }

    /// What it means, for people.
    pub fn description(self) -> &'static str {
        match self {
            UnwindMode::Fp => "frame-pointer stacks",
            UnwindMode::Dwarf => "CFI (DWARF) stacks",
            UnwindMode::Auto => "CFI stacks, frame pointers where there is no CFI",
        }
    }
}

impl serde::Serialize for UnwindMode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for UnwindMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        UnwindMode::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown unwinder {name:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_addresses_are_looked_up_one_byte_back() {
        let ip = FrameAddress::of_frame(0, 0x1000);
        let ra = FrameAddress::of_frame(1, 0x2000);
        assert_eq!(ip.lookup_address(), 0x1000);
        assert_eq!(ra.lookup_address(), 0x1fff);
        assert_eq!(ra.lookup_offset(0x40), 0x3f);
        assert_eq!(ip.lookup_offset(0x40), 0x40);
        assert_eq!(ra.address(), 0x2000);
    }

    #[test]
    fn names_round_trip() {
        for reason in [
            StopReason::Complete,
            StopReason::FrameLimit,
            StopReason::ReadFailed,
            StopReason::NoObject,
            StopReason::NoUnwindInfo,
            StopReason::FramePointerInvalid,
            StopReason::CopyExhausted,
            StopReason::Unknown,
        ] {
            assert_eq!(StopReason::from_name(reason.name()), Some(reason));
        }
        for mode in [UnwindMode::Fp, UnwindMode::Dwarf, UnwindMode::Auto] {
            assert_eq!(UnwindMode::from_name(mode.name()), Some(mode));
        }
        assert_eq!(StopReason::from_kernel(99), None);
    }
}
