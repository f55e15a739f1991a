// The weight formats, one 32-element unit at a time: a unit is a whole Q4_0/Q4_1/Q8_0
// block, or one 32-element sub-block of a 256-element K-quant or IQ4_XS super-block.
//
// Activations come quantized in the same units (see `Act`): 32 int8 quants, the scale `d`
// rounded to f16 precision, `s` = f16(d * sum of quants) and the exact integer sum. The
// integer dot of a unit is exact (dp4a); only the per-unit scaling is floating point, as on
// the CPU (engine/quant), whose Q8_0/Q8_1 activations these equal bit for bit.

#define T_Q4_0 2
#define T_Q4_1 3
#define T_Q8_0 8
#define T_Q4_K 12
#define T_Q6_K 14
#define T_IQ4_XS 23
#define T_F32 0
#define T_F16 1

struct Act {
    float d;
    float s;
    int sum;
};

__constant__ signed char KVALUES_IQ4NL[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// Four nibbles (one per byte of `v`, already masked to 0..15) mapped through the IQ4 codebook.
__device__ __forceinline__ int iq4_lookup(int v) {
    u32 r = 0;
#pragma unroll
    for (int b = 0; b < 4; b++) {
        r |= (u32)(u8)KVALUES_IQ4NL[(v >> (8 * b)) & 0xF] << (8 * b);
    }
    return (int)r;
}

// The integer dot of a unit's eight weight ints with its eight activation ints.
__device__ __forceinline__ int dot8(const int* q, const int* a) {
    int s = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) s = __dp4a(q[i], a[i], s);
    return s;
}

// Bytes of one block of a type, and the elements it holds.
__device__ __forceinline__ int block_bytes(int t) {
    switch (t) {
        case T_Q4_0: return 18;
        case T_Q4_1: return 20;
        case T_Q8_0: return 34;
        case T_Q4_K: return 144;
        case T_Q6_K: return 210;
        case T_IQ4_XS: return 136;
        case T_F16: return 2;
        default: return 4;
    }
}

__device__ __forceinline__ int block_elems(int t) {
    switch (t) {
        case T_Q4_0: case T_Q4_1: case T_Q8_0: return 32;
        case T_Q4_K: case T_Q6_K: case T_IQ4_XS: return 256;
        default: return 1;
    }
}

// The 6-bit scale and min of sub-block j of a Q4_K super-block.
__device__ __forceinline__ void k_scale_min(int j, const u8* q, int& sc, int& m) {
    if (j < 4) {
        sc = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// One unit of weights, unpacked into eight ints of four int8 values each (elements
// 4i..4i+3), plus what scales them. `dot` then takes any number of activation columns.
template <int T>
struct Unit;

template <>
struct Unit<T_Q4_0> {
    int q[8];
    float d;
    __device__ __forceinline__ void load(const u8* row, int u) {
        const u8* b = row + u * 18;
        d = ld_h(b);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int v = ld_i32_a2(b + 2 + 4 * i);
            q[i] = __vsubss4(v & 0x0F0F0F0F, 0x08080808);
            q[4 + i] = __vsubss4((v >> 4) & 0x0F0F0F0F, 0x08080808);
        }
    }
    __device__ __forceinline__ float dot(const int* a, Act act) const {
        return (float)dot8(q, a) * (d * act.d);
    }
};

template <>
struct Unit<T_Q4_1> {
    int q[8];
    float d, m;
    __device__ __forceinline__ void load(const u8* row, int u) {
        const u8* b = row + u * 20;
        d = ld_h(b);
        m = ld_h(b + 2);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int v = ld_i32_a4(b + 4 + 4 * i);
            q[i] = v & 0x0F0F0F0F;
            q[4 + i] = (v >> 4) & 0x0F0F0F0F;
        }
    }
    __device__ __forceinline__ float dot(const int* a, Act act) const {
        return (float)dot8(q, a) * (d * act.d) + m * act.s;
    }
};

template <>
struct Unit<T_Q8_0> {
    int q[8];
    float d;
    __device__ __forceinline__ void load(const u8* row, int u) {
        const u8* b = row + u * 34;
        d = ld_h(b);
#pragma unroll
        for (int i = 0; i < 8; i++) q[i] = ld_i32_a2(b + 2 + 4 * i);
    }
    __device__ __forceinline__ float dot(const int* a, Act act) const {
        return (float)dot8(q, a) * (d * act.d);
    }
};

template <>
struct Unit<T_Q4_K> {
    int q[8];
    float dsc, dm;
    __device__ __forceinline__ void load(const u8* row, int u) {
        const u8* b = row + (u >> 3) * 144;
        int j = u & 7;
        int sc, m;
        k_scale_min(j, b + 4, sc, m);
        dsc = ld_h(b) * (float)sc;
        dm = ld_h(b + 2) * (float)m;
        const u8* qs = b + 16 + 32 * (j >> 1);
        int shift = (j & 1) * 4;
#pragma unroll
        for (int i = 0; i < 8; i++) q[i] = (ld_i32_a4(qs + 4 * i) >> shift) & 0x0F0F0F0F;
    }
    __device__ __forceinline__ float dot(const int* a, Act act) const {
        return act.d * (dsc * (float)dot8(q, a) - dm * (float)act.sum);
    }
};

