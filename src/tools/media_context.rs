//! One request's media across tool rounds: per kind, the items generated so far and the
//! uploads (`media_references`). A later call names an item by index instead of copying a
//! URL: `n >= 0` is the n-th generated item of its kind, `-k` the k-th upload (`-1` the
//! first). Each hosted result reports the `startIndex` and `indices` its outputs got.

use crate::protocol::media::{Asset, MediaKind};

#[derive(Debug, Default, Clone)]
pub struct MediaContext {
    generated: [Vec<Asset>; 3],
    uploaded: [Vec<Asset>; 3],
    /// Media a workflow binds by URL: an argument holding one of these URLs takes its asset.
    urls: Vec<(String, Asset)>,
}

fn slot(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Image => 0,
        MediaKind::Video => 1,
        MediaKind::Audio => 2,
    }
}

impl MediaContext {
    pub fn upload(&mut self, asset: Asset) {
        self.uploaded[slot(asset.kind)].push(asset);
    }

    /// Adds a call's outputs; returns each one's index (they are consecutive per kind when
    /// the outputs are of one kind, which every tool's are).
    pub fn add_generated(&mut self, assets: &[Asset]) -> Vec<i64> {
        assets
            .iter()
            .map(|a| {
                let list = &mut self.generated[slot(a.kind)];
                list.push(a.clone());
                list.len() as i64 - 1
            })
            .collect()
    }

    /// Lets an argument name `asset` by `url`.
    pub fn bind_url(&mut self, url: String, asset: Asset) {
        self.urls.push((url, asset));
    }

    /// The asset bound to `url`, if one is.
    pub fn by_url(&self, url: &str) -> Option<&Asset> {
        self.urls.iter().find(|(u, _)| u == url).map(|(_, a)| a)
    }

    /// The item `index` names, if any.
    pub fn resolve(&self, kind: MediaKind, index: i64) -> Option<&Asset> {
        if index >= 0 {
            self.generated[slot(kind)].get(usize::try_from(index).ok()?)
        } else {
            let k = usize::try_from(-(index + 1)).ok()?;
            self.uploaded[slot(kind)].get(k)
        }
    }

    /// The newest generated item of `kind`, else the first upload.
    pub fn latest(&self, kind: MediaKind) -> Option<&Asset> {
        self.generated[slot(kind)]
            .last()
            .or_else(|| self.uploaded[slot(kind)].first())
    }

    /// How many of `kind` exist, generated and uploaded, for an error's message.
    pub fn counts(&self, kind: MediaKind) -> (usize, usize) {
        (
            self.generated[slot(kind)].len(),
            self.uploaded[slot(kind)].len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(id: &str, kind: MediaKind) -> Asset {
        Asset {
            id: id.into(),
            account_id: "a".into(),
            kind,
            mime: "image/png".into(),
            size_bytes: 1,
            width: None,
            height: None,
            duration_ms: None,
        }
    }

    #[test]
    fn indexes_count_generated_from_zero_and_uploads_from_minus_one() {
        let mut m = MediaContext::default();
        m.upload(asset("u0", MediaKind::Image));
        assert_eq!(
            m.add_generated(&[asset("g0", MediaKind::Image), asset("g1", MediaKind::Image)]),
            [0, 1]
        );
        assert_eq!(m.add_generated(&[asset("v0", MediaKind::Video)]), [0]);
        assert_eq!(m.add_generated(&[asset("g2", MediaKind::Image)]), [2]);
        let id = |k, i| m.resolve(k, i).map(|a| a.id.as_str());
        assert_eq!(id(MediaKind::Image, 0), Some("g0"));
        assert_eq!(id(MediaKind::Image, 2), Some("g2"));
        assert_eq!(id(MediaKind::Image, -1), Some("u0"));
        assert_eq!(id(MediaKind::Image, -2), None);
        assert_eq!(id(MediaKind::Image, 3), None);
        assert_eq!(id(MediaKind::Video, 0), Some("v0"));
        assert_eq!(id(MediaKind::Audio, 0), None);
        assert_eq!(id(MediaKind::Image, i64::MIN), None);
    }
}
