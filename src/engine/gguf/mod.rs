//! Memory-mapped GGUF reader (format versions 2 and 3).
//!
//! A GGUF file is a header (magic, version, counts), a table of typed metadata values, a
//! tensor table, and a data section aligned to `general.alignment`. We map the file once and
//! hand out zero-copy [`TensorView`]s into the map. Every read is bounds-checked through
//! [`cursor::Cursor`], so a truncated or corrupt file yields a [`GgufError`] naming the file,
//! the byte offset and what was expected; nothing here panics on file contents. [`write`]
//! makes metadata-only files.

mod cursor;
mod value;
pub mod write;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::engine::quant::GgmlType;
use cursor::Cursor;
pub use value::Value;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Guards against absurd counts in corrupt headers before we allocate for them.
const MAX_DIMS: u32 = 4;

/// Why a GGUF file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: cannot open: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: at byte offset {offset}: {what}")]
    Malformed {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{path}: missing metadata key `{key}`")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: metadata key `{key}` has type {found}, expected {expected}")]
    WrongType {
        path: PathBuf,
        key: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("{path}: missing tensor `{name}`")]
    MissingTensor { path: PathBuf, name: String },
}

/// One entry of the tensor table.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in GGUF order: `dims[0]` is the contiguous (row) length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte offset of the tensor's data in the file.
    pub offset: u64,
    pub size: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A zero-copy view of one tensor's bytes inside the mapped file.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub dims: &'a [u64],
    pub ty: GgmlType,
    pub data: &'a [u8],
}

/// An opened GGUF file: metadata, tensor table and the memory map they point into.
pub struct GgufFile {
    path: PathBuf,
    pub version: u32,
    pub alignment: u64,
    metadata: HashMap<String, Value>,
    /// Metadata keys in file order, for listing.
    keys: Vec<String>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    map: Arc<Mmap>,
    /// Where the metadata ends (and the tensor table starts).
    metadata_end: usize,
}

