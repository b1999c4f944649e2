//! A sequence's logits do not depend on how it is batched: alone, inside a batch of
//! eight mixed sequences (prefills and decodes of various lengths), or with its
//! prompt split into chunks. Bit for bit, on the default model.

mod common;

use common::*;
use tessera_engine::Runner;

/// Eight prompts of different lengths (token ids of the default vocabulary).
fn prompts() -> Vec<Vec<u32>> {
    (0..8)
        .map(|s| {
            let len = 3 + s * 9;
            (0..len)
                .map(|i| ((s * 7919 + i * 104_729) % 49_000) as u32 + 100)
                .collect()
        })
        .collect()
}

#[test]
fn logits_are_identical_alone_batched_and_chunked() {
    let blocks = Blocks { per_seq: 8 };
    let mut runner = cpu_runner(&default_model(), 8 * 8);
    let prompts = prompts();

    // Each prompt alone.
    let alone: Vec<Vec<f32>> = prompts
        .iter()
        .enumerate()
        .map(|(s, p)| {
            let out = runner
                .execute(&batch(vec![(p.clone(), 0, blocks.table(s), true)]))
                .expect("alone");
            out.row(0).to_vec()
        })
        .collect();

    // All eight in one batch.
    let together = runner
        .execute(&batch(
            prompts
                .iter()
                .enumerate()
                .map(|(s, p)| (p.clone(), 0, blocks.table(s), true))
                .collect(),
        ))
        .expect("batched");
    for (s, logits) in alone.iter().enumerate() {
        assert!(
            together.row(s) == logits.as_slice(),
            "sequence {s} differs when batched"
        );
    }

    // The longest prompt in three chunks, each chunk batched with decodes of the
    // other sequences (which continue after their prompts).
    let long = prompts.len() - 1;
    let p = &prompts[long];
    let cuts = [0, 5, 29, p.len()];
    let mut chunked = Vec::new();
    for (c, w) in cuts.windows(2).enumerate() {
        let mut chunks = vec![(
            p[w[0]..w[1]].to_vec(),
            w[0],
            blocks.table(long),
            w[1] == p.len(),
        )];
        for (s, q) in prompts.iter().enumerate().take(3) {
            chunks.push((vec![500 + c as u32], q.len() + c, blocks.table(s), true));
        }
        let out = runner.execute(&batch(chunks)).expect("chunked step");
        if w[1] == p.len() {
            chunked = out.row(0).to_vec();
        }
    }
    assert!(
        chunked == alone[long],
        "chunked prefill differs from one-shot prefill"
    );

    // A decode step of sequence 0 alone equals the same step inside a full batch.
    let step = |runner: &mut _, with_others: bool| -> Vec<f32> {
        let runner: &mut tessera_model::runner::ModelRunner<_> = runner;
        let mut chunks = vec![(vec![777], prompts[0].len(), blocks.table(0), true)];
        if with_others {
            for (s, q) in prompts.iter().enumerate().skip(1) {
                chunks.push((vec![900], q.len(), blocks.table(s), true));
            }
        }
        runner
            .execute(&batch(chunks))
            .expect("decode")
            .row(0)
            .to_vec()
    };
    // Rewrite the prompts' KV so the decode sees the same context both times.
    let reset = |runner: &mut tessera_model::runner::ModelRunner<_>| {
        runner
            .execute(&batch(
                prompts
                    .iter()
                    .enumerate()
                    .map(|(s, p)| (p.clone(), 0, blocks.table(s), false))
                    .collect(),
            ))
            .expect("reset");
    };
    reset(&mut runner);
    let decode_alone = step(&mut runner, false);
    reset(&mut runner);
    let decode_batched = step(&mut runner, true);
    assert!(
        decode_alone == decode_batched,
        "decode differs when batched"
    );
}
