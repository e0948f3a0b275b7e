//! Is this a return address? An x86_64 return address immediately follows a
//! `call` instruction; given the bytes just before it, decide whether one of
//! the call encodings ends exactly there.

/// Bytes to read before a candidate return address.
pub const WINDOW: usize = 8;

/// True if `before` (the bytes ending at a candidate return address, at most
/// [`WINDOW`] of them) ends with a complete call instruction.
pub fn ends_with_call(before: &[u8]) -> bool {
    let n = before.len();
    // call rel32: E8 xx xx xx xx
    if n >= 5 && before[n - 5] == 0xE8 {
        return true;
    }
    // call r/m64: [REX] [3E (notrack)] FF /2 modrm [sib] [disp]
    (2..=n.min(WINDOW)).any(|len| indirect_call_of_length(&before[n - len..]))
}

/// Does `code` (exactly) encode `FF /2`, with optional REX/notrack prefixes?
fn indirect_call_of_length(code: &[u8]) -> bool {
    let mut i = 0;
    if code.get(i) == Some(&0x3E) {
        i += 1;
    }
    if code.get(i).is_some_and(|b| b & 0xF0 == 0x40) {
        i += 1;
    }
    if code.get(i) != Some(&0xFF) {
        return false;
    }
    let Some(&modrm) = code.get(i + 1) else {
        return false;
    };
    if (modrm >> 3) & 7 != 2 {
        return false;
    }
    let mode = modrm >> 6;
    let rm = modrm & 7;
    let mut len = i + 2;
    if mode != 3 && rm == 4 {
        // SIB byte; with mod 0 and base 5 a disp32 follows.
        let Some(&sib) = code.get(len) else {
            return false;
        };
        len += 1;
        if mode == 0 && sib & 7 == 5 {
            len += 4;
        }
    }
    len += match (mode, rm) {
        (0, 5) => 4, // RIP-relative disp32
        (1, _) => 1,
        (2, _) => 4,
        _ => 0,
    };
    len == code.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_padding(code: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0x90; WINDOW - code.len()];
        bytes.extend_from_slice(code);
        bytes
    }

    #[test]
    fn recognises_call_encodings() {
        let calls: &[&[u8]] = &[
            &[0xE8, 0x10, 0x20, 0x30, 0x40], // call rel32
            &[0xFF, 0xD0],                   // call rax
            &[0x41, 0xFF, 0xD3],             // call r11
            &[0xFF, 0x15, 1, 2, 3, 4],       // call [rip+disp32]
            &[0xFF, 0x50, 0x08],             // call [rax+8]
            &[0xFF, 0x14, 0x24],             // call [rsp]
            &[0xFF, 0x94, 0xC3, 1, 2, 3, 4], // call [rbx+rax*8+disp32]
            &[0x3E, 0xFF, 0xD0],             // notrack call rax
            &[0xFF, 0x14, 0xC5, 1, 2, 3, 4], // call [rax*8+disp32]
        ];
        for code in calls {
            assert!(ends_with_call(&with_padding(code)), "{code:x?}");
        }
    }

    #[test]
    fn rejects_non_calls() {
        let others: &[&[u8]] = &[
            &[0x48, 0x89, 0xE5],    // mov rbp, rsp
            &[0xFF, 0xE0],          // jmp rax (FF /4)
            &[0x0F, 0x05],          // syscall
            &[0xFF, 0x15, 1, 2, 3], // truncated call [rip+disp32]
            &[0xC3],                // ret
        ];
        for code in others {
            assert!(!ends_with_call(&with_padding(code)), "{code:x?}");
        }
        assert!(!ends_with_call(&[]));
    }
}