impl GgufFile {
    /// Maps and parses `path`. Tensor data is not touched until a view is read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |error| GgufError::Io {
            path: path.clone(),
            error,
        };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: the map is read-only and lives as long as `GgufFile`; like every mmap
        // reader we assume the file is not truncated underneath us while in use.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(path, Arc::new(map))
    }

    fn parse(path: PathBuf, map: Arc<Mmap>) -> Result<Self, GgufError> {
        let mut c = Cursor::new(&map, &path);
        let magic = c.bytes(4, "the GGUF magic")?;
        if magic != MAGIC {
            return Err(c.error_at(0, format!("expected magic \"GGUF\", found {magic:02x?}")));
        }
        let version = c.u32("the format version")?;
        if !(2..=3).contains(&version) {
            return Err(c.error_at(
                4,
                format!("unsupported GGUF version {version} (supported: 2, 3)"),
            ));
        }
        let n_tensors = c.u64("the tensor count")?;
        let n_kv = c.u64("the metadata count")?;
        // Every entry takes at least 8 bytes, so counts beyond the file size are corrupt.
        for (count, what) in [(n_tensors, "tensor count"), (n_kv, "metadata count")] {
            if count > map.len() as u64 / 8 {
                return Err(c.error_here(format!("{what} {count} is larger than the file allows")));
            }
        }

        let mut metadata = HashMap::with_capacity(n_kv as usize);
        let mut keys = Vec::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let key = c.string("a metadata key")?;
            let value = value::read_value(&mut c)?;
            keys.push(key.clone());
            metadata.insert(key, value);
        }

        let metadata_end = c.offset() as usize;
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(c.error_here(format!(
                        "general.alignment must be a power of two, found {v:?}"
                    )))
                }
            },
        };

        let mut raw = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let start = c.offset();
            let name = c.string("a tensor name")?;
            let n_dims = c.u32("a tensor's dimension count")?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(c.error_at(
                    start,
                    format!("tensor `{name}` has {n_dims} dimensions (1..={MAX_DIMS} expected)"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64("a tensor dimension")?);
            }
            let type_at = c.offset();
            let type_id = c.u32("a tensor type")?;
            let ty = GgmlType::from_id(type_id).ok_or_else(|| {
                c.error_at(
                    type_at,
                    format!("tensor `{name}` has unknown tensor type id {type_id}"),
                )
            })?;
            let rel = c.u64("a tensor data offset")?;
            raw.push((start, name, dims, ty, rel));
        }
        let data_start = c.offset().div_ceil(alignment) * alignment;

        let mut tensors = Vec::with_capacity(raw.len());
        let mut by_name = HashMap::with_capacity(raw.len());
        for (at, name, dims, ty, rel) in raw {
            let n: u64 = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .unwrap_or(u64::MAX);
            let row = dims[0];
            if row % ty.block_elems() as u64 != 0 {
                return Err(c.error_at(at, format!("tensor `{name}` row length {row} is not a multiple of {ty:?}'s block of {}", ty.block_elems())));
            }
            let size = (n / ty.block_elems() as u64).checked_mul(ty.block_bytes() as u64);
            let offset = data_start.checked_add(rel);
            let (Some(size), Some(offset)) = (size, offset) else {
                return Err(c.error_at(
                    at,
                    format!("tensor `{name}` has an impossible size or offset"),
                ));
            };
            if offset % alignment != 0 {
                return Err(c.error_at(
                    at,
                    format!("tensor `{name}` data offset {offset} is not aligned to {alignment}"),
                ));
            }
            if offset
                .checked_add(size)
                .is_none_or(|end| end > map.len() as u64)
            {
                return Err(GgufError::Malformed {
                    path: path.clone(),
                    offset,
                    what: format!(
                        "tensor `{name}` needs {size} bytes of data but the file ends at byte {} (truncated file?)",
                        map.len()
                    ),
                });
            }
            by_name.insert(name.clone(), tensors.len());
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
                size,
            });
        }

        Ok(Self {
            path,
            version,
            alignment,
            metadata,
            keys,
            tensors,
            by_name,
            map,
            metadata_end,
        })
    }

    /// The file's metadata as a GGUF file of its own, without tensors: what a node needs to
    /// tokenize and render prompts for the model without its weights (a model card).
    pub fn metadata_only(&self) -> Vec<u8> {
        let mut bytes = self.map[..self.metadata_end].to_vec();
        // The tensor count follows the magic and the version.
        bytes[8..16].copy_from_slice(&0u64.to_le_bytes());
        bytes
    }

    /// Parses a GGUF file held in memory (`name` is used in errors).
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self, GgufError> {
        let path = PathBuf::from(name);
        let io = |error| GgufError::Io {
            path: path.clone(),
            error,
        };
        let mut map = memmap2::MmapMut::map_anon(bytes.len().max(1)).map_err(io)?;
        map[..bytes.len()].copy_from_slice(bytes);
        let map = map.make_read_only().map_err(io)?;
        Self::parse(path, Arc::new(map))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// Metadata keys in file order.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor table entry for `name`.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.by_name
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| GgufError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })
    }

    /// The shared memory map, for weights that must outlive this struct's borrow.
    pub fn map(&self) -> &Arc<Mmap> {
        &self.map
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, GgufError> {
        let t = self.tensor_info(name)?;
        // Bounds were validated in `parse`.
        let data = &self.map[t.offset as usize..(t.offset + t.size) as usize];
        Ok(TensorView {
            name: &t.name,
            dims: &t.dims,
            ty: t.ty,
            data,
        })
    }

    fn wrong_type(&self, key: &str, v: &Value, expected: &'static str) -> GgufError {
        GgufError::WrongType {
            path: self.path.clone(),
            key: key.to_string(),
            found: v.type_name(),
            expected,
        }
    }

    fn typed<T>(
        &self,
        key: &str,
        expected: &'static str,
        f: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<T>, GgufError> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => f(v)
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, v, expected)),
        }
    }

    fn required<T>(&self, key: &str, v: Option<T>) -> Result<T, GgufError> {
        v.ok_or_else(|| GgufError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        })
    }

    pub fn u64_opt(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.typed(key, "an unsigned integer", Value::as_u64)
    }
    pub fn u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.u64_opt(key)?;
        self.required(key, v)
    }
    pub fn f32_opt(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.typed(key, "a float", Value::as_f32)
    }
    pub fn f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.f32_opt(key)?;
        self.required(key, v)
    }
    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.typed(key, "a bool", Value::as_bool)
    }
    pub fn str_opt(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(key, v, "a string")),
        }
    }
    pub fn str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.str_opt(key)?;
        self.required(key, v)
    }
    pub fn array(&self, key: &str) -> Result<&[Value], GgufError> {
        let v = self.array_opt(key)?;
        self.required(key, v)
    }
    pub fn array_opt(&self, key: &str) -> Result<Option<&[Value]>, GgufError> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.wrong_type(key, v, "an array")),
        }
    }
}

#[cfg(test)]
mod tests;
