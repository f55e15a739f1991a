#!/usr/bin/env python3
"""Tiny random-weight vision models and test images, for checking our vision path
against llama.cpp's libmtmd (see README.md in this folder).

    PYTHONPATH=$LLAMA/gguf-py python3 make.py --seed 1 --out .

writes, all drawn from numpy.random.default_rng(seed) in a fixed order:

- images/{square,wide,tall,large}.png: 96x96, 256x96, 80x224 and 1280x720 RGB pictures
  (smooth gradients, discs and noise, so resizing filters and patches all matter);
- tiny-mmproj-qwen3vl.gguf: a `qwen3vl_merger` vision tower (the projector type llama.cpp's
  converter writes for Qwen3-VL and Qwen3.5/3.6), for the language model
  ../shared/reference/tiny-models/tiny-qwen35moe-q8_0.gguf (n_embd 256);
- tiny-mmproj-idefics3.gguf: an `idefics3` (SmolVLM) vision tower with pixel shuffle;
- tiny-smolvlm-q8_0.gguf: its language model, a 2-layer llama (the tiny-llama shapes) whose
  vocabulary is tiny-llama's plus the tokens SmolVLM's image layout needs.

Shapes (both towers): ViT width 64, 4 heads of 16, 2 pre-norm blocks (LayerNorm, attention,
GELU MLP of 128), patch 16, image mean and std 0.5. Matrices are Q8_0 (llama.cpp's arithmetic
for Q8_0 is the one our engine reproduces bit for bit); the patch embedding, position
embeddings, norms and biases are F32, as llama.cpp's converter keeps them.

- qwen3vl: fused `attn_qkv`, two patch-embedding kernels (the temporal pair of Qwen's Conv3D),
  learned 8x8 position grid (interpolated bilinearly to the image's grid), 2-D vision RoPE,
  `post_ln`, then the merger `mm.0` (256 -> 256, GELU) and `mm.2` (256 -> 256) over each 2x2
  block of patches. Images are resized (bicubic) to multiples of 32, 8 to 4096 tokens.
- idefics3: separate q/k/v, 4x4 position grid (64-px tiles), `post_ln`, pixel shuffle by 2 and
  `mm.model.fc` (256 -> 256, no bias). Images are resized (Lanczos) to a longest edge of 128,
  cut into 64-px tiles plus a 64-px overview: 4 tokens per tile.
"""

import argparse
import os
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("gguf not found: run with PYTHONPATH=<llama.cpp>/gguf-py")
from gguf.quants import quantize

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "../../../../shared/reference/tiny-models")

VIT = dict(width=64, heads=4, ff=128, blocks=2, patch=16, eps=1e-6)
N_EMBD_TEXT = 256
Q8 = gguf.GGMLQuantizationType.Q8_0
F32 = gguf.GGMLQuantizationType.F32


