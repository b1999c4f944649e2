//! Hugging Face model directories come from the internet too. Mutations of a
//! tiny model's `model.safetensors` (its header length and JSON header),
//! `config.json` and `tokenizer.json` (nodes replaced by hostile values,
//! deleted or doubled; truncations; flipped bytes): every case must end in a
//! clear error or a load, with allocation bounded, no panic and no hang.
//! Seeds are in `tests/fuzz/hf_seeds.txt`; `TESSERA_FUZZ_SCALE=n` runs n
//! times as many cases.

mod common;
#[path = "fuzz/harness.rs"]
mod harness;
#[path = "fuzz/json_mutate.rs"]
mod json_mutate;

use std::path::{Path, PathBuf};

use candle_core::DType;
use common::tiny::{random_tensors, temp_dir, write_hf_dir, TINY};
use harness::{run_cases, Rng};
use serde_json::Value;
use tessera_model::backend::cpu::CpuBackend;
use tessera_model::loader::{read_config, ModelSource};
use tessera_model::tokenizer::Tokenizer;

#[global_allocator]
static METER: harness::Meter = harness::Meter;

fn seeds(target: &str) -> Vec<(u64, usize)> {
    let path = common::repo_root().join("crates/tessera-model/tests/fuzz/hf_seeds.txt");
    let text = std::fs::read_to_string(&path).expect("seeds file");
    let scale: usize = std::env::var("TESSERA_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next()? == target).then_some(())?;
            Some((
                parts.next()?.parse().ok()?,
                parts.next()?.parse::<usize>().ok()? * scale,
            ))
        })
        .collect()
}

/// A tiny model directory with a tokenizer.
fn model_dir(tag: &str) -> PathBuf {
    let dir = temp_dir(tag);
    write_hf_dir(
        &dir,
        TINY,
        "LlamaForCausalLM",
        DType::F32,
        &random_tensors(TINY, 5, false),
    );
    let tokenizer = common::repo_root().join("crates/tessera-model/tests/fuzz/tokenizer.json");
    std::fs::copy(tokenizer, dir.join("tokenizer.json")).expect("tokenizer.json");
    dir
}

fn load_model(dir: &Path) -> Result<(), String> {
    let source = ModelSource::detect(dir).map_err(|e| e.to_string())?;
    read_config(&source).map_err(|e| e.to_string())?;
    tessera_model::loader::load_model(&CpuBackend::new(), &source, None)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn load_tokenizer(dir: &Path) -> Result<(), String> {
    let t = Tokenizer::from_hf_dir(dir).map_err(|e| e.to_string())?;
    let ids = t
        .encode("<s>hello world</s>", true)
        .map_err(|e| e.to_string())?;
    t.decode(&ids, false).map(|_| ()).map_err(|e| e.to_string())
}

/// Truncation or flipped bytes of `bytes`, for one case in ten.
fn raw_mutation(bytes: &[u8], rng: &mut Rng) -> Option<(Vec<u8>, String)> {
    match rng.below(10) {
        0 => {
            let at = rng.below(bytes.len());
            Some((bytes[..at].to_vec(), format!("truncated at {at}")))
        }
        1 => {
            let mut out = bytes.to_vec();
            let at = rng.below(out.len().min(4096));
            out[at] ^= 1 << rng.below(8);
            Some((out, format!("flipped a bit at {at}")))
        }
        _ => None,
    }
}

/// A mutant of a safetensors file: its header length, or its JSON header.
fn mutate_safetensors(bytes: &[u8], rng: &mut Rng) -> (Vec<u8>, String) {
    if let Some(m) = raw_mutation(bytes, rng) {
        return m;
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let (header, data) = (&bytes[8..8 + n], &bytes[8 + n..]);
    if rng.below(5) == 0 {
        let lens = [
            0,
            1,
            n as u64 - 1,
            n as u64 + 1,
            bytes.len() as u64,
            1 << 40,
            u64::MAX,
        ];
        let len = lens[rng.below(lens.len())];
        let mut out = bytes.to_vec();
        out[..8].copy_from_slice(&len.to_le_bytes());
        return (out, format!("header length {n} -> {len}"));
    }
    let doc: Value = serde_json::from_slice(header).expect("the header is JSON");
    let (doc, what) = json_mutate::mutate(&doc, rng);
    let header = doc.to_string().into_bytes();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    (out, what)
}

/// A mutant of a JSON file.
fn mutate_json(bytes: &[u8], rng: &mut Rng) -> (Vec<u8>, String) {
    if let Some(m) = raw_mutation(bytes, rng) {
        return m;
    }
    let doc: Value = serde_json::from_slice(bytes).expect("the file is JSON");
    let (doc, what) = json_mutate::mutate(&doc, rng);
    (doc.to_string().into_bytes(), what)
}

fn run_target(
    target: &str,
    file: &str,
    mutate: fn(&[u8], &mut Rng) -> (Vec<u8>, String),
    load: fn(&Path) -> Result<(), String>,
) {
    let dir = model_dir(&format!("fuzz-hf-{target}"));
    let path = dir.join(file);
    let base = std::fs::read(&path).expect("the base file");
    let (genuine, baseline) = harness::peak_of(|| load(&dir));
    assert_eq!(genuine, Ok(()), "{target}: the unmutated model must load");
    let limit = 2 * baseline + (32 << 20);
    for (seed, cases) in seeds(target) {
        let (base, dir, path) = (base.clone(), dir.clone(), path.clone());
        let errors = run_cases(
            &format!("{target} seed {seed}"),
            cases,
            move |_| limit,
            move |i| {
                let mut rng = Rng(seed ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
                let (bytes, what) = mutate(&base, &mut rng);
                if std::env::var_os("TESSERA_FUZZ_VERBOSE").is_some() {
                    eprintln!("case {i}: {what}");
                }
                std::fs::write(&path, &bytes).expect("write the case");
                let r = load(&dir).map_err(|e| format!("{what}: {e}"));
                (what, r)
            },
        );
        assert!(
            errors * 5 >= cases,
            "{target} seed {seed}: only {errors} errors in {cases} cases"
        );
    }
}

#[test]
fn mutated_safetensors_fail_cleanly_or_load() {
    run_target(
        "safetensors",
        "model.safetensors",
        mutate_safetensors,
        load_model,
    );
}

#[test]
fn mutated_config_json_fails_cleanly_or_loads() {
    run_target("config", "config.json", mutate_json, load_model);
}

#[test]
fn mutated_tokenizer_json_fails_cleanly_or_loads() {
    run_target("tokenizer", "tokenizer.json", mutate_json, load_tokenizer);
}
