//! Linear layers on the GPU: the weight dequantized on the host to bf16 at
//! upload (any GGML type candle reads: f32, f16, bf16 and the quantized
//! blocks), fused parts stacked into one `[out, in]` matrix, and the bias kept
//! in both output types of [`super::gemm::Gemm`] (bf16 for the layers, f32
//! for the LM head's logits).
//!
//! bf16 weights are 2 bytes per value however the file stores them: a 4-bit
//! GGUF takes about four times its file size in GPU memory. Quantized GEMMs
//! on the GPU are later work.

use std::borrow::Cow;

use candle_core::quantized::GgmlDType;
use candle_core::CpuStorage;
use cudarc::driver::CudaSlice;

use crate::weights::HostMatrix;

use super::error::CudaBackendError;
use super::memory::DeviceMemory;
use super::tensor::{f32_to_bf16_bits, Buffer};

/// Host memory a dequantization step may take (f32 values of a row chunk).
const CHUNK_BYTES: usize = 64 << 20;

/// A weight matrix `[rows, cols]` in bf16 on the device, plus an optional bias.
pub struct CudaLinear {
    pub(crate) weight: CudaSlice<u16>,
    rows: usize,
    cols: usize,
    pub(crate) bias: Option<Bias>,
    name: String,
    source: GgmlDType,
}

/// A bias in both output types.
pub(crate) struct Bias {
    pub bf16: Buffer,
    pub f32: Buffer,
}

impl CudaLinear {
    /// Checks the parts (equal input widths, whole blocks, byte counts that
    /// match their shapes), dequantizes and uploads them.
    pub(crate) fn upload(
        memory: &DeviceMemory,
        parts: Vec<HostMatrix>,
        bias: Option<Vec<f32>>,
    ) -> Result<Self, CudaBackendError> {
        let Some(first) = parts.first() else {
            return Err(CudaBackendError::Shape(
                "linear layer with no weights".into(),
            ));
        };
        let (cols, source) = (first.cols, first.dtype);
        let name = parts
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join("+");
        for p in &parts {
            check(p, cols)?;
        }
        let rows: usize = parts.iter().map(|p| p.rows).sum();
        if let Some(b) = &bias {
            if b.len() != rows {
                return Err(CudaBackendError::Shape(format!(
                    "{name}: bias of {} values for {rows} outputs",
                    b.len()
                )));
            }
        }
        let mut values = Vec::with_capacity(rows * cols);
        for p in &parts {
            dequantize_bf16_into(p, &mut values)?;
        }
        let weight = memory.upload(&values)?;
        let bias = bias
            .map(|b| -> Result<Bias, CudaBackendError> {
                Ok(Bias {
                    bf16: Buffer::Bf16(memory.upload(&f32_to_bf16_bits(&b))?),
                    f32: Buffer::F32(memory.upload(&b)?),
                })
            })
            .transpose()?;
        Ok(Self {
            weight,
            rows,
            cols,
            bias,
            name,
            source,
        })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The tensor names it was built from, `+`-joined.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first part's type in the file (the device holds bf16).
    pub fn source_dtype(&self) -> GgmlDType {
        self.source
    }
}

/// An error unless `p` is `cols` wide, in whole blocks, with the bytes its
/// shape implies.
fn check(p: &HostMatrix, cols: usize) -> Result<(), CudaBackendError> {
    let bad = |message: String| CudaBackendError::Weights {
        name: p.name.clone(),
        message,
    };
    if p.cols != cols {
        return Err(bad(format!(
            "{} inputs cannot be stacked with {cols}",
            p.cols
        )));
    }
    if p.cols == 0 || !p.cols.is_multiple_of(p.dtype.block_size()) {
        return Err(bad(format!(
            "{} inputs are not whole {:?} blocks",
            p.cols, p.dtype
        )));
    }
    let expected = p.rows.checked_mul(p.row_bytes());
    if expected != Some(p.data.len()) {
        return Err(bad(format!(
            "{} bytes do not hold {}x{} {:?} values",
            p.data.len(),
            p.rows,
            p.cols,
            p.dtype
        )));
    }
    Ok(())
}

/// Appends `p`'s values, row after row, as bf16 bit patterns. `p` must have
/// passed [`check`].
pub(crate) fn dequantize_bf16_into(
    p: &HostMatrix,
    out: &mut Vec<u16>,
) -> Result<(), CudaBackendError> {
    let row_bytes = p.row_bytes();
    match p.dtype {
        GgmlDType::F32 => {
            out.extend(p.data.chunks_exact(4).map(|b| {
                half::bf16::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])).to_bits()
            }))
        }
        GgmlDType::F16 => out.extend(p.data.chunks_exact(2).map(|b| {
            half::bf16::from_f32(half::f16::from_le_bytes([b[0], b[1]]).to_f32()).to_bits()
        })),
        GgmlDType::BF16 => out.extend(
            p.data
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]])),
        ),
        dtype => {
            let rows_per_chunk = (CHUNK_BYTES / (4 * p.cols)).max(1);
            for chunk in p.data.chunks(rows_per_chunk * row_bytes) {
                let values = dequantize_blocks(dtype, chunk, chunk.len() / row_bytes * p.cols)
                    .map_err(|message| CudaBackendError::Weights {
                        name: p.name.clone(),
                        message,
                    })?;
                out.extend(f32_to_bf16_bits(&values));
            }
        }
    }
    Ok(())
}