def images(rng, out):
    from PIL import Image

    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    for name, (w, h) in [
        ("square", (96, 96)),
        ("wide", (256, 96)),
        ("tall", (80, 224)),
        ("large", (1280, 720)),
    ]:
        y, x = np.mgrid[0:h, 0:w].astype(np.float64)
        img = np.zeros((h, w, 3))
        for c in range(3):
            a, b, p = rng.uniform(-1, 1, 3)
            img[..., c] = 128 + 90 * np.sin(a * x / w * 6 + b * y / h * 6 + p * 3)
        for _ in range(6):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * min(w, h)
            color = rng.uniform(0, 255, 3)
            img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = color
        # noise in 4x4 cells: every filter sees texture, and the PNGs stay small
        noise = rng.normal(0, 12, ((h + 3) // 4, (w + 3) // 4, 3))
        img += noise.repeat(4, 0).repeat(4, 1)[:h, :w]
        pixels = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(os.path.join(out, "images", name + ".png"))


class Writer:
    """A GGUF writer that draws each tensor in call order and stores it as asked."""

    def __init__(self, rng, path, arch):
        self.rng = rng
        self.w = gguf.GGUFWriter(path, arch)

    def normal(self, name, shape, std, mean=0.0, qtype=F32):
        self.put(name, self.rng.normal(mean, std, shape).astype(np.float32), qtype)

    def uniform(self, name, shape, lo, hi):
        self.put(name, self.rng.uniform(lo, hi, shape).astype(np.float32), F32)

    def put(self, name, data, qtype):
        if qtype == F32:
            self.w.add_tensor(name, data)
        else:
            self.w.add_tensor(name, quantize(data, qtype), raw_dtype=qtype)

    def close(self):
        self.w.write_header_to_file()
        self.w.write_kv_data_to_file()
        self.w.write_tensors_to_file()
        self.w.close()


def vision_header(w, projector, image_size):
    g = w.w
    g.add_type(gguf.GGUFType.MMPROJ)
    g.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    g.add_clip_projector_type(projector)
    g.add_clip_has_vision_encoder(True)
    g.add_vision_projection_dim(N_EMBD_TEXT)
    g.add_vision_image_size(image_size)
    g.add_vision_patch_size(VIT["patch"])
    g.add_vision_embedding_length(VIT["width"])
    g.add_vision_feed_forward_length(VIT["ff"])
    g.add_vision_block_count(VIT["blocks"])
    g.add_vision_head_count(VIT["heads"])
    g.add_vision_attention_layernorm_eps(VIT["eps"])
    g.add_vision_image_mean([0.5, 0.5, 0.5])
    g.add_vision_image_std([0.5, 0.5, 0.5])
    g.add_vision_use_gelu(True)


def vit_blocks(w, fused_qkv):
    e, ff = VIT["width"], VIT["ff"]
    for i in range(VIT["blocks"]):
        p = f"v.blk.{i}."
        w.uniform(p + "ln1.weight", (e,), 0.6, 1.4)
        w.normal(p + "ln1.bias", (e,), 0.1)
        if fused_qkv:
            w.normal(p + "attn_qkv.weight", (3 * e, e), 1 / np.sqrt(e), qtype=Q8)
            w.normal(p + "attn_qkv.bias", (3 * e,), 0.1)
        else:
            for m in ("q", "k", "v"):
                w.normal(p + f"attn_{m}.weight", (e, e), 1 / np.sqrt(e), qtype=Q8)
                w.normal(p + f"attn_{m}.bias", (e,), 0.1)
        w.normal(p + "attn_out.weight", (e, e), 1 / np.sqrt(e), qtype=Q8)
        w.normal(p + "attn_out.bias", (e,), 0.1)
        w.uniform(p + "ln2.weight", (e,), 0.6, 1.4)
        w.normal(p + "ln2.bias", (e,), 0.1)
        w.normal(p + "ffn_up.weight", (ff, e), 1 / np.sqrt(e), qtype=Q8)
        w.normal(p + "ffn_up.bias", (ff,), 0.1)
        w.normal(p + "ffn_down.weight", (e, ff), 1 / np.sqrt(ff), qtype=Q8)
        w.normal(p + "ffn_down.bias", (e,), 0.1)
    w.uniform("v.post_ln.weight", (e,), 0.6, 1.4)
    w.normal("v.post_ln.bias", (e,), 0.1)


def qwen3vl(rng, out):
    e, patch, grid = VIT["width"], VIT["patch"], 8
    w = Writer(rng, os.path.join(out, "tiny-mmproj-qwen3vl.gguf"), "clip")
    vision_header(w, gguf.VisionProjectorType.QWEN3VL, grid * patch)
    w.w.add_vision_spatial_merge_size(2)
    fan_in = 3 * patch * patch * 2
    w.normal("v.patch_embd.weight", (e, 3, patch, patch), 1 / np.sqrt(fan_in))
    w.normal("v.patch_embd.weight.1", (e, 3, patch, patch), 1 / np.sqrt(fan_in))
    w.normal("v.patch_embd.bias", (e,), 0.1)
    w.normal("v.position_embd.weight", (grid * grid, e), 0.5)
    vit_blocks(w, fused_qkv=True)
    w.normal("mm.0.weight", (4 * e, 4 * e), 1 / np.sqrt(4 * e), qtype=Q8)
    w.normal("mm.0.bias", (4 * e,), 0.1)
    w.normal("mm.2.weight", (N_EMBD_TEXT, 4 * e), 1 / np.sqrt(4 * e), qtype=Q8)
    w.normal("mm.2.bias", (N_EMBD_TEXT,), 0.1)
    w.close()


def idefics3(rng, out):
    e, patch, grid = VIT["width"], VIT["patch"], 4
    w = Writer(rng, os.path.join(out, "tiny-mmproj-idefics3.gguf"), "clip")
    vision_header(w, gguf.VisionProjectorType.IDEFICS3, grid * patch)
    w.w.add_vision_projector_scale_factor(2)
    w.w.add_vision_preproc_image_size(2 * grid * patch)
    w.normal("v.patch_embd.weight", (e, 3, patch, patch), 1 / np.sqrt(3 * patch * patch))
    w.normal("v.patch_embd.bias", (e,), 0.1)
    w.normal("v.position_embd.weight", (grid * grid, e), 0.5)
    vit_blocks(w, fused_qkv=False)
    w.normal("mm.model.fc.weight", (N_EMBD_TEXT, 4 * e), 1 / np.sqrt(4 * e), qtype=Q8)
    w.close()


# Tokens SmolVLM's image layout looks up (llama.cpp's mtmd `lookup_token`), appended to the
# tiny vocabulary. "\n\n" has no merge in the cut vocabulary, so it is a plain token that
# text never produces, which is all the lookup needs.
VISION_TOKENS = ["ĊĊ", "<fake_token_around_image>", "<global-img>", "<image>"] + [
    f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)
]


def smolvlm_lm(rng, out):
    src = gguf.GGUFReader(os.path.join(TINY, "tiny-llama-q8_0.gguf"))

    def field(name):
        f = src.fields[name]
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            if f.types[-1] == gguf.GGUFValueType.STRING:
                return [bytes(f.parts[i]).decode() for i in f.data]
            return [int(f.parts[i][0]) for i in f.data]
        if f.types[0] == gguf.GGUFValueType.STRING:
            return bytes(f.parts[f.data[0]]).decode()
        return f.parts[f.data[0]][0].item()

    tokens = field("tokenizer.ggml.tokens") + VISION_TOKENS
    types = field("tokenizer.ggml.token_type") + [1] + [3] * (len(VISION_TOKENS) - 1)
    vocab, e, ff, heads, kv_heads, blocks = len(tokens), 256, 512, 4, 2, 2
    w = Writer(rng, os.path.join(out, "tiny-smolvlm-q8_0.gguf"), "llama")
    g = w.w
    g.add_name("tiny-smolvlm")
    g.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    g.add_context_length(4096)
    g.add_embedding_length(e)
    g.add_block_count(blocks)
    g.add_head_count(heads)
    g.add_head_count_kv(kv_heads)
    g.add_rope_freq_base(1e5)
    g.add_layer_norm_rms_eps(1e-5)
    g.add_feed_forward_length(ff)
    g.add_vocab_size(vocab)
    g.add_rope_dimension_count(e // heads)
    g.add_tokenizer_model("gpt2")
    g.add_tokenizer_pre(field("tokenizer.ggml.pre"))
    g.add_token_list(tokens)
    g.add_token_types(types)
    g.add_token_merges(field("tokenizer.ggml.merges"))
    g.add_bos_token_id(field("tokenizer.ggml.bos_token_id"))
    g.add_eos_token_id(field("tokenizer.ggml.eos_token_id"))
    g.add_unk_token_id(field("tokenizer.ggml.unknown_token_id"))
    g.add_pad_token_id(field("tokenizer.ggml.padding_token_id"))
    g.add_add_bos_token(False)
    g.add_add_space_prefix(False)
    g.add_chat_template(field("tokenizer.chat_template"))
    w.normal("token_embd.weight", (vocab, e), 0.02, qtype=Q8)
    hd = e // heads
    for i in range(blocks):
        p = f"blk.{i}."
        w.uniform(p + "attn_norm.weight", (e,), 0.6, 1.4)
        w.normal(p + "attn_q.weight", (e, e), 1 / 16, qtype=Q8)
        w.normal(p + "attn_k.weight", (kv_heads * hd, e), 1 / 16, qtype=Q8)
        w.normal(p + "attn_v.weight", (kv_heads * hd, e), 1 / 16, qtype=Q8)
        w.normal(p + "attn_output.weight", (e, e), 1 / 16, qtype=Q8)
        w.uniform(p + "ffn_norm.weight", (e,), 0.6, 1.4)
        w.normal(p + "ffn_gate.weight", (ff, e), 1 / 16, qtype=Q8)
        w.normal(p + "ffn_up.weight", (ff, e), 1 / 16, qtype=Q8)
        w.normal(p + "ffn_down.weight", (e, ff), 1 / np.sqrt(ff), qtype=Q8)
    w.normal("output_norm.weight", (e,), 2.0, mean=20.0)
    head = rng.normal(0, 0.05, (vocab, e)).astype(np.float32)
    head[:17] *= 0.1  # special tokens (EOS among them) practically never win
    head[1024:] *= 0.1
    w.put("output.weight", head, Q8)
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, required=True, help="numpy default_rng seed (the references use 1)")
    ap.add_argument("--out", default=HERE, help="output folder (default: this folder)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    images(rng, args.out)
    qwen3vl(rng, args.out)
    idefics3(rng, args.out)
    smolvlm_lm(rng, args.out)


if __name__ == "__main__":
    main()
