//! `attention.cu`: paged attention and its split-K combine against an f64
//! softmax over the same paged cache, for decode, chunked prefill and fresh
//! prefill in one batch, GQA groups up to the kernel's limit, sliding
//! windows and every head size.

use tessera_kernel_emu::{Arg, BufId, Job};
use tessera_kernel_launch::{attention_kernel, attention_splits, Launch};

use super::support::{assert_bf16_close, from_bf16, run_all, Rng};

/// A batch over a paged cache: each sequence's cached keys and the
/// positions of its new tokens.
struct Case {
    d: usize,
    heads: usize,
    kv_heads: usize,
    block_size: usize,
    window: Option<usize>,
    /// Scores become `cap * tanh(score / cap)` (Gemma 2).
    softcap: Option<f32>,
    /// (keys in the cache, positions of the new tokens).
    seqs: Vec<(usize, Vec<usize>)>,
    seed: u64,
}

/// The job and what the reference needs.
struct Built {
    job: Job,
    out: BufId,
    qkv: Vec<u16>,
    k: Vec<u16>,
    v: Vec<u16>,
    token_seq: Vec<u32>,
    token_pos: Vec<u32>,
    tables: Vec<Vec<u32>>,
    scale: f32,
}

fn build(c: &Case) -> Built {
    let mut rng = Rng::new(c.seed);
    let cols = (c.heads + 2 * c.kv_heads) * c.d;
    let kv_width = c.kv_heads * c.d;
    // Blocks handed out in a scrambled order, plus two nobody owns.
    let needed: usize = c
        .seqs
        .iter()
        .map(|(keys, _)| keys.div_ceil(c.block_size))
        .sum();
    let mut pool: Vec<u32> = (0..needed as u32 + 2).collect();
    for i in (1..pool.len()).rev() {
        pool.swap(i, rng.below(i + 1));
    }
    let mut tables = Vec::new();
    let (mut flat, mut table_start) = (Vec::new(), Vec::new());
    let mut next = pool.iter();
    for (keys, _) in &c.seqs {
        let table: Vec<u32> = (0..keys.div_ceil(c.block_size))
            .filter_map(|_| next.next().copied())
            .collect();
        table_start.push(flat.len() as u32);
        flat.extend_from_slice(&table);
        tables.push(table);
    }
    let slots = pool.len() * c.block_size;
    let (k, v) = (
        rng.bf16s(slots * kv_width, 1.0),
        rng.bf16s(slots * kv_width, 1.0),
    );
    let (mut token_seq, mut token_pos) = (Vec::new(), Vec::new());
    for (s, (keys, new)) in c.seqs.iter().enumerate() {
        for &p in new {
            assert!(p < *keys, "a new token's key is in the cache");
            token_seq.push(s as u32);
            token_pos.push(p as u32);
        }
    }
    let t = token_pos.len();
    let qkv = rng.bf16s(t * cols, 1.0);
    let scale = 3.0 / (c.d as f32).sqrt();
    let max_pos = token_pos.iter().copied().max().unwrap_or(0) as usize;
    let splits = attention_splits(max_pos, c.window);

    let mut job = Job::new();
    let part_out = job.filled::<f32>(t * c.heads * splits * c.d, 0xff);
    let part_ml = job.filled::<f32>(t * c.heads * splits * 2, 0xff);
    let out = job.filled::<u16>(t * c.heads * c.d, 0xff);
    let (qb, kb, vb) = (job.buffer(&qkv), job.buffer(&k), job.buffer(&v));
    let (sb, pb) = (job.buffer(&token_seq), job.buffer(&token_pos));
    let (tb, tsb) = (job.buffer(&flat), job.buffer(&table_start));
    let window = c.window.unwrap_or(0) as i32;
    let partition = tessera_kernel_launch::PARTITION as i32;
    let kernel = attention_kernel(c.d).unwrap_or_else(|| panic!("no kernel for D = {}", c.d));
    job.launch(
        kernel,
        Launch::attention(t, c.kv_heads, splits).unwrap(),
        &[
            Arg::Buf(part_out),
            Arg::Buf(part_ml),
            Arg::Buf(qb),
            Arg::Buf(kb),
            Arg::Buf(vb),
            Arg::Buf(sb),
            Arg::Buf(pb),
            Arg::Buf(tb),
            Arg::Buf(tsb),
            Arg::Int(c.heads as i32),
            Arg::Int(c.kv_heads as i32),
            Arg::Int(c.block_size as i32),
            Arg::Int(window),
            Arg::Float(scale),
            Arg::Float(c.softcap.unwrap_or(0.0)),
            Arg::Int(partition),
            Arg::Int(splits as i32),
        ],
    );
    job.launch(
        "paged_attention_combine",
        Launch::attention_combine(t, c.heads).unwrap(),
        &[
            Arg::Buf(out),
            Arg::Buf(part_out),
            Arg::Buf(part_ml),
            Arg::Buf(pb),
            Arg::Int(c.heads as i32),
            Arg::Int(c.d as i32),
            Arg::Int(window),
            Arg::Int(partition),
            Arg::Int(splits as i32),
        ],
    );
    Built {
        job,
        out,
        qkv,
        k,
        v,
        token_seq,
        token_pos,
        tables,
        scale,
    }
}

