#!/usr/bin/env python3
"""Memory of the seeds' production model, Qwen3.5/3.6-35B-A3B (llama.cpp arch `qwen35moe`),
from its GGUF shapes: weights at IQ4_XS, the per-sequence recurrent state, the KV cache of the
full-attention layers per context length, and the batch that fits on a 24 GiB card and on an
80 GiB H100. Prints the markdown tables docs/BENCHMARKS.md records.

    python3 scripts/memory-math.py
"""

GiB = 1 << 30
MiB = 1 << 20

# The GGUF keys of qwen3.6-35b-a3b (qwen35moe.*), as llama.cpp reads them.
S = dict(
    block_count=40, full_attention_interval=4, embedding_length=2048, vocab=248320,
    head_count=16, head_count_kv=2, key_length=256, value_length=256,
    expert_count=256, expert_used_count=8, expert_ff=512, shared_ff=512,
    conv_kernel=4, state_size=128, group_count=16, time_step_rank=32,
)
n_attn = S["block_count"] // S["full_attention_interval"]
n_rec = S["block_count"] - n_attn
e, d = S["embedding_length"], S["state_size"]
key_dim, value_dim = S["group_count"] * d, S["time_step_rank"] * d
conv_dim = 2 * key_dim + value_dim

# Parameters by tensor role.
q = S["head_count"] * S["key_length"]
kv = S["head_count_kv"] * S["key_length"]
attn = e * 2 * q + 2 * e * kv + q * e                     # [q | gate], k, v, output
gdn = e * conv_dim + e * value_dim + 2 * e * S["time_step_rank"] + value_dim * e
experts = S["expert_count"] * 3 * e * S["expert_ff"]
shared = 3 * e * S["shared_ff"]
router = e * S["expert_count"] + e
embd = S["vocab"] * e
total = 2 * embd + n_attn * attn + n_rec * gdn + S["block_count"] * (experts + shared + router)

# llama-quantize IQ4_XS: matrices at 4.25 bits, the output matrix Q6_K (6.5625), routers F32.
IQ4_XS, Q6_K = 4.25 / 8, 6.5625 / 8
weights = (embd + n_attn * attn + n_rec * gdn + S["block_count"] * (experts + shared)) * IQ4_XS \
    + embd * Q6_K + S["block_count"] * router * 4

state = n_rec * ((S["conv_kernel"] - 1) * conv_dim + S["time_step_rank"] * d * d) * 4
kv_pos = {"f16": n_attn * 2 * kv * 2, "f32": n_attn * 2 * kv * 4}

print(f"parameters: {total / 1e9:.2f} B; {n_attn} attention + {n_rec} Gated DeltaNet layers")
print(f"weights at IQ4_XS: {weights / GiB:.2f} GiB")
print(f"recurrent state per sequence: {state / MiB:.1f} MiB "
      f"(conv {(S['conv_kernel'] - 1) * conv_dim * 4 * n_rec / MiB:.1f} MiB)")
print(f"KV per position: {kv_pos['f16'] / 1024:.0f} KiB (f16), {kv_pos['f32'] / 1024:.0f} KiB (f32)\n")

RESERVE = 1.5 * GiB  # CUDA context, activations and scratch of one step
print("| context | KV f16 / seq | KV f32 / seq | state / seq | seqs on 24 GiB (f16 / f32) | seqs on H100 80 GiB (f16 / f32) |")
print("|---:|---:|---:|---:|---:|---:|")
for ctx in (8192, 65536, 262144):
    row = [f"{ctx:,}"]
    per = {}
    for t in ("f16", "f32"):
        per[t] = ctx * kv_pos[t] + state
        row.append(f"{ctx * kv_pos[t] / GiB:.2f} GiB")
    row.append(f"{state / MiB:.0f} MiB")
    for card in (24 * GiB, 80 * GiB):
        room = card - weights - RESERVE
        row.append(" / ".join(str(max(0, int(room // per[t]))) for t in ("f16", "f32")))
    print("| " + " | ".join(row) + " |")
