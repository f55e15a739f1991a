// The small per-row operations around the matmuls: embedding lookup, the step between the
// QKV projection and attention (bias, per-head RMSNorm, RoPE, the cache write), gathering
// the rows that give logits, and an empty kernel that measures the launch floor.

extern "C" __global__ void embed(const u8* W, int t, long long row_bytes, int K, const int* tokens, float* x) {
    const u8* row = W + (long long)tokens[blockIdx.x] * row_bytes;
    for (int e = threadIdx.x; e < K; e += blockDim.x) x[(long long)blockIdx.x * K + e] = dequant_elem(t, row, e);
}

#define POST_WARPS 8
#define POST_MAXD 256

// One block per row; one warp per head (query heads, then key heads, then value heads, as
// the stacked QKV projection lays them out). Mirrors the CPU: bias, then the head's
// RMSNorm, then RoPE with angles advanced by repeated multiplication, then the f16 cache.
extern "C" __global__ void __launch_bounds__(POST_WARPS * WARP)
    qkv_post(const float* qkv, const float* bias, const float* qnorm, const float* knorm, float eps, const float* freq_factors,
             int n_rot, int neox, float theta_scale, float freq_scale, const int* row_pos, const int* row_table, const int* tables,
             int n_head, int n_head_kv, int hd, float* qout, u16* kc, u16* vc) {
    __shared__ float buf[POST_WARPS][POST_MAXD];
    const int r = blockIdx.x;
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int qd = n_head * hd, kd = n_head_kv * hd;
    const float* src = qkv + (long long)r * (qd + 2 * kd);
    const int pos = row_pos[r];
    const long long at = (long long)tables[row_table[r] + pos / 16] * 16 + pos % 16;
    float* hb = buf[warp];
    for (int hh = warp; hh < n_head + 2 * n_head_kv; hh += POST_WARPS) {
        for (int i = lane; i < hd; i += WARP) hb[i] = bias ? src[hh * hd + i] + bias[hh * hd + i] : src[hh * hd + i];
        __syncwarp();
        const bool is_q = hh < n_head, is_k = !is_q && hh < n_head + n_head_kv;
        const float* nw = is_q ? qnorm : (is_k ? knorm : 0);
        if (nw) {
            double ss = 0.0;
            for (int i = lane; i < hd; i += WARP) ss += (double)(hb[i] * hb[i]);
            ss = warp_sum_d(ss);
            const float sc = 1.0f / sqrtf((float)(ss / (double)hd) + eps);
            __syncwarp();
            for (int i = lane; i < hd; i += WARP) hb[i] = (hb[i] * sc) * nw[i];
            __syncwarp();
        }
        if (is_q || is_k) {
            for (int i = lane; i < n_rot / 2; i += WARP) {
                float theta = (float)pos;
                for (int k = 0; k < i; k++) theta *= theta_scale;
                const float ff = freq_factors ? freq_factors[i] : 1.0f;
                const float t = freq_scale * (theta / ff);
                const float c = cosf(t), sn = sinf(t);
                const int a = neox ? i : 2 * i, b = neox ? i + n_rot / 2 : 2 * i + 1;
                const float x0 = hb[a], x1 = hb[b];
                hb[a] = fmaf(x0, c, -(x1 * sn));
                hb[b] = fmaf(x0, sn, x1 * c);
            }
            __syncwarp();
        }
        for (int i = lane; i < hd; i += WARP) {
            if (is_q) {
                qout[(long long)r * qd + hh * hd + i] = hb[i];
            } else if (is_k) {
                kc[at * kd + (hh - n_head) * hd + i] = f2h(hb[i]);
            } else {
                vc[at * kd + (hh - n_head - n_head_kv) * hd + i] = f2h(hb[i]);
            }
        }
        __syncwarp();
    }
}

// out[i] = x[idx[i]] for rows of width K.
extern "C" __global__ void gather_rows(const float* x, const int* idx, int K, float* out) {
    const float* src = x + (long long)idx[blockIdx.x] * K;
    for (int e = threadIdx.x; e < K; e += blockDim.x) out[(long long)blockIdx.x * K + e] = src[e];
}

extern "C" __global__ void noop() {}

// g = silu(g) * u, for gate and up projections of different weight types.
extern "C" __global__ void swiglu(float* g, const float* u, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) g[i] = (g[i] / (1.0f + expf(-g[i]))) * u[i];
}
