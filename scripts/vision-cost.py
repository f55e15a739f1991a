#!/usr/bin/env python3
"""What one image costs the Qwen3.5/3.6 vision tower (`qwen3vl_merger`), from its shapes.

Shapes of the Qwen3.5 vision config (Qwen3.5-35B-A3B's `vision_config`, as transformers and
llama.cpp's converter read it): 27 blocks, width 1152, 16 heads of 72, MLP 4304, patch 16,
2x2 merge, 48x48 learned position grid, no deepstack layers, output 2048 (the language
model's width). Counts multiply-adds as 2 FLOPs; attention is full (no windows) over an
image's patches, so it grows with the square of the patch count.

    python3 scripts/vision-cost.py [--side 1024] [--out 2048]
"""
import argparse

DEPTH, WIDTH, HEADS, MLP, PATCH, MERGE, POS = 27, 1152, 16, 4304, 16, 2, 48


def smart_size(w, h, factor=PATCH * MERGE, min_tok=8, max_tok=4096):
    area = factor * factor
    wb, hb = max(factor, int(w / factor + 0.5) * factor), max(factor, int(h / factor + 0.5) * factor)
    if wb * hb > max_tok * area:
        beta = (w * h / (max_tok * area)) ** 0.5
        wb, hb = max(factor, int(w / beta / factor) * factor), max(factor, int(h / beta / factor) * factor)
    return wb, hb


def cost(w, h, out):
    w, h = smart_size(w, h)
    p = (w // PATCH) * (h // PATCH)
    tokens = p // (MERGE * MERGE)
    linear = 2 * p * (WIDTH * 3 * WIDTH + WIDTH * WIDTH + 2 * WIDTH * MLP)
    attention = 2 * 2 * p * p * WIDTH
    patch_embed = 2 * p * (2 * 3 * PATCH * PATCH) * WIDTH
    m = WIDTH * MERGE * MERGE
    merger = 2 * tokens * (m * m + m * out)
    flops = DEPTH * (linear + attention) + patch_embed + merger
    return w, h, p, tokens, flops, DEPTH * attention / flops


def params(out):
    block = WIDTH * 3 * WIDTH + 3 * WIDTH + WIDTH * WIDTH + WIDTH + 2 * WIDTH * MLP + MLP + WIDTH + 4 * WIDTH
    m = WIDTH * MERGE * MERGE
    return DEPTH * block + 2 * 3 * PATCH * PATCH * WIDTH + WIDTH + POS * POS * WIDTH + 2 * WIDTH + m * m + m + m * out + out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=int, default=2048, help="the language model's width")
    a = ap.parse_args()
    n = params(a.out)
    print(f"parameters: {n / 1e6:.1f} M ({n * 2 / 2**20:.0f} MiB F16, {n * 34 / 32 / 2**20:.0f} MiB Q8_0)")
    print("image (W x H) -> resized, patches, tokens: GFLOP (attention share)")
    for w, h in [(256, 256), (512, 512), (1024, 768), (1024, 1024), (768, 1024)]:
        rw, rh, p, t, f, att = cost(w, h, a.out)
        print(f"{w}x{h} -> {rw}x{rh}, {p} patches, {t} tokens: {f / 1e9:.0f} GFLOP ({att:.0%} attention)")


if __name__ == "__main__":
    main()
