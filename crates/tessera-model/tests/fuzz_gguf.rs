//! GGUF files come from the internet. Mutations of real headers (the default
//! model's, and a tiny model written here, loaded all the way) in the fields
//! that steer the reader: counts, string lengths, value types, array lengths,
//! tensor dimensions, types and offsets; plus truncations and flipped bytes.
//! Every case must end in a clear error or a load, with allocation bounded by
//! the file's size, no panic and no hang. The cases come from the seeds in
//! `tests/fuzz/gguf_seeds.txt`; `TESSERA_FUZZ_SCALE=n` runs n times as many.

mod common;
#[path = "fuzz/gguf_walk.rs"]
mod gguf_walk;
#[path = "fuzz/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use common::tiny::{random_tensors, temp_dir, write_gguf, TINY};
use gguf_walk::{Field, Kind};
use harness::{run_cases, Rng};
use tessera_model::backend::cpu::CpuBackend;
use tessera_model::chat::{self, ChatTemplate};
use tessera_model::config::ModelConfig;
use tessera_model::gguf::GgufFile;
use tessera_model::loader::{load_model, ModelSource};
use tessera_model::tokenizer::Tokenizer;

#[global_allocator]
static METER: harness::Meter = harness::Meter;

/// The seeds file's `(target, seed, cases)` lines.
fn seeds(target: &str) -> Vec<(u64, usize)> {
    let path = common::repo_root().join("crates/tessera-model/tests/fuzz/gguf_seeds.txt");
    let text = std::fs::read_to_string(&path).expect("seeds file");
    let scale: usize = std::env::var("TESSERA_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next()? == target).then_some(())?;
            let seed = parts.next()?.parse().ok()?;
            let cases: usize = parts.next()?.parse().ok()?;
            Some((seed, cases * scale))
        })
        .collect()
}

/// A value for a field, from the ones that break readers most often.
fn pick(kind: Kind, old: u64, file_len: u64, rng: &mut Rng) -> u64 {
    if kind.width() == 4 {
        let choices = [
            0,
            1,
            old + 1,
            old.wrapping_sub(1),
            13,
            31,
            1 << 31,
            u32::MAX as u64,
        ];
        return match rng.below(choices.len() + 1) {
            i if i < choices.len() => choices[i] & 0xFFFF_FFFF,
            _ => rng.next() % 64,
        };
    }
    let choices = [
        0,
        1,
        old.wrapping_add(1),
        old.wrapping_sub(1),
        old.wrapping_mul(2),
        old.wrapping_mul(1 << 20),
        file_len,
        u32::MAX as u64,
        1 << 32,
        1 << 40,
        i64::MAX as u64,
        u64::MAX,
    ];
    match rng.below(choices.len() + 1) {
        i if i < choices.len() => choices[i],
        _ => rng.next(),
    }
}

/// One mutant of `bytes`: a field set to a hostile value (most cases), a
/// truncation, or a few flipped bytes. Also says whether only the metadata
/// section changed.
fn mutate(bytes: &[u8], fields: &[Field], rng: &mut Rng) -> (Vec<u8>, String, bool) {
    let mut out = bytes.to_vec();
    let roll = rng.below(20);
    if roll == 0 {
        let at = rng.below(out.len());
        out.truncate(at);
        return (out, format!("truncated at {at}"), false);
    }
    if roll == 1 {
        let header = gguf_walk::header_len(bytes).unwrap_or(bytes.len());
        let mut what = String::from("flipped");
        for _ in 0..4 {
            let at = rng.below(header);
            out[at] ^= 1 << rng.below(8);
            what.push_str(&format!(" {at}"));
        }
        return (out, what, false);
    }
    let field = fields[rng.below(fields.len())];
    let width = field.kind.width();
    let slot = &mut out[field.at..field.at + width];
    let old = if width == 4 {
        u64::from(u32::from_le_bytes(slot.try_into().expect("4 bytes")))
    } else {
        u64::from_le_bytes(slot.try_into().expect("8 bytes"))
    };
    let new = pick(field.kind, old, bytes.len() as u64, rng);
    if width == 4 {
        slot.copy_from_slice(&(new as u32).to_le_bytes());
    } else {
        slot.copy_from_slice(&new.to_le_bytes());
    }
    let what = format!("{:?} at {} {old} -> {new}", field.kind, field.at);
    (out, what, field.in_metadata)
}

/// Everything tessera reads from a GGUF header: config, tokenizer, template.
fn read_header(path: &Path, with_tokenizer: bool) -> Result<(), String> {
    let file = GgufFile::open(path).map_err(|e| e.to_string())?;
    let md = file.metadata();
    let config = ModelConfig::from_gguf(path, md).map(|_| ());
    let (bos, eos) = chat::gguf_special_tokens(md);
    let template = ChatTemplate::from_gguf(md, bos, eos).map(|_| ());
    let tokenizer = if with_tokenizer {
        Tokenizer::from_gguf(path, md).map(|_| ())
    } else {
        Ok(())
    };
    config
        .and(template)
        .and(tokenizer)
        .map_err(|e| e.to_string())
}

