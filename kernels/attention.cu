// Paged attention over the KV cache, for prefill and decode alike.
//
// Every new token attends causally to its sequence's keys [first, pos]
// (first = pos + 1 - window with a sliding window, else 0), read through the
// sequence's block table: key j lives in slot table[j / block_size] *
// block_size + j % block_size of the [slot][kv_head][D] bf16 cache
// (rotary.cu writes it). So a prefill chunk, a chunk after a prefix-cache hit
// and a decode step are the same computation: variable-length queries over
// paged KV.
//
// Split-K (flash-decoding): a token's keys are cut into partitions of
// `partition` keys (a multiple of TILE); one block computes one (token, KV
// head, partition) with an online softmax over TILE-key tiles and writes an
// unnormalized partial output with its running max and sum; the combine
// kernel merges the partitions in order. Long contexts thus spread over many
// blocks even at batch 1. The partitions depend only on the token's own key
// range, so its result never depends on the batch.
//
// GQA: the block computes every query head that shares its KV head, so each
// K and V tile is read from memory once for the whole group.
//
// Semantics are the CPU backend's (backend/cpu/attention): scores
// dot(q, k) * scale, soft-capped to softcap * tanh(s / softcap) when softcap > 0
// (Gemma 2), softmax, weighted sum of V; f32 arithmetic on bf16 data.
#include "common.cuh"

#define ATT_THREADS 128
#define ATT_TILE 64
#define ATT_MAX_GROUP 16

template <int D>
__device__ __forceinline__ void attend_partition(
    float* __restrict__ part_out, float* __restrict__ part_ml, const bf16* __restrict__ qkv,
    const bf16* __restrict__ k_cache, const bf16* __restrict__ v_cache,
    const u32* __restrict__ token_seq, const u32* __restrict__ token_pos,
    const u32* __restrict__ block_tables, const u32* __restrict__ table_start,
    int num_heads, int num_kv_heads, int block_size, int sliding_window, float scale,
    float softcap, int partition, int max_splits) {
    // Each thread owns these outputs of the group's heads x D.
    constexpr int MAX_OUT = (ATT_MAX_GROUP * D + ATT_THREADS - 1) / ATT_THREADS;
    // K rows padded by one word: the score loop reads 4 bytes per thread
    // from different rows, which then fall in different banks.
    constexpr int KS = D + 2;
    __shared__ float qs[ATT_MAX_GROUP][D];
    __shared__ __align__(16) bf16 ks[ATT_TILE][KS];
    __shared__ __align__(16) bf16 vs[ATT_TILE][D];
    __shared__ float sc[ATT_MAX_GROUP][ATT_TILE];
    __shared__ float run_max[ATT_MAX_GROUP], run_sum[ATT_MAX_GROUP], rescale[ATT_MAX_GROUP];

    const int t = blockIdx.x, kv_head = blockIdx.y, split = blockIdx.z;
    const int group = num_heads / num_kv_heads;
    const u32 seq = token_seq[t];
    const int pos = (int)token_pos[t];
    const int first = sliding_window > 0 ? max(0, pos + 1 - sliding_window) : 0;
    const int begin = first + split * partition;
    const int end = min(pos + 1, begin + partition);
    if (begin >= end) return;  // the combine reads only this token's partitions

    const int cols = (num_heads + 2 * num_kv_heads) * D;
    const bf16* q = qkv + (size_t)t * cols + (size_t)kv_head * group * D;
    for (int i = threadIdx.x; i < group * D; i += ATT_THREADS) {
        qs[i / D][i % D] = bf16_to_f32(q[i]);
    }
    if (threadIdx.x < group) {
        run_max[threadIdx.x] = NEG_INF;
        run_sum[threadIdx.x] = 0.0f;
    }
    float acc[MAX_OUT];
#pragma unroll
    for (int i = 0; i < MAX_OUT; ++i) acc[i] = 0.0f;

    const u32* table = block_tables + table_start[seq];
    const int kv_width = num_kv_heads * D;
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;

    for (int tile = begin; tile < end; tile += ATT_TILE) {
        const int n = min(ATT_TILE, end - tile);
        // Load the tile's K and V rows: 16-byte global loads (8 bf16).
        for (int c = threadIdx.x; c < ATT_TILE * (D / 8); c += ATT_THREADS) {
            const int j = c / (D / 8), part = c % (D / 8);
            uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
            if (j < n) {
                const int key = tile + j;
                const size_t slot = (size_t)table[key / block_size] * block_size + key % block_size;
                const size_t off = slot * kv_width + (size_t)kv_head * D + part * 8;
                kv = *(const uint4*)(k_cache + off);
                vv = *(const uint4*)(v_cache + off);
            }
            u32* kd = (u32*)&ks[j][part * 8];  // 4-byte aligned: KS is even
            kd[0] = kv.x; kd[1] = kv.y; kd[2] = kv.z; kd[3] = kv.w;
            *(uint4*)&vs[j][part * 8] = vv;
        }
        __syncthreads();
        // Scores of every (head, key) pair of the tile.
        for (int c = threadIdx.x; c < group * ATT_TILE; c += ATT_THREADS) {
            const int h = c / ATT_TILE, j = c % ATT_TILE;
            float s = NEG_INF;
            if (j < n) {
                const u32* kr = (const u32*)&ks[j][0];
                float dot = 0.0f;
#pragma unroll 8
                for (int d = 0; d < D / 2; ++d) {
                    const u32 k2 = kr[d];
                    dot += qs[h][2 * d] * bf16_lo(k2) + qs[h][2 * d + 1] * bf16_hi(k2);
                }
                s = dot * scale;
                if (softcap > 0.0f) s = tanhf(s / softcap) * softcap;
            }
            sc[h][j] = s;
        }
        __syncthreads();
        // Online softmax: one warp per head, the tile's keys split over lanes.
        for (int h = warp; h < group; h += ATT_THREADS / WARP) {
            float m_tile = NEG_INF;
            for (int j = lane; j < ATT_TILE; j += WARP) m_tile = fmaxf(m_tile, sc[h][j]);
            m_tile = warp_max(m_tile);
            const float m_old = run_max[h];
            const float m_new = fmaxf(m_old, m_tile);
            float l_tile = 0.0f;
            for (int j = lane; j < ATT_TILE; j += WARP) {
                const float p = m_new == NEG_INF ? 0.0f : expf(sc[h][j] - m_new);
                sc[h][j] = p;
                l_tile += p;
            }
            l_tile = warp_sum(l_tile);
            if (lane == 0) {
                const float r = m_old == NEG_INF ? 0.0f : expf(m_old - m_new);
                rescale[h] = r;
                run_sum[h] = run_sum[h] * r + l_tile;
                run_max[h] = m_new;
            }
        }
        __syncthreads();
        // acc = acc * rescale + P V, each output by one thread in key order.
#pragma unroll
        for (int i = 0; i < MAX_OUT; ++i) {
            const int o = threadIdx.x + i * ATT_THREADS;
            if (o < group * D) {
                const int h = o / D, d = o % D;
                float a = acc[i] * rescale[h];
                for (int j = 0; j < n; ++j) a += sc[h][j] * bf16_to_f32(vs[j][d]);
                acc[i] = a;
            }
        }
        __syncthreads();  // the next tile overwrites ks, vs, sc
    }

#pragma unroll
    for (int i = 0; i < MAX_OUT; ++i) {
        const int o = threadIdx.x + i * ATT_THREADS;
        if (o < group * D) {
            const int h = kv_head * group + o / D, d = o % D;
            part_out[(((size_t)t * num_heads + h) * max_splits + split) * D + d] = acc[i];
        }
    }
    if (threadIdx.x < group) {
        const int h = kv_head * group + threadIdx.x;
        float* ml = part_ml + (((size_t)t * num_heads + h) * max_splits + split) * 2;
        ml[0] = run_max[threadIdx.x];
        ml[1] = run_sum[threadIdx.x];
    }
}

