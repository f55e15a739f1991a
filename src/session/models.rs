//! The models this node serves: what a session needs to turn messages into prompt ids
//! (the chat template and tokenizer, read from the GGUF file) and what `/v1/models` shows.
//! Sessions never touch weights; workers do.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use super::prompt::ModelText;
use crate::config::Tier;
use crate::engine::template::ChatTemplate;
use crate::engine::tokenizer::Tokenizer;
use crate::engine::vision::tower::VisionConfig;

pub struct ModelEntry {
    pub id: String,
    /// Unix seconds: when this node loaded it.
    pub created: i64,
    pub context_length: usize,
    pub template: ChatTemplate,
    pub tokenizer: Arc<Tokenizer>,
    pub tier: Tier,
    /// The vision tower's settings, when the model reads images.
    pub vision: Option<Arc<VisionConfig>>,
}

impl ModelEntry {
    pub fn new(
        id: String,
        context_length: usize,
        template: ChatTemplate,
        tokenizer: Arc<Tokenizer>,
        tier: Tier,
    ) -> Self {
        let created = crate::clock::unix_secs();
        Self {
            id,
            created,
            context_length,
            template,
            tokenizer,
            tier,
            vision: None,
        }
    }

    pub fn with_vision(mut self, vision: Option<Arc<VisionConfig>>) -> Self {
        self.vision = vision;
        self
    }

    /// What preparing a prompt needs of the model.
    pub fn text(&self) -> ModelText<'_> {
        ModelText {
            template: &self.template,
            tokenizer: &self.tokenizer,
            context_length: self.context_length,
            id: &self.id,
            vision: self.vision.as_deref(),
        }
    }
}

/// The served models by id; the first one added is the default. A cluster front adds
/// models as workers publish them, so the catalog is shared and grows while serving.
#[derive(Default)]
pub struct ModelCatalog {
    inner: RwLock<Catalog>,
}

#[derive(Default)]
struct Catalog {
    models: BTreeMap<String, Arc<ModelEntry>>,
    default: Option<String>,
}

impl ModelCatalog {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        crate::locks::read(&self.inner)
    }

    pub fn add(&self, entry: ModelEntry) {
        let mut c = crate::locks::write(&self.inner);
        c.default.get_or_insert_with(|| entry.id.clone());
        c.models.insert(entry.id.clone(), Arc::new(entry));
    }

    pub fn get(&self, id: &str) -> Option<Arc<ModelEntry>> {
        self.read().models.get(id).cloned()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.read().models.contains_key(id)
    }

    pub fn default_model(&self) -> Option<Arc<ModelEntry>> {
        let c = self.read();
        c.default
            .as_deref()
            .and_then(|id| c.models.get(id))
            .cloned()
    }

    pub fn list(&self) -> Vec<Arc<ModelEntry>> {
        self.read().models.values().cloned().collect()
    }
}

/// A model's id from its file name: the stem without a quantization suffix
/// (`SmolLM2-135M-Instruct.Q4_1.gguf` is `SmolLM2-135M-Instruct`).
pub fn model_id(path: &Path) -> String {
    let stem = path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    match stem.rsplit_once('.') {
        Some((base, quant)) if !base.is_empty() && is_quant_name(quant) => base.to_string(),
        _ => stem,
    }
}

fn is_quant_name(s: &str) -> bool {
    let s = s.to_ascii_uppercase();
    ["Q", "IQ", "F16", "F32", "BF16"]
        .iter()
        .any(|p| s.starts_with(p))
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_drop_the_quant_suffix_only() {
        assert_eq!(
            model_id(Path::new("models/SmolLM2-135M-Instruct.Q4_1.gguf")),
            "SmolLM2-135M-Instruct"
        );
        assert_eq!(
            model_id(Path::new("/x/llama-3.2-1b.IQ4_XS.gguf")),
            "llama-3.2-1b"
        );
        assert_eq!(model_id(Path::new("qwen2.5-0.5b.gguf")), "qwen2.5-0.5b");
        assert_eq!(model_id(Path::new("tiny.f16.gguf")), "tiny");
    }
}
