//! Criterion benchmarks of the CPU backend's kernels, one group per kernel, on
//! the default model's shapes (SmolLM2-135M: hidden 576, 9 query heads and 3
//! KV heads of 64, MLP 1536, vocabulary 49152).
//!
//! `cargo bench -p tessera-model --bench kernels [-- FILTER]`. Matmul
//! throughput is in multiply-adds per second ("elem/s"); `m` is the number of
//! activation rows (1: single-stream decode; 64: a batched decode step or a
//! prefill chunk). Weights are random with realistic scales: the kernels'
//! speed does not depend on the values.

use candle_core::quantized::GgmlDType;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tessera_model::backend::cpu::{CpuBackend, CpuKvCache, CpuLinear, CpuTensor};
use tessera_model::backend::{AttentionShape, Backend, KvCacheDtype, KvCacheShape, RopeTable};
use tessera_model::batch::{FlatBatch, SeqMeta};
use tessera_model::config::RopeStyle;
use tessera_model::weights::HostMatrix;

const HIDDEN: usize = 576;
const MLP: usize = 1536;
const VOCAB: usize = 49152;
const HEADS: usize = 9;
const KV_HEADS: usize = 3;
const HEAD_DIM: usize = 64;
const BLOCK: usize = 16;

/// GGUF bytes of a random `rows x cols` matrix of `dtype`.
fn random_gguf(rng: &mut StdRng, dtype: GgmlDType, rows: usize, cols: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(rows * cols / dtype.block_size() * dtype.type_size());
    for _ in 0..rows * cols / 32 {
        let d = f16::from_f32(rng.random_range(0.001f32..0.05));
        data.extend_from_slice(&d.to_le_bytes());
        match dtype {
            GgmlDType::Q4_1 => {
                let m = f16::from_f32(rng.random_range(-0.4f32..0.0));
                data.extend_from_slice(&m.to_le_bytes());
                data.extend((0..16).map(|_| rng.random::<u8>()));
            }
            GgmlDType::Q8_0 => data.extend((0..32).map(|_| rng.random::<u8>())),
            other => panic!("no random bytes for {other:?}"),
        }
    }
    data
}

fn random_tensor(rng: &mut StdRng, rows: usize, cols: usize) -> CpuTensor {
    let data = (0..rows * cols)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    CpuTensor::new(data, rows, cols)
}

fn linear(rng: &mut StdRng, dtype: GgmlDType, rows: usize, cols: usize) -> CpuLinear {
    let data = random_gguf(rng, dtype, rows, cols);
    let name = format!("{dtype:?} {rows}x{cols}");
    CpuLinear::new(
        vec![HostMatrix {
            name,
            dtype,
            rows,
            cols,
            data,
        }],
        None,
    )
    .expect("valid random weights")
}

/// GGUF bytes of a random `rows x cols` matrix quantized by candle (for the
/// types whose blocks random bytes would not make realistic).
fn quantized_by_candle(rng: &mut StdRng, dtype: GgmlDType, rows: usize, cols: usize) -> Vec<u8> {
    let values: Vec<f32> = (0..rows * cols)
        .map(|_| rng.random_range(-0.1f32..0.1))
        .collect();
    let t = candle_core::Tensor::from_vec(values, (rows, cols), &candle_core::Device::Cpu)
        .expect("tensor");
    let q = candle_core::quantized::QTensor::quantize(&t, dtype).expect("quantizes");
    q.data().expect("bytes").into_owned()
}

/// The other weight types on the MLP's shapes (K-quants need 256-multiples,
/// so 768 stands in for 576).
fn matmul_other_types(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(4);
    for (dtype, rows, cols) in [
        (GgmlDType::Q4_0, 2 * MLP, HIDDEN),
        (GgmlDType::Q4K, 2 * MLP, 768),
        (GgmlDType::Q6K, 2 * MLP, 768),
    ] {
        let data = quantized_by_candle(&mut rng, dtype, rows, cols);
        let name = format!("{dtype:?} {rows}x{cols}");
        let w = CpuLinear::new(
            vec![HostMatrix {
                name: name.clone(),
                dtype,
                rows,
                cols,
                data,
            }],
            None,
        )
        .expect("valid weights");
        let mut group = c.benchmark_group(format!("matmul/{name}"));
        for m in [1, 64] {
            let x = random_tensor(&mut rng, m, cols);
            group.throughput(Throughput::Elements((m * rows * cols) as u64));
            group.bench_with_input(BenchmarkId::new("m", m), &x, |b, x| {
                b.iter(|| w.forward(x).expect("matmul"))
            });
        }
        group.finish();
    }
}

/// The model's matmuls: fused QKV, MLP up (gate|up fused), MLP down, lm_head.
fn matmul(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let shapes = [
        (
            "qkv",
            GgmlDType::Q4_1,
            HIDDEN + 2 * KV_HEADS * HEAD_DIM,
            HIDDEN,
        ),
        ("gate_up", GgmlDType::Q4_1, 2 * MLP, HIDDEN),
        ("down", GgmlDType::Q4_1, HIDDEN, MLP),
        ("lm_head", GgmlDType::Q8_0, VOCAB, HIDDEN),
    ];
    for (name, dtype, rows, cols) in shapes {
        let w = linear(&mut rng, dtype, rows, cols);
        let mut group = c.benchmark_group(format!("matmul/{name} {dtype:?} {rows}x{cols}"));
        for m in [1, 16, 64] {
            let x = random_tensor(&mut rng, m, cols);
            group.throughput(Throughput::Elements((m * rows * cols) as u64));
            group.bench_with_input(BenchmarkId::new("m", m), &x, |b, x| {
                b.iter(|| w.forward(x).expect("matmul"))
            });
        }
        group.finish();
    }
}