/// softmax(softcap(q k^T * scale)) V over each token's keys, in f64.
fn reference(c: &Case, b: &Built) -> Vec<f64> {
    let cols = (c.heads + 2 * c.kv_heads) * c.d;
    let group = c.heads / c.kv_heads;
    let f = |x: u16| f64::from(from_bf16(x));
    let mut out = Vec::new();
    for (t, (&s, &pos)) in b.token_seq.iter().zip(&b.token_pos).enumerate() {
        let pos = pos as usize;
        let first = c.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let table = &b.tables[s as usize];
        for h in 0..c.heads {
            let q = &b.qkv[t * cols + h * c.d..t * cols + (h + 1) * c.d];
            let at = |j: usize| {
                let slot = table[j / c.block_size] as usize * c.block_size + j % c.block_size;
                slot * c.kv_heads * c.d + (h / group) * c.d
            };
            let scores: Vec<f64> = (first..=pos)
                .map(|j| {
                    let s = (0..c.d).map(|i| f(q[i]) * f(b.k[at(j) + i])).sum::<f64>()
                        * f64::from(b.scale);
                    match c.softcap.map(f64::from) {
                        Some(cap) => (s / cap).tanh() * cap,
                        None => s,
                    }
                })
                .collect();
            let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let p: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let l: f64 = p.iter().sum();
            for i in 0..c.d {
                out.push(
                    (first..=pos)
                        .zip(&p)
                        .map(|(j, w)| w * f(b.v[at(j) + i]))
                        .sum::<f64>()
                        / l,
                );
            }
        }
    }
    out
}

fn check(c: &Case) {
    let b = build(c);
    let got = run_all(&b.job).get::<u16>(b.out);
    assert_bf16_close(&format!("attention d{}", c.d), &got, &reference(c, &b));
}

#[test]
fn attention_decode_and_prefill_with_gqa_ragged_contexts_and_split_k() {
    check(&Case {
        d: 64,
        heads: 8,
        kv_heads: 2,
        block_size: 16,
        window: None,
        softcap: None,
        seqs: vec![
            // Decode at 1100 keys: three partitions (512, 512, 76).
            (1100, vec![1099]),
            // A chunk after a cached prefix, across the first partition's end.
            (520, (508..520).collect()),
            // A fresh prompt: one partition, the others of its blocks idle.
            (5, (0..5).collect()),
        ],
        seed: 10,
    });
}

#[test]
fn attention_sliding_window_with_the_largest_gqa_group() {
    check(&Case {
        d: 128,
        heads: 16,
        kv_heads: 1,
        block_size: 32,
        window: Some(100),
        softcap: None,
        seqs: vec![(700, (696..700).collect()), (40, vec![0, 39])],
        seed: 11,
    });
}

#[test]
fn attention_every_other_head_size() {
    for (d, seed) in [(80, 12), (96, 13)] {
        check(&Case {
            d,
            heads: 6,
            kv_heads: 3,
            block_size: 16,
            window: None,
            softcap: None,
            seqs: vec![(70, vec![68, 69]), (3, vec![2])],
            seed,
        });
    }
}

#[test]
fn attention_soft_capped_scores() {
    // Scores of q, k in [-1, 1) over 64 dimensions at 3 / sqrt(64) reach
    // several units: a cap of 2 changes every softmax.
    check(&Case {
        d: 64,
        heads: 4,
        kv_heads: 2,
        block_size: 16,
        window: Some(100),
        softcap: Some(2.0),
        seqs: vec![(600, vec![599]), (30, (20..30).collect())],
        seed: 15,
    });
}

/// Several 64-key tiles, for the barrier test: the job and its output.
pub fn multi_tile_job() -> (Job, BufId) {
    let b = build(&multi_tile_case());
    (b.job, b.out)
}

fn multi_tile_case() -> Case {
    Case {
        d: 64,
        heads: 4,
        kv_heads: 2,
        block_size: 16,
        window: None,
        softcap: None,
        seqs: vec![(150, vec![148, 149])],
        seed: 14,
    }
}

#[test]
fn attention_over_several_tiles() {
    check(&multi_tile_case());
}
