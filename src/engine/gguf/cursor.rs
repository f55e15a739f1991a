//! Bounds-checked little-endian reads over the mapped file, with errors that carry the
//! file name and the offset of the failed read.

use std::path::Path;

use super::GgufError;

/// Longest string we accept; metadata strings (chat templates included) are far smaller.
const MAX_STRING: u64 = 64 << 20;

pub struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8], path: &'a Path) -> Self {
        Self { data, pos: 0, path }
    }

    pub fn offset(&self) -> u64 {
        self.pos as u64
    }

    pub fn error_at(&self, offset: u64, what: String) -> GgufError {
        GgufError::Malformed {
            path: self.path.to_path_buf(),
            offset,
            what,
        }
    }

    pub fn error_here(&self, what: String) -> GgufError {
        self.error_at(self.offset(), what)
    }

    pub fn bytes(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(self.error_here(format!(
                "expected {what} ({n} bytes) but the file ends after {left} more bytes (truncated file?)"
            )));
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let b = self.bytes(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub fn u16(&mut self, what: &str) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    pub fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let at = self.offset();
        let len = self.u64(what)?;
        if len > MAX_STRING {
            return Err(self.error_at(at, format!("{what} claims a length of {len} bytes")));
        }
        let b = self.bytes(len, what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| self.error_at(at, format!("{what} is not valid UTF-8")))
    }
}
