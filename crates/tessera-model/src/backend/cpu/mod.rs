//! The CPU backend: candle's quantized dot products for linear layers, and plain
//! row-wise Rust for everything else.

mod attention;
mod linear;
mod ops;
mod qmatmul;
mod vexp;

use rayon::prelude::*;

pub use attention::CpuKvCache;
pub use linear::CpuLinear;

use crate::backend::{AttentionShape, Backend, KvCacheShape, RopeTable};
use crate::batch::FlatBatch;
use crate::error::{ModelError, Result};
use crate::weights::HostMatrix;

/// A row-major f32 matrix in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTensor {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

impl CpuTensor {
    /// Wraps `data` as a `rows x cols` matrix.
    pub fn new(data: Vec<f32>, rows: usize, cols: usize) -> Self {
        debug_assert_eq!(data.len(), rows * cols);
        Self { data, rows, cols }
    }
}

/// The CPU backend.
#[derive(Debug, Default, Clone)]
pub struct CpuBackend;

impl CpuBackend {
    /// A CPU backend using the machine's cores.
    pub fn new() -> Self {
        Self
    }
}

fn check_width(what: &str, got: usize, expected: usize) -> Result<()> {
    if got != expected {
        return Err(ModelError::Backend(format!(
            "{what}: width {got}, expected {expected}"
        )));
    }
    Ok(())
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Linear = CpuLinear;
    type KvCache = CpuKvCache;
    type Rope = RopeTable;

    /// Runs the forward on a worker of rayon's pool. Called from the engine's
    /// own thread, every parallel operation would otherwise be injected into
    /// the pool and waited for across threads (a wake-up and a sleep each,
    /// hundreds per token); from a worker, they split by work stealing.
    fn install<R: Send>(&self, op: impl FnOnce() -> R + Send) -> R {
        rayon::scope(|_| op())
    }

    fn name(&self) -> String {
        "cpu".to_string()
    }

    fn upload_linear(&self, parts: Vec<HostMatrix>, bias: Option<Vec<f32>>) -> Result<CpuLinear> {
        CpuLinear::new(parts, bias)
    }

    fn upload_vector(&self, v: Vec<f32>) -> Result<CpuTensor> {
        let n = v.len();
        Ok(CpuTensor::new(v, 1, n))
    }

    fn upload_rope(&self, rope: RopeTable) -> Result<RopeTable> {
        Ok(rope)
    }

    fn alloc_kv_cache(&self, shape: KvCacheShape) -> Result<CpuKvCache> {
        CpuKvCache::new(shape)
    }

    fn embedding(&self, table: &CpuLinear, ids: &[u32]) -> Result<CpuTensor> {
        table.gather(ids)
    }

    fn rms_norm(&self, x: &CpuTensor, w: &CpuTensor, eps: f32) -> Result<CpuTensor> {
        check_width("rms_norm", w.cols, x.cols)?;
        let mut out = vec![0f32; x.data.len()];
        out.par_chunks_mut(x.cols.max(1))
            .zip(x.data.par_chunks(x.cols.max(1)))
            .for_each(|(o, row)| ops::rms_norm_row(row, &w.data, eps, o));
        Ok(CpuTensor::new(out, x.rows, x.cols))
    }

    fn add_rms_norm(
        &self,
        residual: &mut CpuTensor,
        x: &CpuTensor,
        w: &CpuTensor,
        eps: f32,
    ) -> Result<CpuTensor> {
        check_width("add_rms_norm", x.cols, residual.cols)?;
        for (r, v) in residual.data.iter_mut().zip(&x.data) {
            *r += v;
        }
        self.rms_norm(residual, w, eps)
    }

    fn add_normed_rms_norm(
        &self,
        residual: &mut CpuTensor,
        x: &CpuTensor,
        post: &CpuTensor,
        w: &CpuTensor,
        eps: f32,
    ) -> Result<CpuTensor> {
        let normed = self.rms_norm(x, post, eps)?;
        self.add_rms_norm(residual, &normed, w, eps)
    }

    fn scale(&self, x: &mut CpuTensor, s: f32) -> Result<()> {
        x.data.par_iter_mut().for_each(|v| *v *= s);
        Ok(())
    }

    fn softcap(&self, x: &mut CpuTensor, cap: f32) -> Result<()> {
        x.data
            .par_chunks_mut(x.cols.max(1))
            .for_each(|row| ops::softcap_in_place(row, cap));
        Ok(())
    }

    fn head_rms_norm(
        &self,
        x: &mut CpuTensor,
        w: &CpuTensor,
        offset_heads: usize,
        num_heads: usize,
        head_dim: usize,
        eps: f32,
    ) -> Result<()> {
        check_width("head_rms_norm", w.cols, head_dim)?;
        let cols = x.cols;
        let span = offset_heads * head_dim..(offset_heads + num_heads) * head_dim;
        if span.end > cols {
            return Err(ModelError::Backend("head_rms_norm beyond the row".into()));
        }
        x.data.par_chunks_mut(cols.max(1)).for_each(|row| {
            for head in row[span.clone()].chunks_mut(head_dim) {
                ops::rms_norm_in_place(head, &w.data, eps);
            }
        });
        Ok(())
    }

    fn linear(&self, x: &CpuTensor, w: &CpuLinear) -> Result<CpuTensor> {
        w.forward(x)
    }

    fn rotary_and_cache_write(
        &self,
        qkv: &mut CpuTensor,
        rope: &RopeTable,
        cache: &mut CpuKvCache,
        layer: usize,
        shape: &AttentionShape,
        batch: &FlatBatch,
    ) -> Result<()> {
        let d = shape.head_dim;
        check_width(
            "rotary",
            qkv.cols,
            (shape.num_heads + 2 * shape.num_kv_heads) * d,
        )?;
        check_width("rotary table", rope.head_dim, d)?;
        let half = d / 2;
        let rotated = (shape.num_heads + shape.num_kv_heads) * d;
        let interleaved = rope.style == crate::config::RopeStyle::Interleaved;
        if let Some(&p) = batch
            .positions
            .iter()
            .find(|&&p| p as usize >= rope.max_positions)
        {
            return Err(ModelError::InvalidBatch(format!(
                "position {p} beyond the rotary table of {}",
                rope.max_positions
            )));
        }
        let cols = qkv.cols;
        qkv.data
            .par_chunks_mut(cols)
            .zip(batch.positions.par_iter())
            .for_each(|(row, &pos)| {
                let angles = pos as usize * half..(pos as usize + 1) * half;
                let (cos, sin) = (&rope.cos[angles.clone()], &rope.sin[angles]);
                for head in row[..rotated].chunks_mut(d) {
                    ops::rotate_head(head, cos, sin, interleaved);
                }
            });
        cache.write(layer, qkv, shape, &batch.slot_mapping)
    }

    fn paged_attention(
        &self,
        qkv: &CpuTensor,
        cache: &CpuKvCache,
        layer: usize,
        shape: &AttentionShape,
        batch: &FlatBatch,
    ) -> Result<CpuTensor> {
        cache.attention(layer, qkv, shape, batch)
    }

    fn silu_mul(&self, gate_up: &CpuTensor) -> Result<CpuTensor> {
        let inter = gate_up.cols / 2;
        let mut out = vec![0f32; gate_up.rows * inter];
        out.par_chunks_mut(inter.max(1))
            .zip(gate_up.data.par_chunks(gate_up.cols.max(1)))
            .for_each(|(o, row)| ops::silu_mul_row(&row[..inter], &row[inter..], o));
        Ok(CpuTensor::new(out, gate_up.rows, inter))
    }

    fn gelu_tanh_mul(&self, gate_up: &CpuTensor) -> Result<CpuTensor> {
        let inter = gate_up.cols / 2;
        let mut out = vec![0f32; gate_up.rows * inter];
        out.par_chunks_mut(inter.max(1))
            .zip(gate_up.data.par_chunks(gate_up.cols.max(1)))
            .for_each(|(o, row)| ops::gelu_tanh_mul_row(&row[..inter], &row[inter..], o));
        Ok(CpuTensor::new(out, gate_up.rows, inter))
    }

    fn gather_rows(&self, x: &CpuTensor, rows: &[usize]) -> Result<CpuTensor> {
        let mut out = Vec::with_capacity(rows.len() * x.cols);
        for &r in rows {
            if r >= x.rows {
                return Err(ModelError::Backend(format!("row {r} of {}", x.rows)));
            }
            out.extend_from_slice(&x.data[r * x.cols..(r + 1) * x.cols]);
        }
        Ok(CpuTensor::new(out, rows.len(), x.cols))
    }

    fn to_host(&self, x: &CpuTensor) -> Result<Vec<f32>> {
        Ok(x.data.clone())
    }

    fn take_host(&self, x: CpuTensor) -> Result<Vec<f32>> {
        Ok(x.data)
    }
}
