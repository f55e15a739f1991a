//! Bad files give clear errors naming the file and the offset, never a panic.

use super::*;

/// Builds a minimal GGUF: one u32 metadata value and one F32 tensor of 8 elements.
fn build(magic: &[u8; 4], version: u32, type_id: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(magic);
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&2u64.to_le_bytes()); // kv
    let key = |b: &mut Vec<u8>, k: &str| {
        b.extend_from_slice(&(k.len() as u64).to_le_bytes());
        b.extend_from_slice(k.as_bytes());
    };
    key(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes());
    key(&mut b, "llama");
    key(&mut b, "test.list");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&4u32.to_le_bytes()); // i16 elements... type 4 = u32
    b.extend_from_slice(&2u64.to_le_bytes());
    b.extend_from_slice(&7u32.to_le_bytes());
    b.extend_from_slice(&9u32.to_le_bytes());
    key(&mut b, "w");
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&8u64.to_le_bytes());
    b.extend_from_slice(&type_id.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    while b.len() % 32 != 0 {
        b.push(0);
    }
    for i in 0..8 {
        b.extend_from_slice(&(i as f32).to_le_bytes());
    }
    b
}

fn open_bytes(bytes: &[u8]) -> Result<GgufFile, GgufError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, bytes).unwrap();
    GgufFile::open(&path)
}

#[test]
fn a_valid_file_parses_with_zero_copy_tensors() {
    let f = open_bytes(&build(b"GGUF", 3, 0)).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.str("general.architecture").unwrap(), "llama");
    assert_eq!(
        f.array("test.list").unwrap(),
        &[Value::U32(7), Value::U32(9)]
    );
    let t = f.tensor("w").unwrap();
    assert_eq!(t.dims, &[8]);
    assert_eq!(&t.data[4..8], &1.0f32.to_le_bytes());
    // Version 2 has the same layout.
    assert!(open_bytes(&build(b"GGUF", 2, 0)).is_ok());
}

#[test]
fn wrong_magic_is_reported() {
    let e = open_bytes(&build(b"GGML", 3, 0)).err().unwrap().to_string();
    assert!(
        e.contains("model.gguf") && e.contains("offset 0") && e.contains("magic"),
        "{e}"
    );
}

#[test]
fn unsupported_version_is_reported() {
    let e = open_bytes(&build(b"GGUF", 1, 0)).err().unwrap().to_string();
    assert!(e.contains("version 1"), "{e}");
}

#[test]
fn unknown_tensor_type_is_reported_with_its_offset() {
    let e = open_bytes(&build(b"GGUF", 3, 99))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("unknown tensor type id 99") && e.contains("byte offset"),
        "{e}"
    );
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let full = build(b"GGUF", 3, 0);
    for len in 0..full.len() {
        let r = std::panic::catch_unwind(|| open_bytes(&full[..len]).err().map(|e| e.to_string()));
        let msg = r.unwrap_or_else(|_| panic!("panicked on a file truncated to {len} bytes"));
        let msg = msg.unwrap_or_else(|| panic!("a file truncated to {len} bytes parsed"));
        assert!(msg.contains("model.gguf"), "{msg}");
    }
    let e = open_bytes(&full[..full.len() - 4])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn corrupt_lengths_do_not_allocate_or_panic() {
    let mut b = build(b"GGUF", 3, 0);
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes()); // kv count
    assert!(open_bytes(&b).is_err());
    let mut b = build(b"GGUF", 3, 0);
    b[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes()); // first key length
    assert!(open_bytes(&b).is_err());
}

#[test]
fn a_missing_file_names_the_path() {
    let e = GgufFile::open("/nonexistent/x.gguf")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/nonexistent/x.gguf"), "{e}");
}
