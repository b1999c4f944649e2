//! Finding and loading a model from a path: a GGUF file or a Hugging Face directory.

use std::path::{Path, PathBuf};

use crate::backend::Backend;
use crate::chat::{self, ChatTemplate};
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::families::decoder::DecoderModel;
use crate::families::{CausalLm, Forward};
use crate::gguf::GgufFile;
use crate::safetensors::SafetensorsDir;
use crate::tokenizer::Tokenizer;
use crate::weights::{load_weights, TensorSource};

/// Where a model's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// One GGUF file: weights, tokenizer and chat template.
    Gguf(PathBuf),
    /// A Hugging Face directory: config.json, tokenizer.json, *.safetensors.
    HfDir(PathBuf),
}

impl ModelSource {
    /// Recognizes a GGUF file or a directory with a `config.json`.
    pub fn detect(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| ModelError::io(path, e))?;
        if meta.is_dir() {
            if path.join("config.json").is_file() {
                return Ok(Self::HfDir(path.to_path_buf()));
            }
            return Err(ModelError::format(
                path,
                "directory has no config.json (expected a Hugging Face model directory)",
            ));
        }
        let mut magic = [0u8; 4];
        let read = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .map_err(|e| ModelError::io(path, e));
        match read {
            Ok(()) if &magic == b"GGUF" => Ok(Self::Gguf(path.to_path_buf())),
            Ok(()) => Err(ModelError::format(
                path,
                "not a GGUF file (bad magic) nor a model directory",
            )),
            Err(e) => Err(e),
        }
    }

    /// The file or directory.
    pub fn path(&self) -> &Path {
        match self {
            Self::Gguf(p) | Self::HfDir(p) => p,
        }
    }
}

/// A model's configuration from its header alone, without its weights: what
/// sizing its memory takes before it is loaded.
pub fn read_config(source: &ModelSource) -> Result<ModelConfig> {
    match source {
        ModelSource::Gguf(path) => {
            let file = GgufFile::open(path)?;
            ModelConfig::from_gguf(path, file.metadata())
        }
        ModelSource::HfDir(dir) => {
            let config_path = dir.join("config.json");
            let text = std::fs::read_to_string(&config_path)
                .map_err(|e| ModelError::io(&config_path, e))?;
            ModelConfig::from_hf_json(&config_path, &text)
        }
    }
}

/// Bytes of a model's weight files on disk: the GGUF file, or a
/// directory's `*.safetensors`.
pub fn weight_file_bytes(source: &ModelSource) -> Result<u64> {
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| ModelError::io(p, e))
    };
    match source {
        ModelSource::Gguf(path) => size(path),
        ModelSource::HfDir(dir) => {
            let entries = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?;
            let mut total = 0;
            for entry in entries {
                let path = entry.map_err(|e| ModelError::io(dir, e))?.path();
                if path.extension().is_some_and(|e| e == "safetensors") {
                    total += size(&path)?;
                }
            }
            Ok(total)
        }
    }
}

/// A loaded model with what turns text into its tokens and back.
pub struct ModelBundle<B: Backend> {
    /// The network, weights on the backend.
    pub model: Box<dyn CausalLm<B>>,
    /// The model's tokenizer.
    pub tokenizer: Tokenizer,
    /// The model's chat template, if it has one.
    pub chat_template: Option<ChatTemplate>,
}

/// Loads weights, tokenizer and chat template; a GGUF file is read once for all
/// three. The rotary table and every later bound use `max_model_len`, capped by
/// the model's own context.
pub fn load_bundle<B: Backend>(
    backend: &B,
    source: &ModelSource,
    max_model_len: Option<usize>,
) -> Result<ModelBundle<B>> {
    match source {
        ModelSource::Gguf(path) => {
            let mut file = GgufFile::open(path)?;
            let tokenizer = Tokenizer::from_gguf(path, file.metadata())?;
            let (bos, eos) = chat::gguf_special_tokens(file.metadata());
            let chat_template =
                ChatTemplate::from_gguf(file.metadata(), bos, eos).map_err(|e| in_file(path, e))?;
            let model = load_gguf_model(backend, path, &mut file, max_model_len)?;
            Ok(ModelBundle {
                model,
                tokenizer,
                chat_template,
            })
        }
        ModelSource::HfDir(dir) => Ok(ModelBundle {
            tokenizer: Tokenizer::from_hf_dir(dir)?,
            chat_template: ChatTemplate::from_hf_dir(dir).map_err(|e| in_file(dir, e))?,
            model: load_model(backend, source, max_model_len)?,
        }),
    }
}

/// Reads a model's configuration and weights onto `backend` (no tokenizer),
/// as the forward of its family.
pub fn load_model<B: Backend>(
    backend: &B,
    source: &ModelSource,
    max_model_len: Option<usize>,
) -> Result<Box<dyn CausalLm<B>>> {
    match source {
        ModelSource::Gguf(path) => {
            let mut file = GgufFile::open(path)?;
            load_gguf_model(backend, path, &mut file, max_model_len)
        }
        ModelSource::HfDir(dir) => {
            let config_path = dir.join("config.json");
            let text = std::fs::read_to_string(&config_path)
                .map_err(|e| ModelError::io(&config_path, e))?;
            let config = ModelConfig::from_hf_json(&config_path, &text)?;
            let mut files = SafetensorsDir::open(dir, config.family)?;
            build(backend, config, &mut files, max_model_len)
        }
    }
}

fn load_gguf_model<B: Backend>(
    backend: &B,
    path: &Path,
    file: &mut GgufFile,
    max_model_len: Option<usize>,
) -> Result<Box<dyn CausalLm<B>>> {
    let config = ModelConfig::from_gguf(path, file.metadata())?;
    build(backend, config, file, max_model_len)
}

/// Loads the weights of `config`'s model from `src` into its family's forward.
fn build<B: Backend>(
    backend: &B,
    mut config: ModelConfig,
    src: &mut dyn TensorSource,
    max_model_len: Option<usize>,
) -> Result<Box<dyn CausalLm<B>>> {
    let max_len = max_model_len
        .unwrap_or(config.trained_context_len)
        .min(config.trained_context_len);
    config.max_model_len = max_len;
    match config.family.forward {
        Forward::Decoder => {
            let weights = load_weights(backend, src, &mut config)?;
            Ok(Box::new(DecoderModel::new(
                backend, config, weights, max_len,
            )?))
        }
    }
}

/// Template errors name the model they came from.
fn in_file(path: &Path, e: ModelError) -> ModelError {
    match e {
        ModelError::Template(msg) => ModelError::Template(format!("{}: {msg}", path.display())),
        other => other,
    }
}
