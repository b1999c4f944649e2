//! Device tensors: a row-major matrix in bf16 or f32, and the host-side
//! conversions between f32 and bf16 bit patterns.
//!
//! Which operation produces which type (the kernels' interfaces):
//!
//! | tensor | type | why |
//! | --- | --- | --- |
//! | residual stream (embedding, `add_rms_norm`'s residual) | f32 | sums of many layers' outputs; the CPU backend keeps it in f32 too |
//! | norm gains (`upload_vector`) | f32 | exact, as on the CPU; one vector per layer |
//! | GEMM inputs and outputs, Q/K/V, attention output, SiLU·mul | bf16 | the tensor cores' type; half the memory traffic |
//! | logits (`Backend::logits`) | f32 | they go to the host sampler; bf16 would round them to 3 digits |
//!
//! bf16 is stored as its 16-bit pattern (`u16`), so cudarc needs no `half`
//! support; the host converts with `half::bf16` (round to nearest even, as
//! the kernels' `f32_to_bf16`).

use cudarc::driver::CudaSlice;
use half::bf16;

use super::error::CudaBackendError;

/// The element type of a [`CudaTensor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// bfloat16, stored as its bit pattern.
    Bf16,
    /// IEEE f32.
    F32,
}

impl DType {
    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            Self::Bf16 => 2,
            Self::F32 => 4,
        }
    }
}

/// A device buffer of either type.
#[derive(Debug)]
pub(crate) enum Buffer {
    Bf16(CudaSlice<u16>),
    F32(CudaSlice<f32>),
}

/// A row-major `rows x cols` matrix (a vector: one row) in device memory.
///
/// The buffer may be longer than `rows * cols` (empty tensors hold one
/// element: the driver allocates no zero-byte buffers).
#[derive(Debug)]
pub struct CudaTensor {
    buf: Buffer,
    rows: usize,
    cols: usize,
}

impl CudaTensor {
    pub(crate) fn new(buf: Buffer, rows: usize, cols: usize) -> Self {
        Self { buf, rows, cols }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (elements per row).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Elements (`rows * cols`).
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self.buf {
            Buffer::Bf16(_) => DType::Bf16,
            Buffer::F32(_) => DType::F32,
        }
    }

    pub(crate) fn buffer(&self) -> &Buffer {
        &self.buf
    }

    /// The bf16 buffer, or an error naming `op` when the tensor is f32.
    pub(crate) fn bf16(&self, op: &str) -> Result<&CudaSlice<u16>, CudaBackendError> {
        match &self.buf {
            Buffer::Bf16(b) => Ok(b),
            Buffer::F32(_) => Err(wrong_type(op, DType::Bf16)),
        }
    }

    /// The bf16 buffer, mutably.
    pub(crate) fn bf16_mut(&mut self, op: &str) -> Result<&mut CudaSlice<u16>, CudaBackendError> {
        match &mut self.buf {
            Buffer::Bf16(b) => Ok(b),
            Buffer::F32(_) => Err(wrong_type(op, DType::Bf16)),
        }
    }

    /// The f32 buffer, or an error naming `op` when the tensor is bf16.
    pub(crate) fn f32(&self, op: &str) -> Result<&CudaSlice<f32>, CudaBackendError> {
        match &self.buf {
            Buffer::F32(b) => Ok(b),
            Buffer::Bf16(_) => Err(wrong_type(op, DType::F32)),
        }
    }

    /// The f32 buffer, mutably.
    pub(crate) fn f32_mut(&mut self, op: &str) -> Result<&mut CudaSlice<f32>, CudaBackendError> {
        match &mut self.buf {
            Buffer::F32(b) => Ok(b),
            Buffer::Bf16(_) => Err(wrong_type(op, DType::F32)),
        }
    }

    /// An error unless the tensor has `cols` columns.
    pub(crate) fn expect_cols(&self, op: &str, cols: usize) -> Result<(), CudaBackendError> {
        if self.cols != cols {
            return Err(CudaBackendError::Shape(format!(
                "{op}: width {}, expected {cols}",
                self.cols
            )));
        }
        Ok(())
    }
}

fn wrong_type(op: &str, want: DType) -> CudaBackendError {
    let have = match want {
        DType::Bf16 => DType::F32,
        DType::F32 => DType::Bf16,
    };
    CudaBackendError::Shape(format!("{op} takes a {want:?} tensor, got {have:?}"))
}

/// f32 values as bf16 bit patterns, rounded to nearest even (NaN stays NaN).
pub fn f32_to_bf16_bits(values: &[f32]) -> Vec<u16> {
    values
        .iter()
        .map(|&v| bf16::from_f32(v).to_bits())
        .collect()
}

/// bf16 bit patterns as f32 values (exact).
pub fn bf16_bits_to_f32(bits: &[u16]) -> Vec<f32> {
    bits.iter().map(|&b| bf16::from_bits(b).to_f32()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_round_trips_and_rounds_to_nearest_even() {
        let exact = [0.0f32, -0.0, 1.0, -2.5, 65280.0, f32::INFINITY];
        assert_eq!(bf16_bits_to_f32(&f32_to_bf16_bits(&exact)), exact);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even 1.
        let halfway = 1.0 + f32::powi(2.0, -8);
        assert_eq!(bf16_bits_to_f32(&f32_to_bf16_bits(&[halfway])), [1.0]);
        assert!(bf16_bits_to_f32(&f32_to_bf16_bits(&[f32::NAN]))[0].is_nan());
    }
}
