//! Bad or unsupported model files give errors that name the file and the
//! problem; malformed batches are refused. Nothing here may panic.

mod common;

use candle_core::quantized::GgmlDType;
use candle_core::DType;
use common::tiny::{random_tensors, temp_dir, write_gguf, write_hf_dir, TINY};
use tessera_engine::Runner;
use tessera_model::backend::cpu::CpuBackend;
use tessera_model::loader::{load_bundle, load_model, ModelSource};
use tessera_model::ModelError;

fn load(path: &std::path::Path) -> Result<(), ModelError> {
    let source = ModelSource::detect(path)?;
    load_model(&CpuBackend::new(), &source, None).map(|_| ())
}

#[test]
fn gguf_missing_tensor_is_named() {
    let dir = temp_dir("missing-tensor");
    let path = dir.join("m.gguf");
    let tensors = random_tensors(TINY, 1, false);
    write_gguf(
        &path,
        TINY,
        "llama",
        GgmlDType::F32,
        &tensors,
        &["blk.1.ffn_up.weight"],
    );
    let err = load(&path).expect_err("must fail");
    assert!(
        matches!(&err, ModelError::MissingTensor { name, .. } if name == "blk.1.ffn_up.weight"),
        "{err}"
    );
    assert!(err.to_string().contains("m.gguf"), "{err}");
}

#[test]
fn gguf_shape_mismatch_is_named() {
    let dir = temp_dir("shape-mismatch");
    let path = dir.join("m.gguf");
    let mut tensors = random_tensors(TINY, 2, false);
    let k = tensors
        .iter_mut()
        .find(|(name, _, _)| name == "blk.0.attn_k.weight")
        .expect("attn_k");
    k.1[0] *= 2;
    k.2 = k.2.repeat(2);
    write_gguf(&path, TINY, "llama", GgmlDType::F32, &tensors, &[]);
    let err = load(&path).expect_err("must fail");
    assert!(
        matches!(&err, ModelError::ShapeMismatch { name, .. } if name == "blk.0.attn_k.weight"),
        "{err}"
    );
    assert!(err.to_string().contains("m.gguf"), "{err}");
}

#[test]
fn gguf_unknown_architecture_is_named() {
    let dir = temp_dir("unknown-arch");
    let path = dir.join("m.gguf");
    write_gguf(
        &path,
        TINY,
        "mamba",
        GgmlDType::F32,
        &random_tensors(TINY, 3, false),
        &[],
    );
    let err = load(&path).expect_err("must fail");
    assert!(
        matches!(&err, ModelError::UnknownArchitecture { arch, .. } if arch == "mamba"),
        "{err}"
    );
}

#[test]
fn not_a_model_file_is_refused() {
    let dir = temp_dir("garbage");
    let path = dir.join("notes.txt");
    std::fs::write(&path, b"just some text, not a model").expect("write");
    let err = load(&path).expect_err("must fail");
    assert!(err.to_string().contains("notes.txt"), "{err}");

    let missing = dir.join("nope.gguf");
    let err = load(&missing).expect_err("must fail");
    assert!(matches!(err, ModelError::Io { .. }), "{err}");
}

#[test]
fn truncated_gguf_is_an_error_not_a_panic() {
    let dir = temp_dir("truncated");
    let path = dir.join("m.gguf");
    write_gguf(
        &path,
        TINY,
        "llama",
        GgmlDType::Q8_0,
        &random_tensors(TINY, 4, false),
        &[],
    );
    let bytes = std::fs::read(&path).expect("read");
    for cut in [8, 100, bytes.len() / 2, bytes.len() - 10] {
        std::fs::write(&path, &bytes[..cut]).expect("write");
        let err = load(&path).expect_err("truncated file must fail");
        assert!(err.to_string().contains("m.gguf"), "cut at {cut}: {err}");
    }
}

#[test]
fn hf_directory_errors_are_named() {
    let dir = temp_dir("hf-errors");
    let tensors = random_tensors(TINY, 5, false);
    let model = write_hf_dir(
        &dir.join("m"),
        TINY,
        "MambaForCausalLM",
        DType::F32,
        &tensors,
    );
    let err = load(&model).expect_err("unknown architecture");
    assert!(
        matches!(err, ModelError::UnknownArchitecture { .. }),
        "{err}"
    );

    let model = write_hf_dir(
        &dir.join("m2"),
        TINY,
        "LlamaForCausalLM",
        DType::F32,
        &tensors,
    );
    std::fs::remove_file(model.join("model.safetensors")).expect("rm");
    let err = load(&model).expect_err("no weights");
    assert!(err.to_string().contains("m2"), "{err}");

    // Weights load, but a bundle also needs the tokenizer.
    let model = write_hf_dir(
        &dir.join("m3"),
        TINY,
        "LlamaForCausalLM",
        DType::F32,
        &tensors,
    );
    let source = ModelSource::detect(&model).expect("detected");
    let err = load_bundle(&CpuBackend::new(), &source, None)
        .err()
        .expect("no tokenizer.json");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn malformed_batches_are_refused() {
    let dir = temp_dir("bad-batch");
    let path = dir.join("m.gguf");
    write_gguf(
        &path,
        TINY,
        "llama",
        GgmlDType::F32,
        &random_tensors(TINY, 6, false),
        &[],
    );
    let mut runner = common::cpu_runner(&path, 4);
    let bad = [
        // A block id past the pool.
        common::batch(vec![(vec![1, 2], 0, vec![9], true)]),
        // Positions that run past the block table.
        common::batch(vec![(vec![1; 20], 0, vec![0], true)]),
        // A token id past the vocabulary.
        common::batch(vec![(vec![TINY.vocab as u32], 0, vec![0], true)]),
        // Nothing to compute.
        common::batch(vec![(vec![], 0, vec![0], true)]),
    ];
    for batch in &bad {
        let err = runner.execute(batch).expect_err("refused");
        assert!(matches!(err, ModelError::InvalidBatch(_)), "{err}");
    }
    // The runner still works afterwards.
    let ok = common::batch(vec![(vec![1, 2, 3], 0, vec![0], true)]);
    assert_eq!(runner.execute(&ok).expect("runs").rows(), 1);
}
