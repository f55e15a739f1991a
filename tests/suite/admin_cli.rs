//! `supernet admin` against a real data dir: the exact output shapes later checks script
//! against, and state that survives from one process to the next.

use std::process::Command;

use serde_json::Value;

fn admin(dir: &std::path::Path, args: &[&str]) -> Result<Value, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_supernet"))
        .arg("admin")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("running supernet admin");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("not one JSON object: {e}"))
}

#[test]
fn accounts_keys_and_credits_round_trip() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let d = dir.path();
    let created = admin(
        d,
        &[
            "accounts", "create", "--name", "demo", "--spark", "100", "--sogni", "0.5",
        ],
    )
    .expect("create");
    let id = created["account_id"]
        .as_str()
        .expect("account_id")
        .to_string();
    assert!(id.starts_with("acct_"));

    let key = admin(d, &["keys", "create", "--account", &id]).expect("key");
    let (key_id, secret) = (
        key["key_id"].as_str().expect("key_id"),
        key["api_key"].as_str().expect("api_key"),
    );
    assert!(secret.starts_with("sn-"));

    admin(
        d,
        &["accounts", "credit", "--account", &id, "--spark", "0.25"],
    )
    .expect("credit");
    let shown = admin(d, &["accounts", "show", "--account", &id]).expect("show");
    assert_eq!(shown["account_id"], id.as_str());
    assert_eq!(
        shown["balances"],
        serde_json::json!({"spark": "100.25", "sogni": "0.5"})
    );
    let ledger = shown["ledger"].as_array().expect("a ledger");
    assert_eq!(ledger.len(), 3);
    assert!(ledger
        .iter()
        .all(|e| e["amount"].is_string() && e["kind"] == "credit"));

    let again = admin(d, &["keys", "regenerate", "--key-id", key_id]).expect("regenerate");
    assert_eq!(again["key_id"], key_id);
    assert_ne!(again["api_key"], secret);
    assert_eq!(
        admin(d, &["keys", "disable", "--key-id", key_id]).expect("disable")["disabled"],
        true
    );

    // The secret is never stored in clear.
    let file = std::fs::read(d.join("supernet.redb")).expect("the store file");
    let needle = again["api_key"].as_str().expect("secret").as_bytes();
    assert!(!file.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn bad_requests_fail_clearly_and_change_nothing() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let d = dir.path();
    assert!(admin(d, &["accounts", "show", "--account", "acct_nope"])
        .expect_err("unknown account")
        .contains("no account"));
    assert!(admin(
        d,
        &["accounts", "create", "--name", "x", "--spark", "1.5.0"]
    )
    .expect_err("bad amount")
    .contains("not a decimal"));
    assert!(admin(d, &["keys", "disable", "--key-id", "key_nope"])
        .expect_err("unknown key")
        .contains("no API key"));
    let id = admin(d, &["accounts", "create", "--name", "y"]).expect("create")["account_id"]
        .as_str()
        .expect("id")
        .to_string();
    assert!(admin(d, &["accounts", "credit", "--account", &id])
        .expect_err("nothing to credit")
        .contains("--spark"));
    let shown = admin(d, &["accounts", "show", "--account", &id]).expect("show");
    assert_eq!(
        shown["balances"],
        serde_json::json!({"spark": "0", "sogni": "0"})
    );
    assert_eq!(shown["ledger"].as_array().map(Vec::len), Some(0));
}
