//! An mmproj GGUF file: the vision encoder's hyperparameters (`clip.*` keys, read as
//! llama.cpp's `clip.cpp` reads them) and its weights.

use std::path::Path;

use crate::engine::gguf::GgufFile;
use crate::engine::model::weights::{Loader, Weight};
use crate::engine::EngineError;

/// The projector families we run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projector {
    /// `qwen3vl_merger`: Qwen3-VL and Qwen3.5/3.6's vision tower. Dynamic resolution, a
    /// 2x2 patch merger, 2-D vision RoPE and M-RoPE positions in the language model.
    Qwen3Vl,
    /// `idefics3`: SmolVLM. Fixed-size tiles plus an overview, pixel shuffle.
    Idefics3,
}

impl Projector {
    pub fn name(self) -> &'static str {
        match self {
            Self::Qwen3Vl => "qwen3vl_merger",
            Self::Idefics3 => "idefics3",
        }
    }
}

#[derive(Debug, Clone)]
pub struct VisionConfig {
    pub projector: Projector,
    /// Side of the square the position embeddings were trained at (a tile for idefics3).
    pub image_size: usize,
    pub patch_size: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_ff: usize,
    pub n_layer: usize,
    pub eps: f32,
    /// Width of the language model's embeddings, which the projector outputs.
    pub projection_dim: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Patches merged per side: Qwen's spatial merge, idefics3's pixel-shuffle factor.
    pub merge: usize,
    /// idefics3: the longest edge images are resized to before tiling.
    pub longest_edge: usize,
    /// Qwen: the pixel budget of a resized image (llama.cpp's 8 to 4096 tokens).
    pub min_pixels: usize,
    pub max_pixels: usize,
}

impl VisionConfig {
    /// Reads the `clip.*` keys (a file without tensors is enough: a front sizes images
    /// from them).
    pub fn from_gguf(f: &GgufFile) -> Result<Self, EngineError> {
        let bad = |what: String| EngineError::BadModel(format!("{}: {what}", f.path().display()));
        if f.str_opt("general.architecture")? != Some("clip") {
            return Err(bad(
                "not an mmproj file (general.architecture is not `clip`)".into(),
            ));
        }
        if f.bool_opt("clip.has_vision_encoder")? != Some(true) {
            return Err(bad("the mmproj has no vision encoder".into()));
        }
        let proj = match f.str_opt("clip.vision.projector_type")? {
            Some(p) => p,
            None => f.str("clip.projector_type")?,
        };
        let projector = match proj {
            "qwen3vl_merger" => Projector::Qwen3Vl,
            "idefics3" => Projector::Idefics3,
            other => {
                return Err(bad(format!(
                "projector type `{other}` is not supported (supported: qwen3vl_merger, idefics3)"
            )))
            }
        };
        if f.bool_opt("clip.use_gelu")? != Some(true) {
            return Err(bad("only GELU vision encoders are supported".into()));
        }
        if let Some(layers) = f.array_opt("clip.vision.is_deepstack_layers")? {
            if layers.iter().any(|v| v.as_bool() == Some(true)) {
                return Err(bad("deepstack vision layers are not supported".into()));
            }
        }
        let u = |k: &str| -> Result<usize, EngineError> { Ok(f.u64(k)? as usize) };
        let u_or = |k: &str, d: usize| -> Result<usize, EngineError> {
            Ok(f.u64_opt(k)?.map_or(d, |v| v as usize))
        };
        let triple = |k: &str| -> Result<[f32; 3], EngineError> {
            let a = f.array(k)?;
            let v: Vec<f32> = a.iter().filter_map(|v| v.as_f32()).collect();
            match v[..] {
                [a, b, c, ..] => Ok([a, b, c]),
                _ => Err(bad(format!("`{k}` needs 3 numbers"))),
            }
        };
        let patch_size = u("clip.vision.patch_size")?;
        let merge = match projector {
            Projector::Qwen3Vl => u_or("clip.vision.spatial_merge_size", 2)?,
            Projector::Idefics3 => u_or("clip.vision.projector.scale_factor", 1)?,
        };
        if patch_size == 0 || merge < 2 {
            return Err(bad("patch size and merge factor must be positive".into()));
        }
        let patch_area = patch_size * patch_size * merge * merge;
        let c = Self {
            projector,
            image_size: u("clip.vision.image_size")?,
            patch_size,
            n_embd: u("clip.vision.embedding_length")?,
            n_head: u("clip.vision.attention.head_count")?,
            n_ff: u("clip.vision.feed_forward_length")?,
            n_layer: u("clip.vision.block_count")?,
            eps: f.f32("clip.vision.attention.layer_norm_epsilon")?,
            projection_dim: u("clip.vision.projection_dim")?,
            mean: triple("clip.vision.image_mean")?,
            std: triple("clip.vision.image_std")?,
            merge,
            longest_edge: u_or("clip.vision.preproc_image_size", 0)?,
            min_pixels: 8 * patch_area,
            max_pixels: 4096 * patch_area,
        };
        if c.n_head == 0
            || !c.n_embd.is_multiple_of(c.n_head)
            || !c.image_size.is_multiple_of(c.patch_size)
        {
            return Err(bad("inconsistent vision shapes".into()));
        }
        if c.projector == Projector::Idefics3 && c.longest_edge < c.image_size {
            return Err(bad("idefics3 needs clip.vision.preproc_image_size".into()));
        }
        Ok(c)
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// The grid of rows an encoder input of `width` x `height` pixels becomes.
    pub fn grid(&self, width: usize, height: usize) -> (usize, usize) {
        (
            (width / self.patch_size).div_ceil(self.merge),
            (height / self.patch_size).div_ceil(self.merge),
        )
    }

    /// Whether image rows take 2-D M-RoPE positions in the language model (Qwen-VL style).
    pub fn mrope(&self) -> bool {
        self.projector == Projector::Qwen3Vl
    }
}

/// The attention projections: one fused matrix (Qwen) or three.
pub enum Qkv {
    Fused(Weight, Vec<f32>),
    Split([(Weight, Vec<f32>); 3]),
}

pub struct Block {
    pub ln1: (Vec<f32>, Vec<f32>),
    pub qkv: Qkv,
    pub out: (Weight, Vec<f32>),
    pub ln2: (Vec<f32>, Vec<f32>),
    pub up: (Weight, Vec<f32>),
    pub down: (Weight, Vec<f32>),
}

pub enum Projection {
    /// `mm.0` (GELU) then `mm.2`, over each merged 2x2 block.
    Merger {
        fc1: (Weight, Vec<f32>),
        fc2: (Weight, Vec<f32>),
    },
    /// `mm.model.fc`, no bias, after the pixel shuffle.
    Shuffle { fc: Weight },
}

pub struct VisionWeights {
    /// Patch-embedding kernels (rounded to F16), `n_embd` rows of `3 * patch * patch`
    /// (channel, row, column); Qwen's temporal pair has two, which sum.
    pub patch: Vec<Vec<f32>>,
    pub patch_bias: Vec<f32>,
    /// `(image_size / patch)^2` rows of `n_embd`, row-major over the trained grid.
    pub pos: Vec<f32>,
    pub blocks: Vec<Block>,
    pub post_ln: (Vec<f32>, Vec<f32>),
    pub projection: Projection,
}

/// A loaded vision tower.
pub struct VisionTower {
    pub config: VisionConfig,
    pub weights: VisionWeights,
    pub file: GgufFile,
}

impl VisionTower {
    pub fn load(path: impl AsRef<Path>) -> Result<Self, EngineError> {
        let file = GgufFile::open(path)?;
        let config = VisionConfig::from_gguf(&file)?;
        let weights = load_weights(&file, &config)?;
        Ok(Self {
            config,
            weights,
            file,
        })
    }