// grid = (tokens, num_kv_heads, max_splits), block = ATT_THREADS.
// part_out: [tokens, H, max_splits, D] f32; part_ml: [tokens, H, max_splits, 2].
// The host checks D, group <= ATT_MAX_GROUP and partition % ATT_TILE == 0.
#define TESSERA_ATTENTION(D)                                                                   \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) paged_attention_d##D(           \
        float* __restrict__ part_out, float* __restrict__ part_ml,                             \
        const bf16* __restrict__ qkv, const bf16* __restrict__ k_cache,                        \
        const bf16* __restrict__ v_cache, const u32* __restrict__ token_seq,                   \
        const u32* __restrict__ token_pos, const u32* __restrict__ block_tables,               \
        const u32* __restrict__ table_start, int num_heads, int num_kv_heads, int block_size,  \
        int sliding_window, float scale, float softcap, int partition, int max_splits) {       \
        attend_partition<D>(part_out, part_ml, qkv, k_cache, v_cache, token_seq, token_pos,    \
                            block_tables, table_start, num_heads, num_kv_heads, block_size,    \
                            sliding_window, scale, softcap, partition, max_splits);            \
    }

TESSERA_ATTENTION(64)
TESSERA_ATTENTION(80)
TESSERA_ATTENTION(96)
TESSERA_ATTENTION(128)

// Merges a token's partitions in partition order and normalizes:
// out = sum_s e^(m_s - M) o_s / sum_s e^(m_s - M) l_s, M the largest m_s.
// grid = (tokens, H), block = any multiple of 32 (threads stride over D).
// out: [tokens, H * D] bf16, the input of the output projection.
extern "C" __global__ void paged_attention_combine(
    bf16* __restrict__ out, const float* __restrict__ part_out, const float* __restrict__ part_ml,
    const u32* __restrict__ token_pos, int num_heads, int head_dim, int sliding_window,
    int partition, int max_splits) {
    const int t = blockIdx.x, h = blockIdx.y;
    const int pos = (int)token_pos[t];
    const int first = sliding_window > 0 ? max(0, pos + 1 - sliding_window) : 0;
    const int splits = min(max_splits, (pos + 1 - first + partition - 1) / partition);
    const size_t base = ((size_t)t * num_heads + h) * max_splits;
    float m = NEG_INF;
    for (int s = 0; s < splits; ++s) m = fmaxf(m, part_ml[(base + s) * 2]);
    float denom = 0.0f;
    for (int s = 0; s < splits; ++s) {
        const float ms = part_ml[(base + s) * 2];
        if (ms != NEG_INF) denom += expf(ms - m) * part_ml[(base + s) * 2 + 1];
    }
    bf16* o = out + ((size_t)t * num_heads + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float v = 0.0f;
        for (int s = 0; s < splits; ++s) {
            const float ms = part_ml[(base + s) * 2];
            if (ms != NEG_INF) v += expf(ms - m) * part_out[(base + s) * head_dim + d];
        }
        o[d] = f32_to_bf16(denom > 0.0f ? v / denom : 0.0f);
    }
}
