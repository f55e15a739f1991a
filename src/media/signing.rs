//! Signed, expiring media URLs: `/v1/media/{id}?exp=UNIX&sig=HEX`, where `sig` is the
//! HMAC-SHA256 of `id` and `exp` under the server's media secret. The URL is the
//! capability: whoever holds it may download the asset until it expires, and nobody can
//! make one for another asset or a later time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a URL in a response stays good.
pub const URL_LIFETIME_SECS: u64 = 7 * 24 * 3600;

#[derive(Clone)]
pub struct UrlSigner {
    secret: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SignatureError {
    Expired,
    Bad,
}

impl UrlSigner {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self, id: &str, exp: u64) -> Hmac<Sha256> {
        // Any key length is valid for HMAC.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(id.as_bytes());
        mac.update(b"\n");
        mac.update(exp.to_string().as_bytes());
        mac
    }

    /// The URL of asset `id` under `origin` (`http://host:port`, as the client reached the
    /// front), good until `now + URL_LIFETIME_SECS`.
    pub fn url(&self, origin: &str, id: &str, now: u64) -> String {
        let exp = now + URL_LIFETIME_SECS;
        let sig = hex(&self.mac(id, exp).finalize().into_bytes());
        format!("{origin}/v1/media/{id}?exp={exp}&sig={sig}")
    }

    /// Checks a URL's `exp` and `sig` for asset `id` at `now`.
    pub fn verify(&self, id: &str, exp: u64, sig: &str, now: u64) -> Result<(), SignatureError> {
        let Some(sig) = unhex(sig) else {
            return Err(SignatureError::Bad);
        };
        self.mac(id, exp)
            .verify_slice(&sig)
            .map_err(|_| SignatureError::Bad)?;
        if exp < now {
            return Err(SignatureError::Expired);
        }
        Ok(())
    }
}

impl UrlSigner {
    /// The signature of `data` (an upload policy), hex.
    pub fn sign(&self, data: &[u8]) -> String {
        hex(&self.data_mac(data).finalize().into_bytes())
    }

    /// Whether `sig` is the signature of `data`.
    pub fn signed(&self, data: &[u8], sig: &str) -> bool {
        unhex(sig).is_some_and(|sig| self.data_mac(data).verify_slice(&sig).is_ok())
    }

    fn data_mac(&self, data: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        // A domain apart from URLs' `id\nexp`, so no URL signature is a policy's.
        mac.update(b"policy\n");
        mac.update(data);
        mac
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Reads `exp` and `sig` out of a URL's query string.
pub fn query_signature(query: &str) -> Option<(u64, String)> {
    let (mut exp, mut sig) = (None, None);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("exp", v)) => exp = v.parse().ok(),
            Some(("sig", v)) => sig = Some(v.to_string()),
            _ => {}
        }
    }
    Some((exp?, sig?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_verifies_until_it_expires_and_not_for_another_asset() {
        let s = UrlSigner::new(b"secret");
        let url = s.url("http://h", "image-1", 1000);
        assert!(url.starts_with("http://h/v1/media/image-1?exp="));
        let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let (exp, sig) = query_signature(query).expect("signed");
        assert_eq!(s.verify("image-1", exp, &sig, 1000), Ok(()));
        assert_eq!(
            s.verify("image-1", exp, &sig, exp + 1),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            s.verify("image-2", exp, &sig, 1000),
            Err(SignatureError::Bad)
        );
        assert_eq!(
            s.verify("image-1", exp + 1, &sig, 1000),
            Err(SignatureError::Bad)
        );
        assert_eq!(
            s.verify("image-1", exp, "zz", 1000),
            Err(SignatureError::Bad)
        );
        let other = UrlSigner::new(b"other");
        assert_eq!(
            other.verify("image-1", exp, &sig, 1000),
            Err(SignatureError::Bad)
        );
    }
}
