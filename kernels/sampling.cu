// Sampling on the device: one block per logits row, so only token ids and the
// requested logprobs travel back to the host.
//
// The pipeline and its semantics are the engine's sampler
// (crates/tessera-engine/src/sampling), step for step:
//   1. logits_stats: on the raw row, its argmax (the fallback), and when
//      logprobs are asked for, log-sum-exp (f64 sum) and the top-k list
//      (k <= 20; NaN as -inf, +inf as FLT_MAX; ties to the lower id).
//   2. apply_edits: repetition / frequency / presence penalties, logit bias,
//      min_tokens masking, as a per-row edit list the host builds from the
//      sequence's tokens (sparse: the vocabulary is never scanned), recording
//      each overwritten value so the raw logit of the chosen token is known.
//   3. sample: greedy argmax (lowest id on ties, NaN skipped), or weights
//      w = exp((l - max) / T), min_p (w >= min_p), top_k (by logit, ties to
//      the lower id), top_p (smallest prefix by weight, ties to the lower id,
//      whose mass reaches top_p of the total), then one draw with the uniform
//      `u` the host took from the request's seeded RNG. Nothing drawable: the
//      processed argmax, else the raw argmax, else token 0.
//
// The kept set is the CPU sampler's. The draw walks the kept tokens in id
// order with weights in 2^-40 fixed point (integer sums: exact and
// order-free), so a seeded request reproduces on the GPU and its tokens
// follow the same distribution as on the CPU; they are not token-for-token
// the CPU's, whose walk order differs. Greedy tokens are the same.
//
// Each thread owns a contiguous chunk of the row, so "lower id first" among
// ties is a block-wide exclusive scan of per-chunk counts: every decision is
// a function of the row alone.
#include "common.cuh"

#define SAMPLE_THREADS 1024
#define MAX_TOP_LOGPROBS 20
#define FIXED_ONE 1099511627776.0f  // 2^40: weights are <= 1

// Per-row parameters of `sample`, 32 bytes (#[repr(C)] on the host).
struct SampleRow {
    float inv_temperature;  // 0: greedy
    float min_p;            // 0: off
    float top_p;            // 1: off
    int top_k;              // 0: off
    double u;               // uniform in [0, 1), used unless greedy
    int want_logprob;       // write the chosen token's raw logprob
    int pad;
};

// Per-row logit processors of `apply_edits`, 24 bytes: edits [edit_start,
// edit_end), the first num_penalized of them penalties on distinct tokens.
struct EditRow {
    float repetition;
    float frequency;
    float presence;
    u32 num_penalized;
    u32 edit_start;
    u32 edit_end;
};

// kind 0: penalty (value = the token's count in the output, 0 = prompt only);
// 1: logit bias (value added); 2: mask to -inf (min_tokens).
struct Edit {
    u32 token;
    u32 kind;
    float value;
};

__device__ __forceinline__ float sanitize(float x) {
    return x != x ? NEG_INF : fminf(x, FLT_MAX_);
}

// (value, index) argmax over the block: the largest value, lowest index on
// ties; values that are NaN or -inf never win. UINT_MAX when none.
__device__ u32 block_argmax(float v, u32 i, float* sv, u32* si) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
#pragma unroll
    for (int o = WARP / 2; o > 0; o /= 2) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const u32 oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
    }
    __syncthreads();
    if (lane == 0) { sv[warp] = v; si[warp] = i; }
    __syncthreads();
    float bv = NEG_INF;
    u32 bi = 0xffffffffu;
    for (int w = 0; w < (int)(blockDim.x / WARP); ++w) {
        if (sv[w] > bv || (sv[w] == bv && si[w] < bi)) { bv = sv[w]; bi = si[w]; }
    }
    return bv > NEG_INF ? bi : 0xffffffffu;
}

// Thread-local best of a strided pass, for block_argmax.
__device__ __forceinline__ void argmax_step(float x, u32 i, float& v, u32& vi) {
    if (x > v || (x == v && x > NEG_INF && i < vi)) { v = x; vi = i; }
}

