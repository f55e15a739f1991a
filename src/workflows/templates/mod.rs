//! Saved workflow templates (`/v1/creative-agent/workflows/templates`): a parameterized
//! recipe with typed inputs and stages, invoked by id to start a workflow. [`template`]
//! checks what a client writes, [`instantiate`] turns a template and its inputs into a
//! plan, [`store`] keeps them. A template is its owner's; a public one every account may
//! read, invoke and fork, and only its owner may change or delete it.

pub mod instantiate;
pub mod store;
pub mod template;

use serde_json::{json, Value};

use store::Stored;

/// The template as the routes show it.
pub fn view(t: &Stored) -> Value {
    let mut v = t.body.clone();
    v["id"] = json!(t.id);
    v
}

/// The next patch version: `1.2.3` → `1.2.4` (anything unreadable starts again at `0.0.1`).
pub fn bump(version: &str) -> String {
    let parts: Vec<u64> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    match parts[..] {
        [a, b, c] => format!("{a}.{b}.{}", c + 1),
        _ => "0.0.1".into(),
    }
}

/// A new id from a template's name: its words, lowercased and joined by `-`, and a random
/// tail so two accounts' "Portrait pack" do not collide.
pub fn mint_id(name: &str) -> anyhow::Result<String> {
    let slug: String = name
        .to_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("-")
        .chars()
        .take(40)
        .collect();
    let slug = if slug.is_empty() {
        "template".into()
    } else {
        slug
    };
    Ok(format!(
        "{}-{}",
        slug.trim_end_matches('-'),
        crate::ids::random_hex(3)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_bump_and_ids_come_from_names() {
        assert_eq!(bump("0.0.1"), "0.0.2");
        assert_eq!(bump("1.9.9"), "1.9.10");
        assert_eq!(bump("x"), "0.0.1");
        let id = mint_id("Portrait pack: 9:16!").expect("id");
        assert!(
            id.starts_with("portrait-pack-9-16-") && id.len() == "portrait-pack-9-16-".len() + 6,
            "{id}"
        );
        assert!(mint_id("***").expect("id").starts_with("template-"));
    }
}
