// The gated activations of the fused gate|up projection, and the elementwise
// operations on f32 tensors (Gemma's embedding scale and logit soft-cap).
#include "common.cuh"

// out[r, i] = bf16(silu(g) * u) with g = gate_up[r, i], u = gate_up[r, I + i],
// computed in f32 as the CPU does: g / (1 + exp(-g)) * u.
// grid.x = rows, grid.y covers I in blockDim.x chunks.
extern "C" __global__ void silu_mul_bf16(
    bf16* __restrict__ out, const bf16* __restrict__ gate_up, int inter) {
    const int i = blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= inter) return;
    const bf16* row = gate_up + (size_t)blockIdx.x * 2 * inter;
    const float g = bf16_to_f32(row[i]);
    const float u = bf16_to_f32(row[inter + i]);
    out[(size_t)blockIdx.x * inter + i] = f32_to_bf16(g / (1.0f + expf(-g)) * u);
}

// GeGLU: out[r, i] = bf16(gelu_tanh(g) * u), GELU's tanh approximation in the
// CPU's order: 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))) u.
// Launched as silu_mul_bf16.
extern "C" __global__ void gelu_tanh_mul_bf16(
    bf16* __restrict__ out, const bf16* __restrict__ gate_up, int inter) {
    const int i = blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= inter) return;
    const bf16* row = gate_up + (size_t)blockIdx.x * 2 * inter;
    const float g = bf16_to_f32(row[i]);
    const float u = bf16_to_f32(row[inter + i]);
    const float inner = 0.7978846f * (g + 0.044715f * g * g * g);
    out[(size_t)blockIdx.x * inter + i] = f32_to_bf16(0.5f * g * (1.0f + tanhf(inner)) * u);
}

// x[r, i] *= s over f32 rows of `cols`. Launched as silu_mul_bf16 (I = cols).
extern "C" __global__ void scale_f32(float* __restrict__ x, int cols, float s) {
    const int i = blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= cols) return;
    x[(size_t)blockIdx.x * cols + i] *= s;
}

// x[r, i] = tanh(x[r, i] / cap) * cap over f32 rows of `cols`, the CPU's order.
// Launched as silu_mul_bf16 (I = cols).
extern "C" __global__ void softcap_f32(float* __restrict__ x, int cols, float cap) {
    const int i = blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= cols) return;
    float* v = x + (size_t)blockIdx.x * cols + i;
    *v = tanhf(*v / cap) * cap;
}