// Exclusive prefix of `v` over threads in thread order; `total` gets the sum.
__device__ u64 block_exclusive_scan(u64 v, u64* warp_sums, u64& total) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    u64 incl = v;
#pragma unroll
    for (int o = 1; o < WARP; o *= 2) {
        const u64 n = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += n;
    }
    __syncthreads();
    if (lane == WARP - 1) warp_sums[warp] = incl;
    __syncthreads();
    u64 before = 0, sum = 0;
    for (int w = 0; w < (int)(blockDim.x / WARP); ++w) {
        if (w < warp) before += warp_sums[w];
        sum += warp_sums[w];
    }
    total = sum;
    return before + incl - v;
}

__device__ double block_sum_f64(double v, double* scratch) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
#pragma unroll
    for (int o = WARP / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    double total = 0.0;
    for (int w = 0; w < (int)(blockDim.x / WARP); ++w) total += scratch[w];
    return total;
}

// This thread's contiguous chunk [lo, hi) of a row of n.
__device__ __forceinline__ void chunk(int n, int& lo, int& hi) {
    const int per = (n + blockDim.x - 1) / blockDim.x;
    lo = min(n, (int)threadIdx.x * per);
    hi = min(n, lo + per);
}

// Radix select by count: the key of the k-th largest member (members: those
// `member` accepts) and, in `need`, how many members equal to it are within
// the k. Needs at least k members. Four passes of 8-bit digits.
template <typename Member>
__device__ u32 select_kth(const float* row, int n, u32 k, Member member, u32& need, u32* hist) {
    __shared__ u32 s_prefix, s_need;
    u32 prefix = 0, mask = 0;
    if (threadIdx.x == 0) s_need = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int d = threadIdx.x; d < 256; d += blockDim.x) hist[d] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            u32 key;
            if (member(row[i], key) && (key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            u32 left = s_need, sel = 0;
            for (int d = 255; d >= 0; --d) {
                if (hist[d] >= left) { sel = (u32)d; break; }
                left -= hist[d];
            }
            s_need = left;
            s_prefix = prefix | (sel << shift);
        }
        __syncthreads();
        prefix = s_prefix;
        mask |= 255u << shift;
    }
    need = s_need;
    return prefix;
}

// Members for the top-logprobs list: every token, NaN as -inf.
struct AnyToken {
    __device__ bool operator()(float x, u32& key) const { key = order_key(sanitize(x)); return true; }
};
// Members for top_k: tokens with a logit above -inf (NaN excluded).
struct FiniteOrInf {
    __device__ bool operator()(float x, u32& key) const { key = order_key(x); return x > NEG_INF; }
};

