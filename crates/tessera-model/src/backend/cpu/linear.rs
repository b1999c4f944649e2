//! Linear layers on the CPU: row-by-column dot products, by our kernels for
//! Q4_0, Q4_1, Q8_0, Q4_K and Q6_K or by candle's quantized (and f32) matmuls
//! for the other types.
//!
//! Each output element is one dot product of an activation row with a weight row,
//! whatever the batch size, so results are batch-invariant.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QuantizedType};
use candle_core::CpuStorage;

use crate::error::{ModelError, Result};
use crate::weights::HostMatrix;

use super::qmatmul::{Q4KMatrix, Q4_0Matrix, Q4_1Matrix, Q6KMatrix, Q8_0Matrix};
use super::CpuTensor;

/// One weight matrix.
struct Part {
    weights: Weights,
    rows: usize,
}

/// Where a matrix's blocks live and which code multiplies them.
enum Weights {
    /// Our kernel (exact integer dots; candle's activations, its own float order).
    Q4_0(Q4_0Matrix),
    /// Our kernel (same bits as candle's, batched better).
    Q4_1(Q4_1Matrix),
    /// Our kernel (same bits as candle's AVX2 path, batched better).
    Q8_0(Q8_0Matrix),
    /// Our kernel (exact integer dots; candle's activations, its own float order).
    Q4K(Q4KMatrix),
    /// Our kernel (exact integer dots; candle's activations, its own float order).
    Q6K(Q6KMatrix),
    /// Every other type, in candle's block storage.
    Candle(Box<dyn QuantizedType>),
}

impl Weights {
    fn new(p: HostMatrix) -> Result<Self> {
        let named = |e: String| ModelError::Backend(format!("{}: {e}", p.name));
        Ok(match p.dtype {
            GgmlDType::Q4_0 => {
                Self::Q4_0(Q4_0Matrix::from_gguf_bytes(&p.data, p.rows, p.cols).map_err(named)?)
            }
            GgmlDType::Q4_1 => {
                Self::Q4_1(Q4_1Matrix::from_gguf_bytes(&p.data, p.rows, p.cols).map_err(named)?)
            }
            GgmlDType::Q8_0 => {
                Self::Q8_0(Q8_0Matrix::from_gguf_bytes(&p.data, p.rows, p.cols).map_err(named)?)
            }
            GgmlDType::Q4K => {
                Self::Q4K(Q4KMatrix::from_gguf_bytes(&p.data, p.rows, p.cols).map_err(named)?)
            }
            GgmlDType::Q6K => {
                Self::Q6K(Q6KMatrix::from_gguf_bytes(&p.data, p.rows, p.cols).map_err(named)?)
            }
            _ => Self::Candle(p.dtype.from_data(Cow::Owned(p.data))),
        })
    }

    /// `dst = lhs @ W^T` for `lhs` of `m` rows of `k`, W of `n` rows.
    fn matmul_t(
        &self,
        (m, k, n): (usize, usize, usize),
        lhs: &[f32],
        dst: &mut [f32],
    ) -> Result<()> {
        // Our kernels take the shape from the matrix and `m`.
        macro_rules! ours {
            ($w:expr) => {{
                debug_assert_eq!(($w.rows(), lhs.len()), (n, m * k));
                $w.matmul_t(lhs, m, dst);
                Ok(())
            }};
        }
        match self {
            Self::Q4_0(w) => ours!(w),
            Self::Q4_1(w) => ours!(w),
            Self::Q8_0(w) => ours!(w),
            Self::Q4K(w) => ours!(w),
            Self::Q6K(w) => ours!(w),
            Self::Candle(w) => w
                .matmul_t((m, k, n), lhs, dst)
                .map_err(|e| ModelError::Backend(e.to_string())),
        }
    }