template <>
struct Unit<T_Q6_K> {
    int q[8];
    float d0, d1;
    __device__ __forceinline__ void load(const u8* row, int u) {
        const u8* b = row + (u >> 3) * 210;
        int j = u & 7;
        int half = j >> 2, g = j & 3;
        const u8* ql = b + 64 * half + (g & 1) * 32;
        const u8* qh = b + 128 + 32 * half;
        int shl = (g >> 1) * 4, shh = 2 * g;
        const i8* sc = (const i8*)(b + 192) + half * 8 + 2 * g;
        float d = ld_h(b + 208);
        d0 = d * (float)sc[0];
        d1 = d * (float)sc[1];
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int vl = (ld_i32_a2(ql + 4 * i) >> shl) & 0x0F0F0F0F;
            int vh = ((ld_i32_a2(qh + 4 * i) >> shh) & 0x03030303) << 4;
            q[i] = __vsubss4(vl | vh, 0x20202020);
        }
    }
    __device__ __forceinline__ float dot(const int* a, Act act) const {
        int s0 = 0, s1 = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) s0 = __dp4a(q[i], a[i], s0);
#pragma unroll
        for (int i = 4; i < 8; i++) s1 = __dp4a(q[i], a[i], s1);
        return act.d * (d0 * (float)s0 + d1 * (float)s1);
    }
};

template <>
struct Unit<T_IQ4_XS> {
    int q[8];
    float d;
    __device__ __forceinline__ void load(const u8* row, int u) {
        const u8* b = row + (u >> 3) * 136;
        int j = u & 7;
        int sh = *(const u16*)(b + 2);
        int ls = ((b[4 + j / 2] >> (4 * (j & 1))) & 0xF) | (((sh >> (2 * j)) & 3) << 4);
        d = ld_h(b) * (float)(ls - 32);
        const u8* qs = b + 8 + 16 * j;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int v = ld_i32_a4(qs + 4 * i);
            q[i] = iq4_lookup(v & 0x0F0F0F0F);
            q[4 + i] = iq4_lookup((v >> 4) & 0x0F0F0F0F);
        }
    }
    __device__ __forceinline__ float dot(const int* a, Act act) const {
        return (float)dot8(q, a) * (d * act.d);
    }
};

// Element e of a row of type t, dequantized (embedding lookup; tests).
__device__ float dequant_elem(int t, const u8* row, int e) {
    switch (t) {
        case T_F32: return ((const float*)row)[e];
        case T_F16: return h2f(((const u16*)row)[e]);
        case T_Q4_0: {
            const u8* b = row + (e / 32) * 18;
            int j = e % 32;
            int v = j < 16 ? (b[2 + j] & 0xF) : (b[2 + j - 16] >> 4);
            return (float)(v - 8) * ld_h(b);
        }
        case T_Q4_1: {
            const u8* b = row + (e / 32) * 20;
            int j = e % 32;
            int v = j < 16 ? (b[4 + j] & 0xF) : (b[4 + j - 16] >> 4);
            return (float)v * ld_h(b) + ld_h(b + 2);
        }
        case T_Q8_0: {
            const u8* b = row + (e / 32) * 34;
            return (float)((const i8*)b)[2 + e % 32] * ld_h(b);
        }
        case T_Q4_K: {
            const u8* b = row + (e / 256) * 144;
            int j = (e % 256) / 32, l = e % 32;
            int sc, m;
            k_scale_min(j, b + 4, sc, m);
            int v = (b[16 + 32 * (j >> 1) + l] >> (4 * (j & 1))) & 0xF;
            return ld_h(b) * (float)sc * (float)v - ld_h(b + 2) * (float)m;
        }
        case T_Q6_K: {
            const u8* b = row + (e / 256) * 210;
            int k = e % 256, half = k / 128, g = (k % 128) / 32, l = k % 32;
            int vl = (b[64 * half + (g & 1) * 32 + l] >> ((g >> 1) * 4)) & 0xF;
            int vh = (b[128 + 32 * half + l] >> (2 * g)) & 3;
            int sc = ((const i8*)(b + 192))[half * 8 + 2 * g + l / 16];
            return ld_h(b + 208) * (float)sc * (float)((vl | (vh << 4)) - 32);
        }
        case T_IQ4_XS: {
            const u8* b = row + (e / 256) * 136;
            int j = (e % 256) / 32, l = e % 32;
            int sh = *(const u16*)(b + 2);
            int ls = ((b[4 + j / 2] >> (4 * (j & 1))) & 0xF) | (((sh >> (2 * j)) & 3) << 4);
            int v = l < 16 ? (b[8 + 16 * j + l] & 0xF) : (b[8 + 16 * j + l - 16] >> 4);
            return ld_h(b) * (float)(ls - 32) * (float)KVALUES_IQ4NL[v];
        }
        default: return 0.0f;
    }
}
