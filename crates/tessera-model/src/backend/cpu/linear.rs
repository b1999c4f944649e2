//! Linear layers on the CPU: candle's quantized (and f32) row-by-column dot products.
//!
//! Each output element is one dot product of an activation row with a weight row,
//! whatever the batch size, so results are batch-invariant.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QuantizedType};
use candle_core::CpuStorage;

use crate::error::{ModelError, Result};
use crate::weights::HostMatrix;

use super::CpuTensor;

/// One weight matrix in candle's block storage.
struct Part {
    blocks: Box<dyn QuantizedType>,
    rows: usize,
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
            .map(|p| Part {
                blocks: p.dtype.from_data(Cow::Owned(p.data)),
                rows: p.rows,
            })
            .collect();
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
            part.blocks
                .matmul_t((m, self.cols, part.rows), &x.data, &mut out)
                .map_err(|e| ModelError::Backend(e.to_string()))?;
        } else {
            let mut col0 = 0;
            for part in &self.parts {
                let mut tmp = vec![0f32; m * part.rows];
                part.blocks
                    .matmul_t((m, self.cols, part.rows), &x.data, &mut tmp)
                    .map_err(|e| ModelError::Backend(e.to_string()))?;
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
        let storage = part
            .blocks
            .embedding(ids, part.rows, self.cols)
            .map_err(|e| ModelError::InvalidBatch(e.to_string()))?;
        match storage {
            CpuStorage::F32(data) => Ok(CpuTensor::new(data, ids.len(), self.cols)),
            _ => Err(ModelError::Backend("embedding did not produce f32".into())),
        }
    }

    /// Storage type of the first part, for logs.
    pub fn dtype(&self) -> GgmlDType {
        self.parts[0].blocks.dtype()
    }
}
