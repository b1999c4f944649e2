//! GGUF files: metadata and tensors, through candle's reader, with errors that name
//! the file.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use candle_core::Device;

use crate::error::{ModelError, Result};
use crate::weights::{HostMatrix, TensorSource};

/// An open GGUF file.
pub struct GgufFile {
    path: PathBuf,
    reader: BufReader<File>,
    content: Content,
}

impl GgufFile {
    /// Opens `path` and reads its header and metadata.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        let mut reader = BufReader::new(file);
        let content = guarded(path, "the header", || Content::read(&mut reader))?
            .map_err(|e| ModelError::format(path, format!("not a readable GGUF file: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            content,
        })
    }

    /// The key-value metadata.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    fn read(&mut self, name: &str) -> Result<candle_core::quantized::QTensor> {
        let (content, reader) = (&self.content, &mut self.reader);
        guarded(&self.path, &format!("tensor '{name}'"), || {
            content.tensor(reader, name, &Device::Cpu)
        })?
        .map_err(|e| ModelError::format(&self.path, format!("tensor '{name}': {e}")))
    }
}

/// Runs a step of candle's reader, turning a panic into an error. The file
/// comes from the internet and candle's reader panics on some malformed
/// headers (an alignment of 0 divides by zero; dimensions whose product
/// overflows); a bad file must be an error that names it, never a crash.
fn guarded<T>(path: &Path, what: &str, f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| {
        ModelError::format(
            path,
            format!("not a readable GGUF file: the reader failed on {what} (malformed values)"),
        )
    })
}

/// GGML types the CPU matmul can run as stored.
fn is_supported_quant(dtype: GgmlDType) -> bool {
    matches!(
        dtype,
        GgmlDType::Q4_0
            | GgmlDType::Q4_1
            | GgmlDType::Q5_0
            | GgmlDType::Q5_1
            | GgmlDType::Q8_0
            | GgmlDType::Q2K
            | GgmlDType::Q3K
            | GgmlDType::Q4K
            | GgmlDType::Q5K
            | GgmlDType::Q6K
    )
}

impl TensorSource for GgufFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn contains(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.content
            .tensor_infos
            .get(name)
            .map(|t| t.shape.dims().to_vec())
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })
    }

    fn matrix(&mut self, name: &str) -> Result<HostMatrix> {
        let qt = self.read(name)?;
        let (rows, cols) = match qt.shape().dims() {
            &[rows, cols] => (rows, cols),
            dims => {
                return Err(ModelError::format(
                    &self.path,
                    format!("tensor '{name}' is {}-D, expected a matrix", dims.len()),
                ))
            }
        };
        let dtype = qt.dtype();
        if is_supported_quant(dtype) {
            let data = qt
                .data()
                .map_err(|e| ModelError::format(&self.path, format!("tensor '{name}': {e}")))?
                .into_owned();
            return Ok(HostMatrix {
                name: name.to_string(),
                dtype,
                rows,
                cols,
                data,
            });
        }
        match dtype {
            // Dense weights run in f32 so activations keep full precision.
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                let values = dequantize(&self.path, name, &qt)?;
                Ok(HostMatrix::from_f32(name, rows, cols, &values))
            }
            other => Err(ModelError::UnsupportedDtype {
                path: self.path.clone(),
                name: name.to_string(),
                dtype: format!("{other:?}"),
            }),
        }
    }

    fn vector(&mut self, name: &str) -> Result<Vec<f32>> {
        let qt = self.read(name)?;
        dequantize(&self.path, name, &qt)
    }
}

fn dequantize(path: &Path, name: &str, qt: &candle_core::quantized::QTensor) -> Result<Vec<f32>> {
    qt.dequantize(&Device::Cpu)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_dtype(candle_core::DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| ModelError::format(path, format!("tensor '{name}': {e}")))
}