// grid = rows, block = SAMPLE_THREADS. num_logprobs[r]: -1 = none, else the
// alternatives wanted (0..20). Writes raw_argmax (UINT_MAX: no finite logit),
// lse (f64), and top_ids / top_lps ([rows, 20]; the first num_logprobs).
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) logits_stats(
    u32* __restrict__ raw_argmax, double* __restrict__ lse, u32* __restrict__ top_ids,
    float* __restrict__ top_lps, const float* __restrict__ logits,
    const int* __restrict__ num_logprobs, int vocab) {
    __shared__ float sv[32];
    __shared__ u32 si[32];
    __shared__ double sd[32];
    __shared__ u32 hist[256];
    __shared__ u64 warp_sums[32];
    __shared__ u32 list_n;
    __shared__ u32 list_id[MAX_TOP_LOGPROBS];
    __shared__ float list_v[MAX_TOP_LOGPROBS];
    const int r = blockIdx.x;
    const float* row = logits + (size_t)r * vocab;

    float best = NEG_INF, m = NEG_INF;
    u32 best_i = 0xffffffffu;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        argmax_step(row[i], (u32)i, best, best_i);
        m = fmaxf(m, sanitize(row[i]));
    }
    const u32 am = block_argmax(best, best_i, sv, si);
    if (threadIdx.x == 0) raw_argmax[r] = am;
    const int want = num_logprobs[r];
    if (want < 0) return;

    // lse = m + log(sum exp(x - m)), the terms f32, the sum f64.
    m = warp_max(m);
    __syncthreads();
    if (threadIdx.x % WARP == 0) sv[threadIdx.x / WARP] = m;
    __syncthreads();
    m = NEG_INF;
    for (int w = 0; w < (int)(blockDim.x / WARP); ++w) m = fmaxf(m, sv[w]);
    double s = 0.0;
    if (m > NEG_INF) {
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) s += (double)expf(sanitize(row[i]) - m);
    }
    s = block_sum_f64(s, sd);
    const double row_lse = m > NEG_INF ? (double)m + log(s) : __longlong_as_double(0xfff0000000000000ll);
    if (threadIdx.x == 0) lse[r] = row_lse;

    const u32 k = (u32)min(min(want, MAX_TOP_LOGPROBS), vocab);
    if (k == 0) return;
    u32 need;
    const u32 thr = select_kth(row, vocab, k, AnyToken(), need, hist);
    // The lowest-id `need` tokens equal to the threshold, then all above it.
    int lo, hi;
    chunk(vocab, lo, hi);
    u32 ties = 0;
    for (int i = lo; i < hi; ++i) ties += order_key(sanitize(row[i])) == thr;
    u64 total;
    u32 rank = (u32)block_exclusive_scan(ties, warp_sums, total);
    if (threadIdx.x == 0) list_n = 0;
    __syncthreads();
    for (int i = lo; i < hi; ++i) {
        const float x = sanitize(row[i]);
        const u32 key = order_key(x);
        bool take = key > thr;
        if (key == thr) take = rank++ < need;
        if (take) {
            const u32 at = atomicAdd(&list_n, 1u);
            list_id[at] = (u32)i;
            list_v[at] = x;
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        // Insertion sort of <= 20 entries: value descending, id ascending.
        for (u32 a = 1; a < k; ++a) {
            const u32 id = list_id[a];
            const float v = list_v[a];
            int b = (int)a - 1;
            while (b >= 0 && (list_v[b] < v || (list_v[b] == v && list_id[b] > id))) {
                list_id[b + 1] = list_id[b];
                list_v[b + 1] = list_v[b];
                --b;
            }
            list_id[b + 1] = id;
            list_v[b + 1] = v;
        }
        for (u32 a = 0; a < k; ++a) {
            const float v = list_v[a];
            top_ids[(size_t)r * MAX_TOP_LOGPROBS + a] = list_id[a];
            top_lps[(size_t)r * MAX_TOP_LOGPROBS + a] =
                v == NEG_INF ? NEG_INF : (float)((double)v - row_lse);
        }
    }
}

// grid = rows, block = any multiple of 32. Applies each row's edits in place
// and records each overwritten value in edit_old (same index as the edit).
extern "C" __global__ void apply_edits(
    float* __restrict__ logits, float* __restrict__ edit_old, const Edit* __restrict__ edits,
    const EditRow* __restrict__ rows, int vocab) {
    const EditRow p = rows[blockIdx.x];
    float* row = logits + (size_t)blockIdx.x * vocab;
    // Penalties: distinct tokens, so in parallel.
    for (u32 e = p.edit_start + threadIdx.x; e < p.edit_start + p.num_penalized; e += blockDim.x) {
        const Edit ed = edits[e];
        if (ed.token >= (u32)vocab) continue;
        const float old = row[ed.token];
        edit_old[e] = old;
        float l = old;
        if (p.repetition != 1.0f) l = l > 0.0f ? l / p.repetition : l * p.repetition;
        if (ed.value > 0.0f) {
            l -= p.frequency * ed.value;
            l -= p.presence;
        }
        row[ed.token] = l;
    }
    __syncthreads();
    // Bias and masks in list order: a token may appear twice.
    if (threadIdx.x == 0) {
        for (u32 e = p.edit_start + p.num_penalized; e < p.edit_end; ++e) {
            const Edit ed = edits[e];
            if (ed.token >= (u32)vocab) continue;
            edit_old[e] = row[ed.token];
            row[ed.token] = ed.kind == 1 ? row[ed.token] + ed.value : NEG_INF;
        }
    }
}

// The filters of one row, and the thresholds the passes below find.
struct Filter {
    const float* row;
    float lmax, inv_t, min_p;
    bool top_k_on;  // more than top_k tokens above -inf
    u32 thr_k, need_k;
    bool top_p_on;
    u32 thr_p;      // weight bits of the last token of the nucleus
    double target;  // top_p x total mass
    u64 above_p;    // mass of weights above thr_p

