//! Finding and loading a model's vision tower (its mmproj file) for `serve` and `worker`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::engine::tokenizer::Tokenizer;
use crate::engine::vision::tower::VisionTower;
use crate::engine::Model;

/// The mmproj file for the model at `model`: `explicit` if given, else one named as
/// llama.cpp's downloads name them beside the model (`mmproj-<model file stem>.gguf`, or a
/// single `mmproj-*.gguf` whose name holds the model's id).
pub fn find(model: &Path, id: &str, explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let dir = model.parent()?;
    let stem = model.file_stem()?.to_string_lossy().into_owned();
    let exact = dir.join(format!("mmproj-{stem}.gguf"));
    if exact.is_file() {
        return Some(exact);
    }
    let id = id.to_ascii_lowercase();
    let matching: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            name.starts_with("mmproj") && name.ends_with(".gguf") && name.contains(&id)
        })
        .collect();
    match &matching[..] {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// Loads the tower at `path` and checks that it fits the model: its output width is the
/// model's embedding width, and the vocabulary has the tokens its image layout uses.
pub fn load(path: &Path, model: &Model, tok: &Tokenizer) -> anyhow::Result<Arc<VisionTower>> {
    let tower = VisionTower::load(path)
        .with_context(|| format!("loading the vision tower {}", path.display()))?;
    anyhow::ensure!(
        tower.config.projection_dim == model.config.n_embd,
        "{}: the vision tower outputs {} wide embeddings, the model's are {}",
        path.display(),
        tower.config.projection_dim,
        model.config.n_embd
    );
    tower.check_vocabulary(tok)?;
    tracing::info!(mmproj = %path.display(), projector = tower.config.projector.name(), "vision tower loaded");
    Ok(Arc::new(tower))
}
