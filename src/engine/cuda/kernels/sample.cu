// Sampling on the device, so only token ids (or a short candidate list) cross PCIe per
// step: argmax per row (the first of equal maxima, as the CPU sampler picks), and the top k
// of a row by (logit descending, id ascending), the order the CPU sampler sorts candidates
// in, found by a 4-pass radix select over order-preserving keys.

#define SAMPLE_THREADS 1024
#define TOPK_MAX 256

// The warp's largest (value, index), the lower index among equal values.
__device__ __forceinline__ void warp_argmax(float& best, int& bi) {
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(FULL_MASK, best, o);
        const int oi = __shfl_xor_sync(FULL_MASK, bi, o);
        if (ov > best || (ov == best && oi < bi)) {
            best = ov;
            bi = oi;
        }
    }
}

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) argmax_rows(const float* logits, int n, int* out) {
    __shared__ float sv[SAMPLE_THREADS / WARP];
    __shared__ int si[SAMPLE_THREADS / WARP];
    const float* l = logits + (long long)blockIdx.x * n;
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    float best = NEG_INF;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = l[i];
        if (v > best) {
            best = v;
            bi = i;
        }
    }
    warp_argmax(best, bi);
    if (lane == 0) {
        sv[warp] = best;
        si[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
        const int nw = blockDim.x / WARP;
        best = lane < nw ? sv[lane] : NEG_INF;
        bi = lane < nw ? si[lane] : 0x7fffffff;
        warp_argmax(best, bi);
        if (lane == 0) out[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
    }
}

// Larger floats give larger keys (negative ones reversed); NaN sorts above +inf, as Rust's
// total_cmp orders a positive NaN.
__device__ __forceinline__ u32 fkey(float f) {
    const u32 b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) topk_rows(const float* logits, int n, int k, int* out_ids, float* out_vals) {
    __shared__ u32 hist[256];
    __shared__ u32 s_prefix, s_mask;
    __shared__ int s_rem, s_cnt;
    __shared__ u32 ckey[TOPK_MAX];
    __shared__ int cid[TOPK_MAX];
    __shared__ int wsum[SAMPLE_THREADS / WARP];
    const float* l = logits + (long long)blockIdx.x * n;
    const int tid = threadIdx.x, bd = blockDim.x;
    if (tid == 0) {
        s_prefix = 0;
        s_mask = 0;
        s_rem = k;
        s_cnt = 0;
    }
    for (int pass = 24; pass >= 0; pass -= 8) {
        for (int i = tid; i < 256; i += bd) hist[i] = 0;
        __syncthreads();
        const u32 prefix = s_prefix, mask = s_mask;
        for (int i = tid; i < n; i += bd) {
            const u32 key = fkey(l[i]);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> pass) & 255], 1u);
        }
        __syncthreads();
        if (tid == 0) {
            const u32 rem = (u32)s_rem;
            u32 cum = 0;
            for (int b = 255; b >= 0; b--) {
                if (cum + hist[b] >= rem) {
                    s_prefix = prefix | ((u32)b << pass);
                    s_mask = mask | (255u << pass);
                    s_rem = (int)(rem - cum);
                    break;
                }
                cum += hist[b];
            }
        }
        __syncthreads();
    }
    // s_prefix is the k-th largest key; s_rem of the keys equal to it are taken, lowest ids first.
    const u32 thr = s_prefix;
    const int need_eq = s_rem;
    for (int i = tid; i < n; i += bd) {
        const u32 key = fkey(l[i]);
        if (key > thr) {
            const int at = atomicAdd(&s_cnt, 1);
            ckey[at] = key;
            cid[at] = i;
        }
    }
    // Ties: each thread takes a contiguous range so a prefix sum orders them by id.
    const int per = (n + bd - 1) / bd;
    const int i0 = tid * per, i1 = min(n, i0 + per);
    int mine = 0;
    for (int i = i0; i < i1; i++) mine += fkey(l[i]) == thr;
    const int lane = tid % WARP, warp = tid / WARP;
    int incl = mine;
    for (int o = 1; o < WARP; o <<= 1) {
        const int v = __shfl_up_sync(FULL_MASK, incl, o);
        if (lane >= o) incl += v;
    }
    if (lane == WARP - 1) wsum[warp] = incl;
    __syncthreads();
    int before = incl - mine;
    for (int w = 0; w < warp; w++) before += wsum[w];
    const int base = s_cnt;
    for (int i = i0; i < i1 && before < need_eq; i++) {
        if (fkey(l[i]) == thr) {
            ckey[base + before] = thr;
            cid[base + before] = i;
            before++;
        }
    }
    __syncthreads();
    for (int t = tid; t < k; t += bd) {
        int rank = 0;
        for (int j = 0; j < k; j++) rank += ckey[j] > ckey[t] || (ckey[j] == ckey[t] && cid[j] < cid[t]);
        out_ids[(long long)blockIdx.x * k + rank] = cid[t];
        out_vals[(long long)blockIdx.x * k + rank] = l[cid[t]];
    }
}
