//! Random identifiers and secrets (account, key and job ids, API keys, admin tokens): hex
//! digits from the operating system's random source, so none can be predicted from another.

#[derive(Debug, thiserror::Error)]
#[error("the system's random source failed: {0}")]
pub struct RandomError(String);

/// `bytes` random bytes as 2 × `bytes` lowercase hex digits.
pub fn random_hex(bytes: usize) -> Result<String, RandomError> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| RandomError(e.to_string()))?;
    Ok(hex(&b))
}

/// Lowercase hex digits of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|x| format!("{x:02x}")).collect()
}
