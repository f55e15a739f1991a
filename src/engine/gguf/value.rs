//! Typed GGUF metadata values, with every value type of the format (including nested arrays).

use super::cursor::Cursor;
use super::GgufError;

/// Nesting deeper than this is certainly a corrupt file.
const MAX_DEPTH: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
        }
    }

    /// Any non-negative integer value, whatever its width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

pub(super) fn read_value(c: &mut Cursor<'_>) -> Result<Value, GgufError> {
    let at = c.offset();
    let ty = c.u32("a metadata value type")?;
    read_typed(c, ty, at, 0)
}

fn read_typed(c: &mut Cursor<'_>, ty: u32, at: u64, depth: usize) -> Result<Value, GgufError> {
    Ok(match ty {
        0 => Value::U8(c.u8("a u8 value")?),
        1 => Value::I8(c.u8("an i8 value")? as i8),
        2 => Value::U16(c.u16("a u16 value")?),
        3 => Value::I16(c.u16("an i16 value")? as i16),
        4 => Value::U32(c.u32("a u32 value")?),
        5 => Value::I32(c.u32("an i32 value")? as i32),
        6 => Value::F32(f32::from_bits(c.u32("an f32 value")?)),
        7 => match c.u8("a bool value")? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            b => {
                return Err(c.error_at(
                    c.offset() - 1,
                    format!("expected a bool (0 or 1), found {b}"),
                ))
            }
        },
        8 => Value::String(c.string("a string value")?),
        9 => {
            if depth >= MAX_DEPTH {
                return Err(c.error_at(at, "arrays nested too deeply".into()));
            }
            let elem_at = c.offset();
            let elem = c.u32("an array element type")?;
            let n = c.u64("an array length")?;
            // Every element takes at least one byte, so a corrupt length runs into the end
            // of the file on a later read; cap the up-front allocation meanwhile.
            let mut items = Vec::with_capacity(n.min(1 << 20) as usize);
            for _ in 0..n {
                items.push(read_typed(c, elem, elem_at, depth + 1)?);
            }
            Value::Array(items)
        }
        10 => Value::U64(c.u64("a u64 value")?),
        11 => Value::I64(c.u64("an i64 value")? as i64),
        12 => Value::F64(f64::from_bits(c.u64("an f64 value")?)),
        other => return Err(c.error_at(at, format!("unknown metadata value type {other}"))),
    })
}