    /// Every matrix the encoder multiplies by.
    pub fn matrices(&self) -> Vec<&Weight> {
        let mut all = Vec::new();
        for b in &self.weights.blocks {
            match &b.qkv {
                Qkv::Fused(w, _) => all.push(w),
                Qkv::Split(ws) => all.extend(ws.iter().map(|(w, _)| w)),
            }
            all.extend([&b.out.0, &b.up.0, &b.down.0]);
        }
        match &self.weights.projection {
            Projection::Merger { fc1, fc2 } => all.extend([&fc1.0, &fc2.0]),
            Projection::Shuffle { fc } => all.push(fc),
        }
        all
    }
}

fn load_weights(f: &GgufFile, c: &VisionConfig) -> Result<VisionWeights, EngineError> {
    let l = Loader::new(f);
    let e = c.n_embd;
    let linear =
        |name: &str, cols: usize, rows: usize| -> Result<(Weight, Vec<f32>), EngineError> {
            Ok((
                l.matrix(&format!("{name}.weight"), cols, rows)?,
                l.vector(&format!("{name}.bias"), rows)?,
            ))
        };
    let norm = |name: &str| -> Result<(Vec<f32>, Vec<f32>), EngineError> {
        Ok((
            l.vector(&format!("{name}.weight"), e)?,
            l.vector(&format!("{name}.bias"), e)?,
        ))
    };
    // ggml's convolution multiplies in F16 (`ggml_conv_2d` makes F16 columns, so the
    // kernel is converted too).
    let kernel = |name: &str| -> Result<Vec<f32>, EngineError> {
        let mut k = l.flat(name, 3 * c.patch_size * c.patch_size * e)?;
        k.iter_mut()
            .for_each(|v| *v = half::f16::from_f32(*v).to_f32());
        Ok(k)
    };
    let mut patch = vec![kernel("v.patch_embd.weight")?];
    if c.projector == Projector::Qwen3Vl {
        patch.push(kernel("v.patch_embd.weight.1")?);
    }
    let grid = c.image_size / c.patch_size;
    let blocks = (0..c.n_layer)
        .map(|i| {
            let p = |s: &str| format!("v.blk.{i}.{s}");
            let qkv = if f.has_tensor(&p("attn_qkv.weight")) {
                let (w, b) = linear(&p("attn_qkv"), e, 3 * e)?;
                Qkv::Fused(w, b)
            } else {
                Qkv::Split([
                    linear(&p("attn_q"), e, e)?,
                    linear(&p("attn_k"), e, e)?,
                    linear(&p("attn_v"), e, e)?,
                ])
            };
            Ok(Block {
                ln1: norm(&p("ln1"))?,
                qkv,
                out: linear(&p("attn_out"), e, e)?,
                ln2: norm(&p("ln2"))?,
                up: linear(&p("ffn_up"), e, c.n_ff)?,
                down: linear(&p("ffn_down"), c.n_ff, e)?,
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let merged = e * c.merge * c.merge;
    let projection = match c.projector {
        Projector::Qwen3Vl => Projection::Merger {
            fc1: linear("mm.0", merged, merged)?,
            fc2: linear("mm.2", merged, c.projection_dim)?,
        },
        Projector::Idefics3 => Projection::Shuffle {
            fc: l.matrix("mm.model.fc.weight", merged, c.projection_dim)?,
        },
    };
    Ok(VisionWeights {
        patch,
        patch_bias: l.vector("v.patch_embd.bias", e)?,
        pos: l.flat("v.position_embd.weight", grid * grid * e)?,
        blocks,
        post_ln: norm("v.post_ln")?,
        projection,
    })
}
