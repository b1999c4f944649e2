//! GEMMs through cuBLASLt: `y = x @ W^T (+ bias)` for row-major `x [m, k]` and
//! `W [n, k]` in bf16, accumulated and scaled in f32 (compute type 32F), into
//! a bf16 or f32 `y [m, n]`; the bias (in `y`'s type) by the BIAS epilogue.
//!
//! cuBLASLt is column-major: row-major `y [m, n]` is column-major `y^T
//! [n, m]`, so the call computes `y^T = W x^T` with A = W (transposed,
//! `lda = k`), B = x (`ldb = k`) and D = y (`ldd = n`).
//!
//! Batch invariance (DESIGN.md): cuBLASLt's heuristic picks a kernel per
//! problem size, and kernels differ in how they cut and order the `k` sum
//! (tile depth, split-K), so the same row could round differently at another
//! batch size. Each weight shape therefore gets one algorithm, chosen once at
//! a fixed reference size with no split-K reduction, and every batch size that
//! algorithm supports (`cublasLtMatmulAlgoCheck`) uses it: each output element
//! is then one dot product in one fixed order whatever `m` is. A size it does
//! not support falls back to the heuristic's own choice (logged once). Whether
//! this holds bit for bit on a GPU is what `tests/cuda_backend.rs` checks.
//!
//! Descriptors, layouts and the chosen algorithm are cached per `(m, n, k)`;
//! a call after the first costs one bias-pointer update and the launch.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::cublaslt::{result, sys};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use super::error::{cublas, CudaBackendError};
use super::memory::DeviceMemory;
use super::tensor::{Buffer, DType};

/// The `m` each weight shape's algorithm is chosen at: a decode batch or a
/// small prefill chunk, where most steps are.
const REFERENCE_M: usize = 64;

/// Heuristic results asked for when looking for one without split-K.
const CANDIDATES: usize = 16;

/// cuBLASLt with its workspace, on the backend's stream.
pub(crate) struct Gemm {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    stream: Arc<CudaStream>,
    cache: Mutex<Cache>,
}

// SAFETY: the handle is only used under `cache`'s lock (every call goes
// through `matmul`, which holds it), and cuBLASLt handles may be used from
// any thread when calls are not concurrent.
unsafe impl Send for Gemm {}
// SAFETY: as above.
unsafe impl Sync for Gemm {}