    // Fixed-point weight after temperature, min_p and top_k; `wkey` gets the
    // f32 weight's bits (order-preserving for weights >= 0). `k_rank` counts
    // this thread's top_k ties so far.
    __device__ u64 weight_k(int i, u32& k_rank, u32& wkey) const {
        const float l = row[i];
        if (lmax == POS_INF) { wkey = 0; return l == POS_INF ? 1ull : 0ull; }
        if (top_k_on) {
            if (!(l > NEG_INF)) return 0;
            const u32 key = order_key(l);
            if (key < thr_k) return 0;
            if (key == thr_k && k_rank++ >= need_k) return 0;
        }
        const float w = expf((l - lmax) * inv_t);
        if (!(w >= min_p) || !(w > 0.0f)) return 0;
        wkey = __float_as_uint(w);
        const u64 fixed = (u64)(w * FIXED_ONE);
        return fixed ? fixed : 1ull;
    }

    // The final weight: top_p too. `p_mass` is this thread's tie mass so far.
    __device__ u64 weight(int i, u32& k_rank, u64& p_mass) const {
        u32 wkey;
        const u64 w = weight_k(i, k_rank, wkey);
        if (w == 0 || !top_p_on || lmax == POS_INF) return w;
        if (wkey > thr_p) return w;
        if (wkey < thr_p) return 0;
        const bool keep = (double)(above_p + p_mass) < target;
        p_mass += w;
        return keep ? w : 0;
    }
};

