//! Rotary + KV write and paged attention against the CPU backend: prefill,
//! chunked prefill and decode in one batch over shuffled block tables; GQA
//! groups of 1 to 8; head sizes 64, 80, 96 and 128; a decode past one
//! split-K partition; a sliding window; both rotary pair layouts. And the
//! refusals that must be errors, not faults on the device.

use tessera_engine::{Batch, SequenceChunk};
use tessera_model::backend::cpu::CpuBackend;
use tessera_model::backend::cuda::{DType, PARTITION};
use tessera_model::backend::{AttentionShape, Backend, KvCacheDtype, KvCacheShape, RopeTable};
use tessera_model::batch::FlatBatch;
use tessera_model::config::RopeStyle;

use crate::common::cuda::{assert_close, bf16_round, cuda};
use crate::common::tiny::random_values;
use crate::ops::{down, host, up};
use crate::{seed, BF16_TOL};

const BLOCK: usize = 16;
const BLOCKS: usize = 128;
const MAX_POS: usize = BLOCKS * BLOCK;

fn rope(head_dim: usize, style: RopeStyle) -> RopeTable {
    let half = head_dim / 2;
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for p in 0..MAX_POS {
        for i in 0..half {
            let angle = p as f32 / 10_000f32.powf(2.0 * i as f32 / head_dim as f32);
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    RopeTable {
        cos,
        sin,
        max_positions: MAX_POS,
        head_dim,
        style,
    }
}

/// Sequence `s`'s blocks: its share of a shuffled pool.
fn tables(s: u64) -> Vec<Vec<u32>> {
    let mut pool: Vec<u32> = (0..BLOCKS as u32).collect();
    let mut x = s | 1;
    for i in (1..pool.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pool.swap(i, (x % (i as u64 + 1)) as usize);
    }
    // A: 8 blocks, B: 48 (past one partition), C: 8.
    vec![
        pool[..8].to_vec(),
        pool[8..56].to_vec(),
        pool[56..64].to_vec(),
    ]
}

/// (sequence, tokens, start) chunks over `tables`.
fn flat(tables: &[Vec<u32>], chunks: &[(usize, usize, usize)]) -> FlatBatch {
    let batch = Batch {
        chunks: chunks
            .iter()
            .map(|&(s, len, start)| SequenceChunk {
                token_ids: vec![0; len],
                start_position: start,
                block_table: tables[s].clone(),
                wants_logits: true,
            })
            .collect(),
    };
    FlatBatch::new(&batch, BLOCK, BLOCKS, MAX_POS).expect("valid batch")
}

#[test]
fn rotary_and_paged_attention_match_the_cpu() {
    let Some(gpu) = cuda("rotary_and_paged_attention_match_the_cpu") else {
        return;
    };
    let cpu = CpuBackend::new();
    let s = seed("rotary_and_paged_attention_match_the_cpu");
    let cases = [
        (4, 2, 64, None, RopeStyle::Halves),
        (8, 1, 128, None, RopeStyle::Interleaved),
        (6, 6, 80, Some(100), RopeStyle::Halves),
        (12, 4, 96, None, RopeStyle::Halves),
        (16, 2, 128, Some(600), RopeStyle::Interleaved),
    ];
    let decode_at = PARTITION + 188; // B's decode spans two partitions
    for (h, kv, d, window, style) in cases {
        let shape = AttentionShape {
            num_heads: h,
            num_kv_heads: kv,
            head_dim: d,
            scale: 1.0 / (d as f32).sqrt(),
            sliding_window: window,
            // One case soft-caps its scores as Gemma 2 does.
            softcap: (d == 80).then_some(5.0),
        };
        let pool = |dtype| KvCacheShape {
            num_layers: 2,
            num_blocks: BLOCKS,
            block_size: BLOCK,
            num_kv_heads: kv,
            head_dim: d,
            dtype,
        };
        let mut cpu_cache = cpu
            .alloc_kv_cache(pool(KvCacheDtype::F32))
            .expect("cpu cache");
        let mut gpu_cache = gpu.alloc_kv_cache(pool(KvCacheDtype::F16)).expect("cache");
        let (cpu_rope, gpu_rope) = (
            rope(d, style),
            gpu.upload_rope(rope(d, style)).expect("rope"),
        );
        let tables = tables(s);
        let cols = (h + 2 * kv) * d;
        let layer = 1;
        let what = format!("{h}/{kv} heads of {d}, window {window:?}, {style:?}");
        // Step 1 fills B's first `decode_at` keys and C's first 20; step 2
        // prefills A, decodes B and continues C; step 3 is B's decode alone.
        let steps = [
            vec![(1, decode_at, 0), (2, 20, 0)],
            vec![(0, 37, 0), (1, 1, decode_at), (2, 5, 20)],
        ];
        let mut batched_decode = Vec::new();
        let mut decode_qkv = Vec::new();
        for (i, chunks) in steps.iter().enumerate() {
            let batch = flat(&tables, chunks);
            let t = batch.num_tokens();
            let qkv = bf16_round(&random_values(t * cols, s + i as u64, 1.0));
            let mut q_cpu = host(&qkv, t, cols);
            let mut q_gpu = up(&gpu, &qkv, t, cols, DType::Bf16);
            cpu.rotary_and_cache_write(
                &mut q_cpu,
                &cpu_rope,
                &mut cpu_cache,
                layer,
                &shape,
                &batch,
            )
            .expect("cpu rotary");
            gpu.rotary_and_cache_write(
                &mut q_gpu,
                &gpu_rope,
                &mut gpu_cache,
                layer,
                &shape,
                &batch,
            )
            .expect("rotary");
            assert_close(
                &format!("rotary {what} step {i}"),
                &down(&gpu, &q_gpu),
                &q_cpu.data,
                BF16_TOL,
            );
            let want = cpu
                .paged_attention(&q_cpu, &cpu_cache, layer, &shape, &batch)
                .expect("cpu attention")
                .data;
            let got = down(
                &gpu,
                &gpu.paged_attention(&q_gpu, &gpu_cache, layer, &shape, &batch)
                    .expect("attention"),
            );
            assert_close(&format!("attention {what} step {i}"), &got, &want, BF16_TOL);
            if i == 1 {
                let row = batch.seqs[1].query_start;
                batched_decode = got[row * h * d..(row + 1) * h * d].to_vec();
                decode_qkv = qkv[row * cols..(row + 1) * cols].to_vec();
            }
        }
        // B's decode alone (the same K and V rewritten to the same slot):
        // the same bits as inside the batch.
        let batch = flat(&tables, &[(1, 1, decode_at)]);
        let mut q_gpu = up(&gpu, &decode_qkv, 1, cols, DType::Bf16);
        gpu.rotary_and_cache_write(&mut q_gpu, &gpu_rope, &mut gpu_cache, layer, &shape, &batch)
            .expect("rotary");
        let alone = down(
            &gpu,
            &gpu.paged_attention(&q_gpu, &gpu_cache, layer, &shape, &batch)
                .expect("attention"),
        );
        assert!(
            alone == batched_decode,
            "{what}: a decode differs alone and batched"
        );
    }
}

#[test]
fn refusals_are_errors_and_leave_the_device_usable() {
    let Some(gpu) = cuda("refusals_are_errors_and_leave_the_device_usable") else {
        return;
    };
    let pool = KvCacheShape {
        num_layers: 1,
        num_blocks: 4,
        block_size: BLOCK,
        num_kv_heads: 2,
        head_dim: 64,
        dtype: KvCacheDtype::F32,
    };
    let err = gpu
        .alloc_kv_cache(pool)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("bf16"), "{err}");
    let mut cache = gpu
        .alloc_kv_cache(KvCacheShape {
            dtype: KvCacheDtype::F16,
            ..pool
        })
        .expect("cache");
    let shape = AttentionShape {
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 64,
        scale: 0.125,
        sliding_window: None,
        softcap: None,
    };
    let rope = gpu.upload_rope(rope(64, RopeStyle::Halves)).expect("rope");
    let cols = 8 * 64;
    // Valid for a pool of 128 blocks; block 100 is past this pool's 4.
    let batch = flat(&[vec![100], vec![], vec![]], &[(0, 3, 0)]);
    let mut qkv = up(&gpu, &vec![0.5; 3 * cols], 3, cols, DType::Bf16);
    let err = gpu
        .rotary_and_cache_write(&mut qkv, &rope, &mut cache, 0, &shape, &batch)
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the pool"), "{err}");
    let err = gpu
        .paged_attention(
            &qkv,
            &cache,
            0,
            &AttentionShape {
                head_dim: 72,
                ..shape
            },
            &batch,
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("head sizes"), "{err}");
    // The device is still fine: a valid step runs.
    let mut valid = FlatBatch::new(
        &Batch {
            chunks: vec![SequenceChunk {
                token_ids: vec![0; 3],
                start_position: 0,
                block_table: vec![3],
                wants_logits: true,
            }],
        },
        BLOCK,
        4,
        64,
    )
    .expect("valid");
    gpu.rotary_and_cache_write(&mut qkv, &rope, &mut cache, 0, &shape, &valid)
        .expect("rotary");
    let out = gpu
        .paged_attention(&qkv, &cache, 0, &shape, &valid)
        .expect("attention");
    assert!(down(&gpu, &out).iter().all(|v| v.is_finite()));
    // A table edited by hand to name a block past the pool is refused too.
    valid.seqs[0].block_table[0] = 4;
    assert!(gpu
        .paged_attention(&qkv, &cache, 0, &shape, &valid)
        .is_err());
    gpu.synchronize().expect("no fault on the device");
}