/// `count` values of GGML blocks of `dtype`, by candle's dequantization.
fn dequantize_blocks(dtype: GgmlDType, bytes: &[u8], count: usize) -> Result<Vec<f32>, String> {
    // candle reads the blocks in place and asserts their alignment (2 or 4
    // bytes: their f16 / f32 scales); a copy into u32s is 4-byte aligned.
    let aligned: Cow<[u8]> = if (bytes.as_ptr() as usize).is_multiple_of(4) {
        Cow::Borrowed(bytes)
    } else {
        Cow::Owned(realigned(bytes))
    };
    let blocks = dtype.from_data(Cow::Borrowed(&aligned[..bytes.len()]));
    match blocks.dequantize(count).map_err(|e| e.to_string())? {
        CpuStorage::F32(values) => Ok(values),
        _ => Err(format!("{dtype:?} did not dequantize to f32")),
    }
}

/// `bytes` copied to a 4-byte-aligned buffer (possibly longer, zero-padded).
fn realigned(bytes: &[u8]) -> Vec<u8> {
    let words: Vec<u32> = bytes
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_ne_bytes(w)
        })
        .collect();
    let mut out = Vec::with_capacity(words.len() * 4);
    for w in words {
        out.extend_from_slice(&w.to_ne_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::tensor::bf16_bits_to_f32;

    fn quantized(dtype: GgmlDType, rows: usize, cols: usize) -> (HostMatrix, Vec<f32>) {
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let t = candle_core::Tensor::from_vec(values, (rows, cols), &candle_core::Device::Cpu)
            .expect("tensor");
        let q = candle_core::quantized::QTensor::quantize(&t, dtype).expect("quantizes");
        let data = q.data().expect("bytes").to_vec();
        let candle = dtype.from_data(Cow::Owned(data.clone()));
        let CpuStorage::F32(reference) = candle.dequantize(rows * cols).expect("dequantizes")
        else {
            panic!("f32");
        };
        let m = HostMatrix {
            name: "w".into(),
            dtype,
            rows,
            cols,
            data,
        };
        (m, reference)
    }

    /// Every storage type dequantizes to candle's values rounded to bf16,
    /// in chunks of rows and from unaligned bytes alike.
    #[test]
    fn dequantizes_to_candles_values_in_bf16() {
        for dtype in [
            GgmlDType::F32,
            GgmlDType::F16,
            GgmlDType::BF16,
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let (m, reference) = quantized(dtype, 6, 256);
            check(&m, 256).expect("well formed");
            let mut out = Vec::new();
            dequantize_bf16_into(&m, &mut out).expect("dequantizes");
            assert_eq!(
                bf16_bits_to_f32(&out),
                bf16_bits_to_f32(&f32_to_bf16_bits(&reference)),
                "{dtype:?}"
            );
        }
        let (m, reference) = quantized(GgmlDType::Q8_0, 3, 64);
        let mut shifted = vec![0u8; m.data.len() + 1];
        shifted[1..].copy_from_slice(&m.data);
        let values = dequantize_blocks(GgmlDType::Q8_0, &shifted[1..], 3 * 64).expect("ok");
        assert_eq!(values, reference);
    }

    #[test]
    fn malformed_matrices_are_errors_naming_them() {
        let (mut m, _) = quantized(GgmlDType::Q8_0, 2, 64);
        m.data.pop();
        let msg = check(&m, 64).unwrap_err().to_string();
        assert!(msg.starts_with("w: ") && msg.contains("bytes"), "{msg}");
        let (m, _) = quantized(GgmlDType::Q8_0, 2, 64);
        assert!(check(&m, 128).unwrap_err().to_string().contains("stacked"));
    }
}