/// `seqs` sequences of `context` tokens each, `query` of them new this step,
/// with blocks laid out one sequence after another.
fn batch(seqs: usize, context: usize, query: usize) -> FlatBatch {
    let blocks_per_seq = context.div_ceil(BLOCK);
    let mut flat = FlatBatch {
        token_ids: Vec::new(),
        positions: Vec::new(),
        slot_mapping: Vec::new(),
        seqs: Vec::new(),
        logit_rows: Vec::new(),
        block_size: BLOCK,
    };
    for s in 0..seqs {
        let table: Vec<u32> = (0..blocks_per_seq)
            .map(|b| (s * blocks_per_seq + b) as u32)
            .collect();
        let query_start = flat.token_ids.len();
        for pos in context - query..context {
            flat.token_ids.push(0);
            flat.positions.push(pos as u32);
            flat.slot_mapping
                .push(table[pos / BLOCK] * BLOCK as u32 + (pos % BLOCK) as u32);
        }
        flat.logit_rows.push(flat.token_ids.len() - 1);
        flat.seqs.push(SeqMeta {
            query_start,
            query_len: query,
            context_len: context,
            block_table: table,
        });
    }
    flat
}

fn attention_shape() -> AttentionShape {
    AttentionShape {
        num_heads: HEADS,
        num_kv_heads: KV_HEADS,
        head_dim: HEAD_DIM,
        scale: 1.0 / (HEAD_DIM as f32).sqrt(),
        sliding_window: None,
        softcap: None,
    }
}

/// One layer's paged attention: a decode step of 64 sequences, and a prefill
/// chunk of 128 tokens of one sequence.
fn attention(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(2);
    let shape = attention_shape();
    let qkv_width = (HEADS + 2 * KV_HEADS) * HEAD_DIM;
    let mut group = c.benchmark_group("attention");
    let cases = [("decode 64x", 64, 192, 1), ("prefill", 1, 128, 128)];
    for ((name, seqs, context, query), dtype) in cases
        .into_iter()
        .flat_map(|c| [(c, KvCacheDtype::F16), (c, KvCacheDtype::F32)])
    {
        let flat = batch(seqs, context, query);
        let num_blocks = seqs * context.div_ceil(BLOCK);
        let mut cache = CpuKvCache::new(KvCacheShape {
            num_layers: 1,
            num_blocks,
            block_size: BLOCK,
            num_kv_heads: KV_HEADS,
            head_dim: HEAD_DIM,
            dtype,
        })
        .expect("cache");
        // Fill every slot the batch attends to.
        let all = batch(seqs, context, context);
        let keys = random_tensor(&mut rng, all.num_tokens(), qkv_width);
        cache
            .write(0, &keys, &shape, &all.slot_mapping)
            .expect("cache write");
        let qkv = random_tensor(&mut rng, flat.num_tokens(), qkv_width);
        group.throughput(Throughput::Elements(flat.num_tokens() as u64));
        group.bench_function(BenchmarkId::new(format!("{name} {dtype}"), context), |b| {
            b.iter(|| cache.attention(0, &qkv, &shape, &flat).expect("attention"))
        });
    }
    group.finish();
}

/// The elementwise operations of one layer on a 64-token step.
fn elementwise(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(3);
    let cpu = CpuBackend::new();
    let rows = 64;
    let mut group = c.benchmark_group("elementwise");
    group.throughput(Throughput::Elements(rows as u64));

    let x = random_tensor(&mut rng, rows, HIDDEN);
    let gain = random_tensor(&mut rng, 1, HIDDEN);
    group.bench_function("add_rms_norm", |b| {
        let mut residual = random_tensor(&mut rng, rows, HIDDEN);
        b.iter(|| {
            cpu.add_rms_norm(&mut residual, &x, &gain, 1e-5)
                .expect("norm")
        })
    });

    let gate_up = random_tensor(&mut rng, rows, 2 * MLP);
    group.bench_function("silu_mul", |b| {
        b.iter(|| cpu.silu_mul(&gate_up).expect("silu_mul"))
    });

    let shape = attention_shape();
    let flat = batch(rows, 192, 1);
    let mut cache = CpuKvCache::new(KvCacheShape {
        num_layers: 1,
        num_blocks: rows * 192 / BLOCK,
        block_size: BLOCK,
        num_kv_heads: KV_HEADS,
        head_dim: HEAD_DIM,
        dtype: KvCacheDtype::F16,
    })
    .expect("cache");
    let positions = 256;
    let angles: Vec<f32> = (0..positions * HEAD_DIM / 2)
        .map(|i| i as f32 * 1e-3)
        .collect();
    let rope = RopeTable {
        cos: angles.iter().map(|a| a.cos()).collect(),
        sin: angles.iter().map(|a| a.sin()).collect(),
        max_positions: positions,
        head_dim: HEAD_DIM,
        style: RopeStyle::Halves,
    };
    let qkv = random_tensor(&mut rng, rows, (HEADS + 2 * KV_HEADS) * HEAD_DIM);
    group.bench_function("rotary_and_cache_write", |b| {
        b.iter_batched_ref(
            || qkv.clone(),
            |qkv| {
                cpu.rotary_and_cache_write(qkv, &rope, &mut cache, 0, &shape, &flat)
                    .expect("rotary")
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(kernels, matmul, matmul_other_types, attention, elementwise);
criterion_main!(kernels);