// grid = rows, block = SAMPLE_THREADS. Picks each row's token from its
// processed logits; with want_logprob, also its logprob under the raw row
// (lse from logits_stats; the raw logit from edit_old if an edit touched it).
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) sample(
    u32* __restrict__ tokens, float* __restrict__ token_logprob, const float* __restrict__ logits,
    const SampleRow* __restrict__ params, const u32* __restrict__ raw_argmax,
    const double* __restrict__ lse, const Edit* __restrict__ edits,
    const float* __restrict__ edit_old, const EditRow* __restrict__ edit_rows, int vocab) {
    __shared__ float sv[32];
    __shared__ u32 si[32];
    __shared__ u32 hist32[256];
    __shared__ u64 hist[256];
    __shared__ u64 warp_sums[32];
    __shared__ u32 s_count, s_prefix, s_chosen;
    __shared__ u64 s_above;
    const int r = blockIdx.x;
    const SampleRow p = params[r];
    Filter f = {logits + (size_t)r * vocab, 0.0f, 0.0f, 0.0f, false, 0u, 0u, false, 0u, 0.0, 0ull};

    float best = NEG_INF;
    u32 best_i = 0xffffffffu;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) argmax_step(f.row[i], (u32)i, best, best_i);
    const u32 processed_argmax = block_argmax(best, best_i, sv, si);
    u32 chosen = 0xffffffffu;
    if (p.inv_temperature == 0.0f || processed_argmax == 0xffffffffu) {
        chosen = processed_argmax;
    } else {
        f.lmax = f.row[processed_argmax];
        f.inv_t = p.inv_temperature;
        f.min_p = p.min_p;
        f.top_k_on = false;
        f.top_p_on = false;
        int lo, hi;
        chunk(vocab, lo, hi);
        u64 total;
        // top_k: the threshold logit and this thread's rank among its ties.
        u32 k_before = 0;
        if (p.top_k > 0 && p.top_k < vocab && f.lmax != POS_INF) {
            if (threadIdx.x == 0) s_count = 0;
            __syncthreads();
            u32 c = 0;
            for (int i = threadIdx.x; i < vocab; i += blockDim.x) c += f.row[i] > NEG_INF;
            atomicAdd(&s_count, c);
            __syncthreads();
            if (s_count > (u32)p.top_k) {
                f.top_k_on = true;
                f.thr_k = select_kth(f.row, vocab, (u32)p.top_k, FiniteOrInf(), f.need_k, hist32);
                u32 ties = 0;
                for (int i = lo; i < hi; ++i) ties += f.row[i] > NEG_INF && order_key(f.row[i]) == f.thr_k;
                k_before = (u32)block_exclusive_scan(ties, warp_sums, total);
            }
        }
        // top_p: radix select by mass over the weights' bits.
        u64 p_before = 0;
        if (p.top_p < 1.0f && f.lmax != POS_INF) {
            u64 mass = 0;
            u32 k_rank = k_before, wkey;
            for (int i = lo; i < hi; ++i) mass += f.weight_k(i, k_rank, wkey);
            block_exclusive_scan(mass, warp_sums, total);
            f.target = (double)p.top_p * (double)total;
            u32 prefix = 0, mask = 0;
            u64 above = 0;
            for (int shift = 24; shift >= 0; shift -= 8) {
                for (int d = threadIdx.x; d < 256; d += blockDim.x) hist[d] = 0;
                __syncthreads();
                k_rank = k_before;
                for (int i = lo; i < hi; ++i) {
                    const u64 w = f.weight_k(i, k_rank, wkey);
                    if (w && (wkey & mask) == prefix) atomicAdd(&hist[(wkey >> shift) & 255u], w);
                }
                __syncthreads();
                if (threadIdx.x == 0) {
                    // The digit where the mass from the top reaches the
                    // target; if rounding never lets it, the lowest digit.
                    int sel = -1, lowest = 0;
                    for (int d = 255; d >= 0; --d) {
                        if (hist[d] == 0) continue;
                        if ((double)(above + hist[d]) >= f.target) { sel = d; break; }
                        above += hist[d];
                        lowest = d;
                    }
                    if (sel < 0) { sel = lowest; above -= hist[lowest]; }
                    s_prefix = prefix | ((u32)sel << shift);
                    s_above = above;
                }
                __syncthreads();
                prefix = s_prefix;
                above = s_above;
                mask |= 255u << shift;
            }
            f.top_p_on = true;
            f.thr_p = prefix;
            f.above_p = above;
            u64 ties = 0;
            k_rank = k_before;
            for (int i = lo; i < hi; ++i) {
                const u64 w = f.weight_k(i, k_rank, wkey);
                if (w && wkey == f.thr_p) ties += w;
            }
            p_before = block_exclusive_scan(ties, warp_sums, total);
        }
        // The draw: the first kept token (id order) whose cumulative weight
        // exceeds u x total.
        u64 mine = 0;
        u32 k_rank = k_before;
        u64 p_mass = p_before;
        for (int i = lo; i < hi; ++i) mine += f.weight(i, k_rank, p_mass);
        const u64 before = block_exclusive_scan(mine, warp_sums, total);
        if (threadIdx.x == 0) s_chosen = 0xffffffffu;
        __syncthreads();
        if (total > 0) {
            u64 target = (u64)(p.u * (double)total);
            if (target >= total) target = total - 1;
            if (target >= before && target < before + mine) {
                k_rank = k_before;
                p_mass = p_before;
                u64 acc = before;
                for (int i = lo; i < hi; ++i) {
                    const u64 w = f.weight(i, k_rank, p_mass);
                    acc += w;
                    if (w && target < acc) { s_chosen = (u32)i; break; }
                }
            }
        }
        __syncthreads();
        chosen = s_chosen != 0xffffffffu ? s_chosen : processed_argmax;
    }
    if (chosen == 0xffffffffu) chosen = raw_argmax[r];
    if (chosen == 0xffffffffu) chosen = 0;
    if (threadIdx.x == 0) tokens[r] = chosen;
    if (!p.want_logprob) return;

    // The raw logit of the chosen token: the old value of the first edit of
    // it, if any edit touched it.
    const EditRow er = edit_rows[r];
    u32 first = 0xffffffffu;
    for (u32 e = er.edit_start + threadIdx.x; e < er.edit_end; e += blockDim.x) {
        if (edits[e].token == chosen) { first = min(first, e); }
    }
#pragma unroll
    for (int o = WARP / 2; o > 0; o /= 2) first = min(first, __shfl_xor_sync(0xffffffffu, first, o));
    __syncthreads();
    if (threadIdx.x % WARP == 0) si[threadIdx.x / WARP] = first;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 0; w < (int)(blockDim.x / WARP); ++w) first = min(first, si[w]);
        const float raw = sanitize(chosen < (u32)vocab
            ? (first != 0xffffffffu ? edit_old[first] : f.row[chosen]) : NEG_INF);
        token_logprob[r] = raw == NEG_INF ? NEG_INF : (float)((double)raw - lse[r]);
    }
}