/// Errors must name the file they are about when they come from reading it.
fn names_the_file(path: &Path, r: Result<(), String>) -> Result<(), String> {
    match r {
        Err(e)
            if e.contains("not a readable GGUF file") && !e.contains(&*path.to_string_lossy()) =>
        {
            Err(format!("unnamed: {e}"))
        }
        other => other,
    }
}

fn run_target(
    target: &str,
    base: Vec<u8>,
    dir: PathBuf,
    load: fn(&Path, bool) -> Result<(), String>,
) {
    let fields = gguf_walk::fields(&base).expect("the base file walks");
    // What reading the genuine file takes: a mutant may not need much more,
    // whatever its length fields claim.
    let base_path = dir.join("base.gguf");
    std::fs::write(&base_path, &base).expect("write the base");
    let (genuine, baseline) = harness::peak_of(|| load(&base_path, true));
    assert_eq!(genuine, Ok(()), "{target}: the unmutated file must load");
    let limit = 2 * baseline + (32 << 20);
    for (seed, cases) in seeds(target) {
        let (base, fields, dir) = (base.clone(), fields.clone(), dir.clone());
        let errors = run_cases(
            &format!("{target} seed {seed}"),
            cases,
            move |_| limit,
            move |i| {
                let mut rng = Rng(seed ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
                let (bytes, what, metadata_only) = mutate(&base, &fields, &mut rng);
                let path = dir.join(format!("case-{}.gguf", i % 4));
                std::fs::write(&path, &bytes).expect("write the case");
                let r = names_the_file(&path, load(&path, metadata_only));
                let r = r.map_err(|e| {
                    if e.is_empty() {
                        e
                    } else {
                        format!("{what}: {e}")
                    }
                });
                (what, r)
            },
        );
        // Most mutations must be caught; a fuzzer that never reaches an error
        // tests nothing.
        assert!(
            errors * 4 >= cases,
            "{target} seed {seed}: only {errors} errors in {cases} cases"
        );
    }
}

#[test]
fn mutated_default_model_headers_fail_cleanly() {
    let model = std::fs::read(common::default_model()).expect("default model");
    let header = gguf_walk::header_len(&model).expect("the default model's header walks");
    // The header and a little data: tensor offsets point past the end, so
    // the file's real size bounds what may be read.
    let base = model[..header + 4096].to_vec();
    run_target(
        "default",
        base,
        temp_dir("fuzz-gguf-default"),
        |path, metadata_only| {
            // The tokenizer (49k tokens) only when its metadata may have changed.
            read_header(path, metadata_only)
        },
    );
}

#[test]
fn mutated_tiny_models_fail_cleanly_or_load() {
    let dir = temp_dir("fuzz-gguf-tiny");
    let path = dir.join("base.gguf");
    write_gguf(
        &path,
        TINY,
        "llama",
        GgmlDType::Q8_0,
        &random_tensors(TINY, 3, false),
        &[],
    );
    let base = std::fs::read(&path).expect("tiny model");
    run_target("tiny", base, dir, |path, _| {
        let source = ModelSource::detect(path).map_err(|e| e.to_string())?;
        load_model(&CpuBackend::new(), &source, None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
}

#[test]
fn an_alignment_of_zero_is_an_error_not_a_crash() {
    let dir = temp_dir("fuzz-gguf-align");
    let path = dir.join("m.gguf");
    write_gguf(
        &path,
        TINY,
        "llama",
        GgmlDType::F32,
        &random_tensors(TINY, 4, false),
        &[],
    );
    let mut bytes = std::fs::read(&path).expect("tiny model");
    let fields = gguf_walk::fields(&bytes).expect("walks");
    // The tensor infos start with the first field past the metadata.
    let tensors_at = fields
        .iter()
        .skip(2)
        .find(|f| !f.in_metadata)
        .expect("a tensor")
        .at;
    let mut kv = Vec::new();
    let key = b"general.alignment";
    kv.extend_from_slice(&(key.len() as u64).to_le_bytes());
    kv.extend_from_slice(key);
    kv.extend_from_slice(&4u32.to_le_bytes());
    kv.extend_from_slice(&0u32.to_le_bytes());
    bytes.splice(tensors_at..tensors_at, kv);
    let kvs = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")) + 1;
    bytes[16..24].copy_from_slice(&kvs.to_le_bytes());
    std::fs::write(&path, &bytes).expect("write");
    let err = GgufFile::open(&path).err().expect("must fail").to_string();
    assert!(
        err.contains("m.gguf") && err.contains("not a readable GGUF file"),
        "{err}"
    );
}
