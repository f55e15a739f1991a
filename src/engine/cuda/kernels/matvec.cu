// Quantized matrix x activations: out[c][r] = W.row(r) . act(in[c]) for up to MV_COLS
// columns per block, every weight unit loaded once for all of them.
//
// The prologue quantizes the block's input columns into shared memory (optionally RMS-
// normalising them first), so no kernel of its own and no round trip through global memory
// sits between a norm and the matmul that consumes it. One warp per output row; lanes
// stride over the row's 32-element units. The epilogue stores, adds into the residual
// stream, or (for gate/up pairs stacked in one matrix) writes silu(gate) * up.

#define MV_WARPS 8
#define MV_COLS 8
#define EP_STORE 0
#define EP_ADD 1
#define EP_SWIGLU 2

template <int T>
__device__ __forceinline__ void row_dot(const u8* row, int units, const i8* qs, const Act* acts, int K, int nc, int lane, float* acc) {
#pragma unroll
    for (int c = 0; c < MV_COLS; c++) acc[c] = 0.0f;
    for (int u = lane; u < units; u += WARP) {
        Unit<T> w;
        w.load(row, u);
#pragma unroll
        for (int c = 0; c < MV_COLS; c++) {
            if (c < nc) acc[c] += w.dot((const int*)(qs + c * K + u * 32), acts[c * units + u]);
        }
    }
#pragma unroll
    for (int c = 0; c < MV_COLS; c++) {
        if (c < nc) acc[c] = warp_sum(acc[c]);
    }
}

template <int T>
__device__ __forceinline__ void matvec(const u8* W, long long row_bytes, int rows, int K, const float* in, int in_ld, int ncols,
                                       const float* normw, float eps, float* out, int out_ld, int ep, int rows_per_warp, int cpb) {
    extern __shared__ int smem[];
    __shared__ float s_scale[MV_COLS];
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int col0 = blockIdx.y * cpb;
    const int nc = min(cpb, ncols - col0);
    const int units = K / 32;
    i8* qs = (i8*)smem;
    Act* acts = (Act*)(qs + ((nc * K + 15) & ~15));

    if (normw) {
        for (int c = warp; c < nc; c += MV_WARPS) {
            const float* x = in + (long long)(col0 + c) * in_ld;
            double ss = 0.0;
            for (int i = lane; i < K; i += WARP) {
                float v = x[i];
                ss += (double)(v * v);
            }
            ss = warp_sum_d(ss);
            if (lane == 0) s_scale[c] = 1.0f / sqrtf((float)(ss / (double)K) + eps);
        }
        __syncthreads();
    }
    for (int t = warp; t < nc * units; t += MV_WARPS) {
        const int c = t / units, u = t % units;
        float v = in[(long long)(col0 + c) * in_ld + u * 32 + lane];
        if (normw) v = (v * s_scale[c]) * normw[u * 32 + lane];
        const float amax = warp_max(fabsf(v));
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const int q = __float2int_rn(v * id);
        qs[c * K + u * 32 + lane] = (i8)q;
        const int sum = warp_sum_i(q);
        if (lane == 0) {
            Act a;
            a.d = h2f(f2h(d));
            a.s = h2f(f2h(d * (float)sum));
            a.sum = sum;
            acts[c * units + u] = a;
        }
    }
    __syncthreads();

    const int n_out = ep == EP_SWIGLU ? rows / 2 : rows;
    const int first = (blockIdx.x * MV_WARPS + warp) * rows_per_warp;
    for (int rr = 0; rr < rows_per_warp; rr++) {
        const int r = first + rr;
        if (r >= n_out) break;
        float acc[MV_COLS];
        row_dot<T>(W + (long long)r * row_bytes, units, qs, acts, K, nc, lane, acc);
        if (ep == EP_SWIGLU) {
            float up[MV_COLS];
            row_dot<T>(W + (long long)(r + n_out) * row_bytes, units, qs, acts, K, nc, lane, up);
#pragma unroll
            for (int c = 0; c < MV_COLS; c++) {
                if (c < nc && lane == c) {
                    const float g = acc[c];
                    out[(long long)(col0 + c) * out_ld + r] = (g / (1.0f + expf(-g))) * up[c];
                }
            }
        } else {
#pragma unroll
            for (int c = 0; c < MV_COLS; c++) {
                if (c < nc && lane == c) {
                    float* o = out + (long long)(col0 + c) * out_ld + r;
                    *o = ep == EP_ADD ? *o + acc[c] : acc[c];
                }
            }
        }
    }
}

#define MATVEC_ENTRY(NAME, T)                                                                                              \
    extern "C" __global__ void __launch_bounds__(MV_WARPS * WARP)                                                          \
        NAME(const u8* W, long long row_bytes, int rows, int K, const float* in, int in_ld, int ncols, const float* normw, \
             float eps, float* out, int out_ld, int ep, int rows_per_warp, int cpb) {                                      \
        matvec<T>(W, row_bytes, rows, K, in, in_ld, ncols, normw, eps, out, out_ld, ep, rows_per_warp, cpb);              \
    }

MATVEC_ENTRY(matvec_q4_0, T_Q4_0)
MATVEC_ENTRY(matvec_q4_1, T_Q4_1)
MATVEC_ENTRY(matvec_q8_0, T_Q8_0)
MATVEC_ENTRY(matvec_q4_k, T_Q4_K)
MATVEC_ENTRY(matvec_q6_k, T_Q6_K)
MATVEC_ENTRY(matvec_iq4_xs, T_IQ4_XS)
