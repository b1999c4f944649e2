// SiLU-and-multiply of the fused gate|up projection.
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
