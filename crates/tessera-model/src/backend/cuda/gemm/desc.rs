//! cuBLASLt descriptors, owned (destroyed on drop): the operation, the
//! matrix layouts of one problem, the heuristic's preferences.
//!
//! cuBLASLt is column-major: row-major `y [m, n]` is column-major `y^T
//! [n, m]`, so `y = x @ W^T` is computed as `y^T = W x^T` with A = W
//! (transposed, `lda = k`), B = x (`ldb = k`) and D = y (`ldd = n`).

use cudarc::cublaslt::{result, sys};

use super::super::error::{cublas, CudaBackendError};
use super::super::tensor::DType;

/// A GEMM's weight shape and output: what its algorithm is chosen for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Shape {
    pub n: usize,
    pub k: usize,
    pub out: DType,
    pub bias: bool,
}

/// The operation and the A (W), B (x) and D (y) layouts of one `(m, shape)`.
pub(super) struct Problem {
    pub desc: Desc,
    pub a: Layout,
    pub b: Layout,
    pub d: Layout,
}

impl Problem {
    /// Descriptors for `x [m, k] @ W [n, k]^T` into `shape.out`, with the
    /// BIAS epilogue when `shape.bias`: compute type 32F, scale type 32F.
    pub fn new(m: usize, shape: Shape) -> Result<Self, CudaBackendError> {
        let (m, n, k) = (as_u64(m)?, as_u64(shape.n)?, as_u64(shape.k)?);
        let desc = Desc::new()?;
        let transpose: i32 = 1; // CUBLAS_OP_T
        desc.set(
            sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
            &transpose,
        )?;
        let epilogue = if shape.bias {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS
        } else {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT
        };
        desc.set(
            sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE,
            &epilogue,
        )?;
        let bf16 = cuda_type(DType::Bf16);
        Ok(Self {
            desc,
            a: Layout::new(bf16, k, n, ld(k)?)?,
            b: Layout::new(bf16, k, m, ld(k)?)?,
            d: Layout::new(cuda_type(shape.out), n, m, ld(n)?)?,
        })
    }
}

fn cuda_type(d: DType) -> sys::cudaDataType {
    match d {
        DType::Bf16 => sys::cudaDataType_t::CUDA_R_16BF,
        DType::F32 => sys::cudaDataType_t::CUDA_R_32F,
    }
}

fn too_large(value: usize) -> CudaBackendError {
    CudaBackendError::TooLarge {
        what: "GEMM dimension",
        value,
    }
}

fn as_u64(v: usize) -> Result<u64, CudaBackendError> {
    u64::try_from(v).map_err(|_| too_large(v))
}

fn ld(v: u64) -> Result<i64, CudaBackendError> {
    i64::try_from(v).map_err(|_| too_large(usize::try_from(v).unwrap_or(usize::MAX)))
}

/// An owned `cublasLtMatmulDesc_t`.
pub(super) struct Desc(pub sys::cublasLtMatmulDesc_t);

impl Desc {
    fn new() -> Result<Self, CudaBackendError> {
        result::create_matmul_desc(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cudaDataType_t::CUDA_R_32F,
        )
        .map(Self)
        .map_err(cublas("cublasLtMatmulDescCreate"))
    }

    /// Sets `attr` to `value`, whose type must be the attribute's.
    pub fn set<T>(
        &self,
        attr: sys::cublasLtMatmulDescAttributes_t,
        value: &T,
    ) -> Result<(), CudaBackendError> {
        // SAFETY: a live descriptor; `value` is `size_of::<T>()` readable bytes.
        unsafe {
            result::set_matmul_desc_attribute(
                self.0,
                attr,
                (value as *const T).cast(),
                std::mem::size_of::<T>(),
            )
        }
        .map_err(cublas("cublasLtMatmulDescSetAttribute"))
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created by `new`, destroyed once.
        let _ = unsafe { result::destroy_matmul_desc(self.0) };
    }
}

/// An owned column-major `cublasLtMatrixLayout_t`.
pub(super) struct Layout(pub sys::cublasLtMatrixLayout_t);

impl Layout {
    fn new(t: sys::cudaDataType, rows: u64, cols: u64, ld: i64) -> Result<Self, CudaBackendError> {
        result::create_matrix_layout(t, rows, cols, ld)
            .map(Self)
            .map_err(cublas("cublasLtMatrixLayoutCreate"))
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: created by `new`, destroyed once.
        let _ = unsafe { result::destroy_matrix_layout(self.0) };
    }
}

/// An owned `cublasLtMatmulPreference_t`.
pub(super) struct Pref(pub sys::cublasLtMatmulPreference_t);

impl Pref {
    pub fn new() -> Result<Self, CudaBackendError> {
        result::create_matmul_pref()
            .map(Self)
            .map_err(cublas("cublasLtMatmulPreferenceCreate"))
    }

    /// Sets `attr` to `value`, whose type must be the attribute's.
    pub fn set<T>(
        &self,
        attr: sys::cublasLtMatmulPreferenceAttributes_t,
        value: &T,
    ) -> Result<(), CudaBackendError> {
        // SAFETY: a live preference; `value` is `size_of::<T>()` readable bytes.
        unsafe {
            result::set_matmul_pref_attribute(
                self.0,
                attr,
                (value as *const T).cast(),
                std::mem::size_of::<T>(),
            )
        }
        .map_err(cublas("cublasLtMatmulPreferenceSetAttribute"))
    }
}

impl Drop for Pref {
    fn drop(&mut self) {
        // SAFETY: created by `new`, destroyed once.
        let _ = unsafe { result::destroy_matmul_pref(self.0) };
    }
}
