// Decode attention over the paged f16 KV cache, split-K (flash-decoding): block (h, r, s)
// covers head h of query row r over the s-th of `nsplit` equal slices of the row's
// positions 0..=pos, with an online softmax per warp. With one split it writes the output;
// otherwise it writes a partial (max, sum, weighted values), and the last block of the
// (row, head) to finish merges all partials and resets the counter, so the whole thing is
// one launch and a captured graph can replay it with any lengths (all read from memory).

#define AT_WARPS 4
#define AT_MAXE 8

extern "C" __global__ void __launch_bounds__(AT_WARPS * WARP)
    attention(const float* q, const u16* kc, const u16* vc, const int* row_pos, const int* row_table, const int* tables,
              int n_head, int n_head_kv, int hd, float scale, int nsplit, float* partial, u32* counters, float* out) {
    const int h = blockIdx.x, r = blockIdx.y, s = blockIdx.z;
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int epl = hd / WARP;
    const int kvh = h / (n_head / n_head_kv);
    const int kv_dim = n_head_kv * hd;
    const int len = row_pos[r] + 1;
    const int chunk = (len + nsplit - 1) / nsplit;
    const int p0 = s * chunk, p1 = min(len, p0 + chunk);
    const int* table = tables + row_table[r];

    float qv[AT_MAXE], acc[AT_MAXE];
    const float* qr = q + ((long long)r * n_head + h) * hd + lane * epl;
#pragma unroll
    for (int e = 0; e < AT_MAXE; e++) {
        qv[e] = e < epl ? qr[e] : 0.0f;
        acc[e] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    for (int p = p0 + warp; p < p1; p += AT_WARPS) {
        const long long at = ((long long)table[p / 16] * 16 + p % 16) * kv_dim + kvh * hd + lane * epl;
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < AT_MAXE; e++) {
            if (e < epl) dot += qv[e] * h2f(kc[at + e]);
        }
        dot = warp_sum(dot) * scale;
        const float mn = fmaxf(m, dot);
        const float corr = expf(m - mn);
        const float pe = expf(dot - mn);
        l = l * corr + pe;
#pragma unroll
        for (int e = 0; e < AT_MAXE; e++) {
            if (e < epl) acc[e] = acc[e] * corr + pe * h2f(vc[at + e]);
        }
        m = mn;
    }

    __shared__ float sm[AT_WARPS], sl[AT_WARPS];
    __shared__ float sacc[AT_WARPS][AT_MAXE * WARP];
    __shared__ bool last;
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
#pragma unroll
    for (int e = 0; e < AT_MAXE; e++) {
        if (e < epl) sacc[warp][lane * epl + e] = acc[e];
    }
    __syncthreads();
    float M = NEG_INF;
    for (int w = 0; w < AT_WARPS; w++) M = fmaxf(M, sm[w]);
    float L = 0.0f;
    for (int w = 0; w < AT_WARPS; w++) {
        if (sm[w] != NEG_INF) L += sl[w] * expf(sm[w] - M);
    }
    const long long rh = (long long)r * n_head + h;
    float* mine = partial + (rh * nsplit + s) * (hd + 2);
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float a = 0.0f;
        for (int w = 0; w < AT_WARPS; w++) {
            if (sm[w] != NEG_INF) a += sacc[w][i] * expf(sm[w] - M);
        }
        if (nsplit == 1) {
            out[rh * hd + i] = a / L;
        } else {
            mine[2 + i] = a;
        }
    }
    if (nsplit == 1) return;
    if (threadIdx.x == 0) {
        mine[0] = M;
        mine[1] = L;
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&counters[rh], 1u) == (u32)(nsplit - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
    const volatile float* all = partial + rh * nsplit * (hd + 2);
    float MM = NEG_INF;
    for (int k = 0; k < nsplit; k++) MM = fmaxf(MM, all[k * (hd + 2)]);
    float LL = 0.0f;
    for (int k = 0; k < nsplit; k++) {
        const float mk = all[k * (hd + 2)];
        if (mk != NEG_INF) LL += all[k * (hd + 2) + 1] * expf(mk - MM);
    }
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float a = 0.0f;
        for (int k = 0; k < nsplit; k++) {
            const float mk = all[k * (hd + 2)];
            if (mk != NEG_INF) a += all[k * (hd + 2) + 2 + i] * expf(mk - MM);
        }
        out[rh * hd + i] = a / LL;
    }
    if (threadIdx.x == 0) counters[rh] = 0;
}
