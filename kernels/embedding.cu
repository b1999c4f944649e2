// Embedding gather and row gather.
//
// The residual stream is f32 (as on the CPU backend); weights and the
// activations fed to the GEMMs are bf16.
#include "common.cuh"

// out[t, :] = f32(table[ids[t], :]). One block per token, 16-byte loads
// (8 bf16) when `hidden` is a multiple of 8. Ids are validated on the host
// (FlatBatch); an id past the table still never reads outside it: its row is
// written as zeros.
extern "C" __global__ void embedding_gather_bf16(
    float* __restrict__ out, const bf16* __restrict__ table, const u32* __restrict__ ids,
    int hidden, int vocab) {
    const int t = blockIdx.x;
    const u32 id = ids[t];
    float* dst = out + (size_t)t * hidden;
    if (id >= (u32)vocab) {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = 0.0f;
        return;
    }
    const bf16* src = table + (size_t)id * hidden;
    if ((hidden & 7) == 0) {
        const uint4* src4 = (const uint4*)src;
        for (int i = threadIdx.x; i < hidden / 8; i += blockDim.x) {
            uint4 v = src4[i];
            float* d = dst + 8 * i;
            d[0] = bf16_lo(v.x); d[1] = bf16_hi(v.x);
            d[2] = bf16_lo(v.y); d[3] = bf16_hi(v.y);
            d[4] = bf16_lo(v.z); d[5] = bf16_hi(v.z);
            d[6] = bf16_lo(v.w); d[7] = bf16_hi(v.w);
        }
    } else {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = bf16_to_f32(src[i]);
    }
}

// out[r, :] = x[rows[r], :] for bf16 rows of `cols` (the rows that want
// logits, before the LM head). One block per output row.
extern "C" __global__ void gather_rows_bf16(
    bf16* __restrict__ out, const bf16* __restrict__ x, const u32* __restrict__ rows, int cols) {
    const bf16* src = x + (size_t)rows[blockIdx.x] * cols;
    bf16* dst = out + (size_t)blockIdx.x * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = src[i];
}
