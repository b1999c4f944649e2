// RMSNorm, alone, fused with the residual add (after a norm of the added
// output, Gemma's), and per-head RMSNorm (Qwen3's and Gemma 3's q/k norms). One block per row; the sum of squares is reduced in a
// fixed order (common.cuh), so a row's result never depends on the batch.
//
// Semantics are the CPU backend's (backend/cpu/ops.rs): in f32,
// rms = sqrt(mean(x^2) + eps) and out = x / rms * w, in that order. The gains
// w are f32, as the CPU's: a vector per layer costs nothing to keep exact.
#include "common.cuh"

// Sum of squares of one row, then the block's rms.
__device__ __forceinline__ float row_rms(const float* x, int n, float eps, float* scratch) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[i] * x[i];
    s = block_sum(s, scratch);
    return sqrtf(s / (float)n + eps);
}

// out = bf16(x / rms(x) * w) per row: the f32 residual normalized into the
// bf16 input of the next GEMM.
extern "C" __global__ void rms_norm_f32_bf16(
    bf16* __restrict__ out, const float* __restrict__ x, const float* __restrict__ w,
    int n, float eps) {
    __shared__ float scratch[32];
    const float* row = x + (size_t)blockIdx.x * n;
    const float rms = row_rms(row, n, eps, scratch);
    bf16* o = out + (size_t)blockIdx.x * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        o[i] = f32_to_bf16(row[i] / rms * w[i]);
    }
}

// residual += f32(x) in place, then out = bf16(rms_norm(residual) * w): the
// block output added to the residual stream and normalized in one pass.
extern "C" __global__ void add_rms_norm_f32_bf16(
    bf16* __restrict__ out, float* __restrict__ residual, const bf16* __restrict__ x,
    const float* __restrict__ w, int n, float eps) {
    __shared__ float scratch[32];
    float* row = residual + (size_t)blockIdx.x * n;
    const bf16* xr = x + (size_t)blockIdx.x * n;
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = row[i] + bf16_to_f32(xr[i]);
        row[i] = v;  // each element is read and written by the same thread
        s += v * v;
    }
    s = block_sum(s, scratch);
    const float rms = sqrtf(s / (float)n + eps);
    bf16* o = out + (size_t)blockIdx.x * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        o[i] = f32_to_bf16(row[i] / rms * w[i]);
    }
}

// Gemma's sandwich norm: residual += f32(x) / rms(x) * post in place, then
// out = bf16(rms_norm(residual) * w). The sublayer output is normed before it
// joins the residual stream, and the sum normed for the next sublayer.
extern "C" __global__ void add_normed_rms_norm_f32_bf16(
    bf16* __restrict__ out, float* __restrict__ residual, const bf16* __restrict__ x,
    const float* __restrict__ post, const float* __restrict__ w, int n, float eps) {
    __shared__ float scratch[32];
    float* row = residual + (size_t)blockIdx.x * n;
    const bf16* xr = x + (size_t)blockIdx.x * n;
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = bf16_to_f32(xr[i]);
        s += v * v;
    }
    s = block_sum(s, scratch);
    const float rms_x = sqrtf(s / (float)n + eps);
    s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = row[i] + bf16_to_f32(xr[i]) / rms_x * post[i];
        row[i] = v;  // each element is read and written by the same thread
        s += v * v;
    }
    s = block_sum(s, scratch);
    const float rms = sqrtf(s / (float)n + eps);
    bf16* o = out + (size_t)blockIdx.x * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        o[i] = f32_to_bf16(row[i] / rms * w[i]);
    }
}

// In place over bf16 rows of `cols`: RMSNorm of each `head_dim` slice of the
// heads [offset_heads, offset_heads + num_heads). One warp per (row, head),
// blockDim.x a multiple of 32; grid.x = rows, grid.y = ceil(heads / warps).
extern "C" __global__ void head_rms_norm_bf16(
    bf16* __restrict__ x, const float* __restrict__ w, int cols, int offset_heads,
    int num_heads, int head_dim, float eps) {
    const int lane = threadIdx.x % WARP;
    const int head = blockIdx.y * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (head >= num_heads) return;
    bf16* h = x + (size_t)blockIdx.x * cols + (size_t)(offset_heads + head) * head_dim;
    float s = 0.0f;
    for (int i = lane; i < head_dim; i += WARP) {
        const float v = bf16_to_f32(h[i]);
        s += v * v;
    }
    s = warp_sum(s);
    const float rms = sqrtf(s / (float)head_dim + eps);
    for (int i = lane; i < head_dim; i += WARP) {
        h[i] = f32_to_bf16(bf16_to_f32(h[i]) / rms * w[i]);
    }
}
