//! S3's own presigned POST (a browser-style form upload authorized by a signed policy,
//! AWS Signature Version 4): the policy fixes the object key, its content type and a size
//! range, and expires; S3 refuses a form that breaks it. Made with the store's static
//! credentials (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`); without them the front
//! takes uploads itself.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

/// What signing a policy needs.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub token: Option<String>,
    pub region: String,
    /// A custom endpoint (MinIO, another S3): path-style URLs under it.
    pub endpoint: Option<String>,
    pub bucket: String,
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// The form's URL and fields (before `file`) for an upload of `key` (the full object key)
/// of `content_type`, up to `max_bytes`, good for `expires_secs` from `now`.
pub fn form(
    c: &Credentials,
    key: &str,
    content_type: &str,
    max_bytes: u64,
    expires_secs: u64,
    now: chrono::DateTime<chrono::Utc>,
) -> (String, Vec<(String, String)>) {
    let date = now.format("%Y%m%d").to_string();
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let credential = format!("{}/{date}/{}/s3/aws4_request", c.access_key, c.region);
    let expiration = (now + chrono::TimeDelta::seconds(expires_secs as i64))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let mut fields = vec![
        ("key".to_string(), key.to_string()),
        ("Content-Type".to_string(), content_type.to_string()),
        (
            "x-amz-algorithm".to_string(),
            "AWS4-HMAC-SHA256".to_string(),
        ),
        ("x-amz-credential".to_string(), credential),
        ("x-amz-date".to_string(), amz_date),
    ];
    if let Some(t) = &c.token {
        fields.push(("x-amz-security-token".to_string(), t.clone()));
    }
    let mut conditions = vec![
        json!({"bucket": c.bucket}),
        json!(["content-length-range", 1, max_bytes]),
    ];
    conditions.extend(fields.iter().map(|(k, v)| json!({ k: v })));
    let policy = json!({"expiration": expiration, "conditions": conditions}).to_string();
    let policy = base64::engine::general_purpose::STANDARD.encode(policy);
    let signing = [c.region.as_bytes(), b"s3", b"aws4_request"].iter().fold(
        mac(format!("AWS4{}", c.secret_key).as_bytes(), date.as_bytes()),
        |k, part| mac(&k, part),
    );
    let signature: String = mac(&signing, policy.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    fields.push(("policy".to_string(), policy));
    fields.push(("x-amz-signature".to_string(), signature));
    let url = match &c.endpoint {
        Some(e) => format!("{}/{}", e.trim_end_matches('/'), c.bucket),
        None => format!("https://{}.s3.{}.amazonaws.com", c.bucket, c.region),
    };
    (url, fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published example of a POST policy signature (the S3 docs' "Example: Browser-
    /// based upload using HTTP POST", SigV4): the signing key chain over a known policy.
    #[test]
    fn the_signature_chain_matches_aws_example_keys() {
        let key = [b"us-east-1".as_slice(), b"s3", b"aws4_request"]
            .iter()
            .fold(
                mac(b"AWS4wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", b"20151229"),
                |k, p| mac(&k, p),
            );
        let policy = "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3QiOiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRhLXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVTMjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNyZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAiMjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9";
        let sig: String = mac(&key, policy.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            sig,
            "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e"
        );
    }

    #[test]
    fn the_form_names_the_key_type_and_credential() {
        let c = Credentials {
            access_key: "AK".into(),
            secret_key: "SK".into(),
            token: None,
            region: "us-east-1".into(),
            endpoint: Some("http://127.0.0.1:9000/".into()),
            bucket: "media".into(),
        };
        let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let (url, fields) = form(&c, "p/assets/x/data", "image/png", 10, 60, now);
        assert_eq!(url, "http://127.0.0.1:9000/media");
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("key"), Some("p/assets/x/data"));
        assert_eq!(
            get("x-amz-credential"),
            Some("AK/20231114/us-east-1/s3/aws4_request")
        );
        let policy = base64::engine::general_purpose::STANDARD
            .decode(get("policy").expect("policy"))
            .expect("b64");
        let policy: serde_json::Value = serde_json::from_slice(&policy).expect("json");
        assert_eq!(policy["expiration"], "2023-11-14T22:14:20.000Z");
        assert!(policy["conditions"]
            .as_array()
            .expect("list")
            .contains(&json!(["content-length-range", 1, 10])));
    }
}
