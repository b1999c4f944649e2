// Shared helpers of tessera's kernels. No CUDA headers: NVRTC compiles these
// with nothing but itself, so bf16 is a 16-bit pattern converted by bit
// operations, and the few limits needed are spelled out here.
//
// Every reduction here combines values in a fixed order that depends only on
// the block size, never on timing or on other rows: a row's result is the
// same alone or in any batch.
#ifndef TESSERA_COMMON_CUH
#define TESSERA_COMMON_CUH

typedef unsigned short bf16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define NEG_INF (__int_as_float(0xff800000))
#define POS_INF (__int_as_float(0x7f800000))
#define FLT_MAX_ (3.402823466e+38f)
#define WARP 32

// bf16 -> f32 is exact: the high half of the f32 pattern.
__device__ __forceinline__ float bf16_to_f32(bf16 h) {
    return __uint_as_float(((u32)h) << 16);
}

// f32 -> bf16, round to nearest even; NaN stays a (quiet) NaN.
__device__ __forceinline__ bf16 f32_to_bf16(float f) {
    u32 x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        return (bf16)((x >> 16) | 0x0040u);
    }
    x += 0x7fffu + ((x >> 16) & 1u);
    return (bf16)(x >> 16);
}

// Two bf16 packed in a u32 (low half first in memory).
__device__ __forceinline__ float bf16_lo(u32 v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf16_hi(u32 v) { return __uint_as_float(v & 0xffff0000u); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block, the same value returned to every thread. `scratch`
// holds one float per warp. The lanes are combined by the butterfly above and
// the warps' partial sums in warp order, so the order is fixed.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int warps = (blockDim.x + WARP - 1) / WARP;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < warps; ++w) total += scratch[w];
    return total;
}

// Maps a float to a u32 whose unsigned order is the float order
// (-inf < ... < -0 < +0 < ... < +inf); NaN must be filtered out first.
__device__ __forceinline__ u32 order_key(float f) {
    u32 x = __float_as_uint(f);
    return (x & 0x80000000u) ? ~x : (x | 0x80000000u);
}

__device__ __forceinline__ float key_to_float(u32 k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

#endif  // TESSERA_COMMON_CUH