impl Drop for Gemm {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once; the plans (dropped with
        // `cache` after this) hold no reference to the handle.
        let _ = unsafe { result::destroy_handle(self.handle) };
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Shape {
    n: usize,
    k: usize,
    out: DType,
    bias: bool,
}

#[derive(Default)]
struct Cache {
    /// Per `(m, shape)`.
    plans: HashMap<(usize, Shape), Plan>,
    /// Per shape: its batch-invariant algorithm, if the heuristic offered one.
    algos: HashMap<Shape, Option<sys::cublasLtMatmulAlgo_t>>,
}

/// Everything one `(m, n, k)` call needs but the pointers.
struct Plan {
    desc: Desc,
    a: Layout,
    b: Layout,
    d: Layout,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Gemm {
    /// A handle and a workspace (32 MiB on Hopper, 4 MiB before: NVIDIA's
    /// recommendation) on `memory`'s stream.
    pub fn new(memory: &DeviceMemory, hopper: bool) -> Result<Self, CudaBackendError> {
        bind(memory.stream())?;
        let handle = result::create_handle().map_err(cublas("cublasLtCreate"))?;
        let size = if hopper { 32 << 20 } else { 4 << 20 };
        let workspace = match memory.alloc::<u8>(size) {
            Ok(w) => w,
            Err(e) => {
                // SAFETY: just created, not used.
                let _ = unsafe { result::destroy_handle(handle) };
                return Err(e);
            }
        };
        Ok(Self {
            handle,
            workspace,
            stream: memory.stream().clone(),
            cache: Mutex::new(Cache::default()),
        })
    }

    /// `out [m, n] = x [m, k] @ w [n, k]^T (+ bias [n])`; `out` and `bias`
    /// of one type. Queued on the stream.
    pub fn matmul(
        &self,
        (m, n, k): (usize, usize, usize),
        x: &CudaSlice<u16>,
        w: &CudaSlice<u16>,
        bias: Option<&Buffer>,
        out: &mut Buffer,
    ) -> Result<(), CudaBackendError> {
        if m == 0 || n == 0 {
            return Ok(());
        }
        let out_dtype = buffer_dtype(out);
        if bias.is_some_and(|b| buffer_dtype(b) != out_dtype) {
            return Err(CudaBackendError::Shape(
                "GEMM bias and output types differ".into(),
            ));
        }
        if k == 0 || x.len() < m * k || w.len() < n * k || buffer_len(out) < m * n {
            return Err(CudaBackendError::Shape(format!(
                "GEMM {m}x{n}x{k} on buffers of {}, {} and {} elements",
                x.len(),
                w.len(),
                buffer_len(out)
            )));
        }
        let shape = Shape {
            n,
            k,
            out: out_dtype,
            bias: bias.is_some(),
        };
        // cuBLASLt launches through the runtime, on the thread's current context.
        bind(&self.stream)?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if !cache.plans.contains_key(&(m, shape)) {
            let plan = self.plan(&mut cache, m, shape)?;
            cache.plans.insert((m, shape), plan);
        }
        let plan = &cache.plans[&(m, shape)];
        let s = &self.stream;
        let (w_ptr, _w) = w.device_ptr(s);
        let (x_ptr, _x) = x.device_ptr(s);
        let bias_ptr = bias.map(|b| match b {
            Buffer::Bf16(b) => b.device_ptr(s).0,
            Buffer::F32(b) => b.device_ptr(s).0,
        });
        if let Some(ptr) = bias_ptr {
            plan.desc.set(
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                &ptr,
            )?;
        }
        let (d_ptr, _d) = match out {
            Buffer::Bf16(b) => b.device_ptr_mut(s),
            Buffer::F32(b) => b.device_ptr_mut(s),
        };
        let (ws_ptr, _ws) = self.workspace.device_ptr(s);
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: the layouts describe buffers at least this large (checked
        // above); the plan's descriptors live in the cache, under its lock.
        unsafe {
            result::matmul(
                self.handle,
                plan.desc.0,
                (&alpha as *const f32).cast(),
                (&beta as *const f32).cast(),
                w_ptr as *const c_void,
                plan.a.0,
                x_ptr as *const c_void,
                plan.b.0,
                d_ptr as *const c_void,
                plan.d.0,
                d_ptr as *mut c_void,
                plan.d.0,
                &plan.algo,
                ws_ptr as *mut c_void,
                self.workspace.len(),
                s.cu_stream() as sys::cudaStream_t,
            )
        }
        .map_err(cublas("cublasLtMatmul"))
    }

    /// Builds the descriptors of `(m, shape)` and picks its algorithm.
    fn plan(&self, cache: &mut Cache, m: usize, shape: Shape) -> Result<Plan, CudaBackendError> {
        let (desc, a, b, d) = descriptors(m, shape)?;
        let invariant = match cache.algos.get(&shape) {
            Some(algo) => *algo,
            None => {
                let algo = self.invariant_algo(shape)?;
                if algo.is_none() {
                    tracing::warn!(
                        n = shape.n,
                        k = shape.k,
                        "cuBLASLt offers no GEMM without split-K for this shape: \
                         its results may differ in the last bits between batch sizes"
                    );
                }
                cache.algos.insert(shape, algo);
                algo
            }
        };
        if let Some(algo) = invariant {
            if self.supports(&desc, &a, &b, &d, &algo) {
                return Ok(Plan {
                    desc,
                    a,
                    b,
                    d,
                    algo,
                });
            }
            tracing::warn!(
                m,
                n = shape.n,
                k = shape.k,
                "the batch-invariant GEMM algorithm does not support this batch size: \
                 its rows may differ in the last bits from other batch sizes"
            );
        }
        let algo = self
            .heuristic(&desc, &a, &b, &d, false)?
            .first()
            .map(|r| r.algo)
            .ok_or_else(|| {
                CudaBackendError::Unsupported(format!(
                    "cuBLASLt has no bf16 GEMM for {m}x{}x{}",
                    shape.n, shape.k
                ))
            })?;
        Ok(Plan {
            desc,
            a,
            b,
            d,
            algo,
        })
    }

    /// The first heuristic result at [`REFERENCE_M`] that reduces over `k`
    /// in one pass (no split-K).
    fn invariant_algo(
        &self,
        shape: Shape,
    ) -> Result<Option<sys::cublasLtMatmulAlgo_t>, CudaBackendError> {
        let (desc, a, b, d) = descriptors(REFERENCE_M, shape)?;
        for no_reduction in [true, false] {
            let found = self.heuristic(&desc, &a, &b, &d, no_reduction)?;
            if let Some(r) = found.iter().find(|r| single_pass(&r.algo)) {
                return Ok(Some(r.algo));
            }
        }
        Ok(None)
    }

    /// cuBLASLt's candidates, best first, that fit the workspace;
    /// `no_reduction` asks for algorithms without a split-K reduction only.
    fn heuristic(
        &self,
        desc: &Desc,
        a: &Layout,
        b: &Layout,
        d: &Layout,
        no_reduction: bool,
    ) -> Result<Vec<sys::cublasLtMatmulHeuristicResult_t>, CudaBackendError> {
        let pref = Pref::new()?;
        pref.set(
            sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
            &(self.workspace.len() as u64),
        )?;
        if no_reduction {
            pref.set(
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                &(sys::cublasLtReductionScheme_t::CUBLASLT_REDUCTION_SCHEME_NONE as u32),
            )?;
        }
        // SAFETY: an all-zero heuristic result is a valid value (plain data).
        let mut results: Vec<sys::cublasLtMatmulHeuristicResult_t> =
            vec![unsafe { std::mem::zeroed() }; CANDIDATES];
        let mut count = 0;
        // SAFETY: live descriptors; `results` holds CANDIDATES entries.
        unsafe {
            sys::cublasLtMatmulAlgoGetHeuristic(
                self.handle,
                desc.0,
                a.0,
                b.0,
                d.0,
                d.0,
                pref.0,
                CANDIDATES as i32,
                results.as_mut_ptr(),
                &mut count,
            )
        }
        .result()
        .or_else(|e| match e.0 {
            // "No algorithm": an empty answer, not a failure.
            sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED => {
                count = 0;
                Ok(())
            }
            _ => Err(e),
        })
        .map_err(cublas("cublasLtMatmulAlgoGetHeuristic"))?;
        results.truncate(usize::try_from(count).unwrap_or(0));
        results.retain(|r| {
            r.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS
                && r.workspaceSize <= self.workspace.len()
        });
        Ok(results)
    }

    /// Whether `algo` runs this problem within the workspace.
    fn supports(
        &self,
        desc: &Desc,
        a: &Layout,
        b: &Layout,
        d: &Layout,
        algo: &sys::cublasLtMatmulAlgo_t,
    ) -> bool {
        // SAFETY: plain data, overwritten by the call.
        let mut check: sys::cublasLtMatmulHeuristicResult_t = unsafe { std::mem::zeroed() };
        // SAFETY: live descriptors and a valid algorithm value.
        let status = unsafe {
            sys::cublasLtMatmulAlgoCheck(self.handle, desc.0, a.0, b.0, d.0, d.0, algo, &mut check)
        };
        status == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS
            && check.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS
            && check.workspaceSize <= self.workspace.len()
    }
}

/// Makes the stream's context current on this thread (the engine runs
/// forwards on its own thread).
fn bind(stream: &CudaStream) -> Result<(), CudaBackendError> {
    stream
        .context()
        .bind_to_thread()
        .map_err(super::error::driver("cuCtxSetCurrent"))
}

/// Whether an algorithm sums each output's `k` products in one pass: no
/// split-K and no reduction scheme.
fn single_pass(algo: &sys::cublasLtMatmulAlgo_t) -> bool {
    let read = |attr| {
        let mut value: u32 = 0;
        let mut written = 0usize;
        // SAFETY: both attributes are uint32_t; `value` receives one.
        let status = unsafe {
            sys::cublasLtMatmulAlgoConfigGetAttribute(
                algo,
                attr,
                (&mut value as *mut u32).cast(),
                std::mem::size_of::<u32>(),
                &mut written,
            )
        };
        (status == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS).then_some(value)
    };
    let splits = read(sys::cublasLtMatmulAlgoConfigAttributes_t::CUBLASLT_ALGO_CONFIG_SPLITK_NUM);
    let scheme =
        read(sys::cublasLtMatmulAlgoConfigAttributes_t::CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME);
    matches!(splits, Some(0 | 1))
        && scheme == Some(sys::cublasLtReductionScheme_t::CUBLASLT_REDUCTION_SCHEME_NONE as u32)
}

fn buffer_dtype(b: &Buffer) -> DType {
    match b {
        Buffer::Bf16(_) => DType::Bf16,
        Buffer::F32(_) => DType::F32,
    }
}

fn buffer_len(b: &Buffer) -> usize {
    match b {
        Buffer::Bf16(b) => b.len(),
        Buffer::F32(b) => b.len(),
    }
}

fn cuda_type(d: DType) -> sys::cudaDataType {
    match d {
        DType::Bf16 => sys::cudaDataType_t::CUDA_R_16BF,
        DType::F32 => sys::cudaDataType_t::CUDA_R_32F,
    }
}

/// The operation descriptor and the A (W), B (x) and D (y) layouts of `(m, shape)`.
fn descriptors(m: usize, shape: Shape) -> Result<(Desc, Layout, Layout, Layout), CudaBackendError> {
    let (n, k) = (shape.n as u64, shape.k as u64);
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
    let ld = |v: u64| i64::try_from(v).map_err(|_| too_large(v));
    let bf16 = cuda_type(DType::Bf16);
    let a = Layout::new(bf16, k, n, ld(k)?)?;
    let b = Layout::new(bf16, k, m as u64, ld(k)?)?;
    let d = Layout::new(cuda_type(shape.out), n, m as u64, ld(n)?)?;
    Ok((desc, a, b, d))
}

fn too_large(v: u64) -> CudaBackendError {
    CudaBackendError::TooLarge {
        what: "GEMM dimension",
        value: usize::try_from(v).unwrap_or(usize::MAX),
    }
}

/// An owned `cublasLtMatmulDesc_t`: compute type 32F, scale type 32F.
struct Desc(sys::cublasLtMatmulDesc_t);

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
    fn set<T>(
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
struct Layout(sys::cublasLtMatrixLayout_t);

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
struct Pref(sys::cublasLtMatmulPreference_t);

impl Pref {
    fn new() -> Result<Self, CudaBackendError> {
        result::create_matmul_pref()
            .map(Self)
            .map_err(cublas("cublasLtMatmulPreferenceCreate"))
    }

    fn set<T>(
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