    fn dtype(&self) -> GgmlDType {
        match self {
            Self::Q4_0(_) => GgmlDType::Q4_0,
            Self::Q4_1(_) => GgmlDType::Q4_1,
            Self::Q8_0(_) => GgmlDType::Q8_0,
            Self::Q4K(_) => GgmlDType::Q4K,
            Self::Q6K(_) => GgmlDType::Q6K,
            Self::Candle(w) => w.dtype(),
        }
    }
}

/// A linear layer: one or more weight matrices whose outputs are concatenated,
/// plus an optional bias.
pub struct CpuLinear {
    parts: Vec<Part>,
    cols: usize,
    rows: usize,
    bias: Option<Vec<f32>>,
}

impl CpuLinear {
    /// Builds the layer, fusing the parts into one matrix when they share a type
    /// (rows of a GGML matrix are independent runs of blocks, so stacking the byte
    /// buffers stacks the matrices).
    pub fn new(mut parts: Vec<HostMatrix>, bias: Option<Vec<f32>>) -> Result<Self> {
        let Some(first) = parts.first() else {
            return Err(ModelError::Backend("linear layer with no weights".into()));
        };
        let cols = first.cols;
        let dtype = first.dtype;
        for p in &parts {
            if p.cols != cols {
                return Err(ModelError::Backend(format!(
                    "cannot stack {} ({} inputs) with {} inputs",
                    p.name, p.cols, cols
                )));
            }
            if !p.cols.is_multiple_of(p.dtype.block_size())
                || p.data.len() != p.rows * p.row_bytes()
            {
                return Err(ModelError::Backend(format!(
                    "{}: {} bytes do not hold {}x{} {:?} values",
                    p.name,
                    p.data.len(),
                    p.rows,
                    p.cols,
                    p.dtype
                )));
            }
        }
        if parts.len() > 1 && parts.iter().all(|p| p.dtype == dtype) {
            let rows = parts.iter().map(|p| p.rows).sum();
            let mut data = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
            for p in &parts {
                data.extend_from_slice(&p.data);
            }
            parts = vec![HostMatrix {
                name: parts
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join("+"),
                dtype,
                rows,
                cols,
                data,
            }];
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        if let Some(b) = &bias {
            if b.len() != rows {
                return Err(ModelError::Backend(format!(
                    "bias of {} values for {rows} outputs",
                    b.len()
                )));
            }
        }
        let parts = parts
            .into_iter()
            .map(|p| {
                let rows = p.rows;
                Ok(Part {
                    weights: Weights::new(p)?,
                    rows,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            parts,
            cols,
            rows,
            bias,
        })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `x @ W^T + b`.
    pub fn forward(&self, x: &CpuTensor) -> Result<CpuTensor> {
        if x.cols != self.cols {
            return Err(ModelError::Backend(format!(
                "linear layer takes {} inputs, got {}",
                self.cols, x.cols
            )));
        }
        let m = x.rows;
        let mut out = vec![0f32; m * self.rows];
        if m == 0 {
            return Ok(CpuTensor::new(out, 0, self.rows));
        }
        if let [part] = &self.parts[..] {
            part.weights
                .matmul_t((m, self.cols, part.rows), &x.data, &mut out)?;
        } else {
            let mut col0 = 0;
            for part in &self.parts {
                let mut tmp = vec![0f32; m * part.rows];
                part.weights
                    .matmul_t((m, self.cols, part.rows), &x.data, &mut tmp)?;
                for (dst, src) in out.chunks_mut(self.rows).zip(tmp.chunks(part.rows)) {
                    dst[col0..col0 + part.rows].copy_from_slice(src);
                }
                col0 += part.rows;
            }
        }
        if let Some(bias) = &self.bias {
            for row in out.chunks_mut(self.rows) {
                for (o, b) in row.iter_mut().zip(bias) {
                    *o += b;
                }
            }
        }
        Ok(CpuTensor::new(out, m, self.rows))
    }

    /// Dequantized rows `ids` of the (single-part) matrix: an embedding lookup.
    pub fn gather(&self, ids: &[u32]) -> Result<CpuTensor> {
        let [part] = &self.parts[..] else {
            return Err(ModelError::Backend(
                "embedding table must be one matrix".into(),
            ));
        };
        let dequantize_row: &dyn Fn(usize, &mut [f32]) = match &part.weights {
            Weights::Q4_0(w) => &|id, row| w.dequantize_row(id, row),
            Weights::Q4_1(w) => &|id, row| w.dequantize_row(id, row),
            Weights::Q8_0(w) => &|id, row| w.dequantize_row(id, row),
            Weights::Q4K(w) => &|id, row| w.dequantize_row(id, row),
            Weights::Q6K(w) => &|id, row| w.dequantize_row(id, row),
            Weights::Candle(blocks) => {
                let storage = blocks
                    .embedding(ids, part.rows, self.cols)
                    .map_err(|e| ModelError::InvalidBatch(e.to_string()))?;
                return match storage {
                    CpuStorage::F32(data) => Ok(CpuTensor::new(data, ids.len(), self.cols)),
                    _ => Err(ModelError::Backend("embedding did not produce f32".into())),
                };
            }
        };
        let mut data = vec![0f32; ids.len() * self.cols];
        for (&id, row) in ids.iter().zip(data.chunks_exact_mut(self.cols)) {
            let id = id as usize;
            if id >= part.rows {
                return Err(ModelError::InvalidBatch(format!(
                    "token id {id} is outside the embedding table ({} rows)",
                    part.rows
                )));
            }
            dequantize_row(id, row);
        }
        Ok(CpuTensor::new(data, ids.len(), self.cols))
    }

    /// Storage type of the first part, for logs.
    pub fn dtype(&self) -> GgmlDType {
        self.parts[0].weights.dtype()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Q4_0, Q4_K and Q6_K layers run our kernels, and their forward and
    /// embedding lookup agree with candle's on the same bytes.
    #[test]
    fn new_kernel_types_are_dispatched_to_our_kernels() {
        let (rows, cols) = (5, 512);
        let x: Vec<f32> = (0..2 * cols)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q4K, GgmlDType::Q6K] {
            let values: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 13) % 29) as f32 / 29.0 - 0.5)
                .collect();
            let t = candle_core::Tensor::from_vec(values, (rows, cols), &candle_core::Device::Cpu);
            let q = t.and_then(|t| candle_core::quantized::QTensor::quantize(&t, dtype));
            let data = q
                .and_then(|q| q.data().map(|d| d.to_vec()))
                .expect("quantizes");
            let matrix = HostMatrix {
                name: "w".into(),
                dtype,
                rows,
                cols,
                data: data.clone(),
            };
            let layer = CpuLinear::new(vec![matrix], None).expect("builds");
            assert!(
                !matches!(layer.parts[0].weights, Weights::Candle(_)),
                "{dtype:?}"
            );
            assert_eq!(layer.dtype(), dtype);

            let candle = dtype.from_data(Cow::Owned(data));
            let mut want = vec![0f32; 2 * rows];
            candle
                .matmul_t((2, cols, rows), &x, &mut want)
                .expect("candle matmul");
            let got = layer
                .forward(&CpuTensor::new(x.clone(), 2, cols))
                .expect("forward");
            for (a, b) in got.data.iter().zip(&want) {
                assert!(
                    (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                    "{dtype:?}: {a} vs {b}"
                );
            }
            let CpuStorage::F32(table) = candle.dequantize(rows * cols).expect("dequantizes")
            else {
                panic!("candle dequantizes to f32");
            };
            let rows_3_0 = layer.gather(&[3, 0]).expect("gathers");
            assert_eq!(rows_3_0.data[..cols], table[3 * cols..4 * cols]);
            assert_eq!(rows_3_0.data[cols..], table[..cols]);
            assert!(layer.gather(&[rows as u32]).is_err());
        }
    }
}
