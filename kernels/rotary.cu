// Rotary embedding fused with the KV-cache write.
//
// qkv holds each new token's fused projection, [tokens, (H + 2 * KV) * D] in
// bf16: H query heads, then KV key heads, then KV value heads. The Q and K
// heads are rotated in place by the angles of the token's position (f32
// arithmetic, as the CPU's ops::rotate_head), and the token's rotated K and
// its V are written to its slot of this layer's paged cache.
//
// Cache layout, as the CPU backend's: [slot][kv_head][D] bf16 for K and for V,
// slot = block * block_size + offset (the host's slot mapping).
#include "common.cuh"

// One block per token. cos/sin: [max_positions, D / 2] f32. `interleaved`:
// pairs are (2i, 2i + 1) (GGUF Llama); otherwise (i, i + D / 2) (NeoX / HF).
// The host checks positions and slots against the table and the pool
// (FlatBatch); a token out of range is skipped here rather than read or
// written out of bounds.
extern "C" __global__ void rotary_cache_write_bf16(
    bf16* __restrict__ qkv, bf16* __restrict__ k_cache, bf16* __restrict__ v_cache,
    const float* __restrict__ cos_table, const float* __restrict__ sin_table,
    const u32* __restrict__ positions, const u32* __restrict__ slot_mapping,
    int num_heads, int num_kv_heads, int head_dim, int max_positions, int interleaved,
    unsigned long long num_slots) {
    const int t = blockIdx.x;
    const u32 pos = positions[t];
    const u32 slot = slot_mapping[t];
    if (pos >= (u32)max_positions || (u64)slot >= num_slots) return;
    const int half = head_dim / 2;
    const int cols = (num_heads + 2 * num_kv_heads) * head_dim;
    bf16* row = qkv + (size_t)t * cols;
    const float* cs = cos_table + (size_t)pos * half;
    const float* sn = sin_table + (size_t)pos * half;
    const int kv_width = num_kv_heads * head_dim;
    bf16* k_dst = k_cache + (size_t)slot * kv_width;
    bf16* v_dst = v_cache + (size_t)slot * kv_width;
    const int k_first = num_heads;  // the first K head among the rotated ones

    // Each thread rotates pairs: (head, i) over the H + KV rotated heads.
    const int pairs = (num_heads + num_kv_heads) * half;
    for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
        const int head = p / half, i = p % half;
        bf16* h = row + (size_t)head * head_dim;
        const int ia = interleaved ? 2 * i : i;
        const int ib = interleaved ? 2 * i + 1 : i + half;
        const float a = bf16_to_f32(h[ia]), b = bf16_to_f32(h[ib]);
        const bf16 ra = f32_to_bf16(a * cs[i] - b * sn[i]);
        const bf16 rb = f32_to_bf16(a * sn[i] + b * cs[i]);
        h[ia] = ra;
        h[ib] = rb;
        if (head >= k_first) {
            bf16* k = k_dst + (size_t)(head - k_first) * head_dim;
            k[ia] = ra;
            k[ib] = rb;
        }
    }
    // V is copied as it is.
    const bf16* v_src = row + (size_t)(num_heads + num_kv_heads) * head_dim;
    for (int i = threadIdx.x; i < kv_width; i += blockDim.x) v_dst[i] = v_src[i];
}
