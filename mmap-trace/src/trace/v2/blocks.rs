//! Version 2 files: a magic number, then blocks of records, each block
//! compressed on its own (zstd), so a file cut short reads up to its last
//! complete block.
//!
//! ```text
//! MAGIC (8 bytes)
//! block*: compressed length u32 LE, raw length u32 LE, records u32 LE,
//!         the zstd frame of the raw records
//! ```

use std::io::{self, Read, Write};

/// The first bytes of a version 2 trace (a version 1 trace starts with
/// `{`): not text, so that nothing mistakes it for JSON.
pub const MAGIC: &[u8; 8] = b"\x89MTRC2\r\n";

/// Raw bytes gathered before a block is compressed and written.
const BLOCK_BYTES: usize = 256 << 10;

/// The largest raw block a reader accepts (a guard against a corrupt
/// length asking for gigabytes).
const MAX_BLOCK_BYTES: u32 = 64 << 20;

/// zstd's level: fast enough for a million events a second on one core.
const LEVEL: i32 = 3;

/// Gathers records into blocks and writes them.
pub struct BlockWriter<W: Write> {
    out: W,
    /// With checksums: a corrupt block is an error, not wrong records.
    compressor: zstd::bulk::Compressor<'static>,
    raw: Vec<u8>,
    records: u32,
}

impl<W: Write> BlockWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        let mut compressor = zstd::bulk::Compressor::new(LEVEL)?;
        compressor.include_checksum(true)?;
        Ok(BlockWriter {
            out,
            compressor,
            raw: Vec::with_capacity(BLOCK_BYTES + 4096),
            records: 0,
        })
    }

    /// The buffer the next record is appended to (then [`Self::record_done`]).
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.raw
    }

    /// One more record is in the buffer; a full block is written.
    pub fn record_done(&mut self) -> io::Result<()> {
        self.records += 1;
        if self.raw.len() >= BLOCK_BYTES {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Writes what is gathered as a block (a reader gets it even if the
    /// recording dies before the next).
    pub fn flush_block(&mut self) -> io::Result<()> {
        if self.records == 0 {
            return Ok(());
        }
        let compressed = self.compressor.compress(&self.raw)?;
        for word in [compressed.len(), self.raw.len(), self.records as usize] {
            let word = u32::try_from(word).map_err(io::Error::other)?;
            self.out.write_all(&word.to_le_bytes())?;
        }
        self.out.write_all(&compressed)?;
        self.out.flush()?;
        self.raw.clear();
        self.records = 0;
        Ok(())
    }

    /// Writes the last block and hands the output back.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_block()?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Why the next block could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("the file ends inside a block: the recording was cut short")]
    CutShort,
    #[error("a block says it holds {0} bytes, more than a trace writes")]
    TooLarge(u32),
    #[error("a block does not decompress ({0})")]
    Corrupt(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads blocks.
pub struct BlockReader<R: Read> {
    input: R,
}

impl<R: Read> BlockReader<R> {
    /// A reader positioned after the magic number (already read).
    pub fn new(input: R) -> Self {
        BlockReader { input }
    }

    /// The next block's raw bytes and record count; `None` at the end of
    /// the file.
    pub fn next_block(&mut self) -> Result<Option<(Vec<u8>, u32)>, BlockError> {
        let mut header = [0u8; 12];
        match read_full(&mut self.input, &mut header)? {
            0 => return Ok(None),
            12 => {}
            _ => return Err(BlockError::CutShort),
        }
        let word =
            |i: usize| u32::from_le_bytes(header[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        let (compressed_len, raw_len, records) = (word(0), word(1), word(2));
        if raw_len > MAX_BLOCK_BYTES || compressed_len > MAX_BLOCK_BYTES {
            return Err(BlockError::TooLarge(raw_len.max(compressed_len)));
        }
        let mut compressed = vec![0u8; compressed_len as usize];
        if read_full(&mut self.input, &mut compressed)? != compressed.len() {
            return Err(BlockError::CutShort);
        }
        let raw = zstd::bulk::decompress(&compressed, raw_len as usize)
            .map_err(|e| BlockError::Corrupt(e.to_string()))?;
        if raw.len() != raw_len as usize {
            return Err(BlockError::Corrupt(format!(
                "{} bytes, not the {raw_len} its header says",
                raw.len()
            )));
        }
        Ok(Some((raw, records)))
    }
}

/// Reads until `buffer` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match input.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(blocks: &[&[&[u8]]]) -> Vec<u8> {
        let mut writer = BlockWriter::new(Vec::new()).unwrap();
        for block in blocks {
            for record in *block {
                writer.buffer().extend_from_slice(record);
                writer.record_done().unwrap();
            }
            writer.flush_block().unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn blocks_round_trip_and_a_cut_file_reads_to_its_last_whole_block() {
        let bytes = file(&[&[b"ab", b"c"], &[b"defg"]]);
        assert_eq!(&bytes[..8], MAGIC);
        let mut reader = BlockReader::new(&bytes[8..]);
        assert_eq!(reader.next_block().unwrap(), Some((b"abc".to_vec(), 2)));
        assert_eq!(reader.next_block().unwrap(), Some((b"defg".to_vec(), 1)));
        assert!(reader.next_block().unwrap().is_none());

        let cut = &bytes[8..bytes.len() - 3];
        let mut reader = BlockReader::new(cut);
        assert_eq!(reader.next_block().unwrap(), Some((b"abc".to_vec(), 2)));
        assert!(matches!(reader.next_block(), Err(BlockError::CutShort)));
    }

    #[test]
    fn corrupt_blocks_are_errors() {
        let mut bytes = file(&[&[b"abc"]]);
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        assert!(matches!(
            BlockReader::new(&bytes[8..]).next_block(),
            Err(BlockError::Corrupt(_))
        ));
        let mut huge = bytes[8..20].to_vec();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            BlockReader::new(&huge[..]).next_block(),
            Err(BlockError::TooLarge(_))
        ));
    }
}
