//! Writes GGUF metadata: a file of key-value pairs and no tensors. Nodes exchange models'
//! metadata this way (model cards), and the worker simulator describes its made-up model so.

use super::Value;

/// Format version written.
const VERSION: u32 = 3;

/// A GGUF file holding `pairs` as its metadata, in order, and no tensors.
pub fn metadata_file(pairs: &[(&str, Value)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&(pairs.len() as u64).to_le_bytes());
    for (key, value) in pairs {
        string(&mut b, key);
        b.extend_from_slice(&type_id(value).to_le_bytes());
        write(&mut b, value);
    }
    b
}

fn string(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn write(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => b.push(*x),
        Value::I8(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => b.push(u8::from(*x)),
        Value::String(s) => string(b, s),
        Value::Array(items) => {
            // An empty array's element type is arbitrary; readers see no elements.
            b.extend_from_slice(&items.first().map_or(8, type_id).to_le_bytes());
            b.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|i| write(b, i));
        }
        Value::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gguf::GgufFile;

    #[test]
    fn what_is_written_reads_back() {
        let pairs = [
            ("a.u32", Value::U32(7)),
            ("a.i32", Value::I32(-3)),
            ("a.f64", Value::F64(0.5)),
            ("a.bool", Value::Bool(true)),
            ("a.str", Value::String("héllo".into())),
            (
                "a.strs",
                Value::Array(vec![Value::String("x".into()), Value::String("y z".into())]),
            ),
            ("a.empty", Value::Array(vec![])),
            (
                "a.nested",
                Value::Array(vec![Value::Array(vec![Value::U8(1)])]),
            ),
        ];
        let f = GgufFile::from_bytes("written", &metadata_file(&pairs)).unwrap();
        assert!(f.tensors().is_empty());
        for (k, v) in &pairs {
            assert_eq!(f.get(k), Some(v), "{k}");
        }
        assert_eq!(
            f.keys(),
            pairs.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>()
        );
    }
}
