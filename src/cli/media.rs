//! The media flags `supernet serve` and `supernet worker --kind media` share: the backends
//! to run media jobs on, the workflow graphs, and how many jobs run at once.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::media::backend::{parse_backend, MediaBackend};
use crate::media::graphs::Graphs;

#[derive(Args, Debug, Default)]
pub struct MediaArgs {
    /// A media backend, KIND=URL: `comfyui=http://HOST:PORT` (a ComfyUI server) or
    /// `openai-images=URL` (an OpenAI-style images API). Repeat for several. With one, the
    /// hosted image, video and music tools its pipelines run are offered to the model.
    #[arg(long = "media-backend", alias = "backend", value_name = "KIND=URL")]
    pub media_backends: Vec<String>,
    /// A folder of ComfyUI workflow graphs, one `<pipeline>.json` each, replacing the
    /// built-in ones (see media/graphs/ for the format).
    #[arg(long, value_name = "DIR")]
    pub graphs: Option<PathBuf>,
    /// Media jobs run at once.
    #[arg(long, default_value_t = 4)]
    pub media_concurrency: usize,
}

impl MediaArgs {
    pub fn backends(&self) -> anyhow::Result<Vec<Arc<dyn MediaBackend>>> {
        if self.media_backends.is_empty() {
            return Ok(Vec::new());
        }
        anyhow::ensure!(
            self.media_concurrency >= 1,
            "--media-concurrency must be at least 1"
        );
        let graphs = Arc::new(match &self.graphs {
            Some(dir) => Graphs::from_dir(dir)?,
            None => Graphs::defaults()?,
        });
        self.media_backends
            .iter()
            .map(|spec| parse_backend(spec, &graphs))
            .collect()
    }
}
