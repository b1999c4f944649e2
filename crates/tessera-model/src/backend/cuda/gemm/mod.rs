//! GEMMs through cuBLASLt: `y = x @ W^T (+ bias)` for row-major `x [m, k]` and
//! `W [n, k]` in bf16, accumulated and scaled in f32 (compute type 32F), into
//! a bf16 or f32 `y [m, n]`; the bias (in `y`'s type) by the BIAS epilogue.
//!
//! One algorithm per weight shape keeps rows independent of the batch size
//! ([`algo`]). Descriptors, layouts and the algorithm are cached per
//! `(m, n, k)` ([`desc`]); a call after the first costs a bias-pointer
//! update and the launch.

mod algo;
mod desc;

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::cublaslt::{result, sys};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use super::error::{cublas, driver, CudaBackendError};
use super::memory::DeviceMemory;
use super::tensor::{Buffer, DType};
use algo::Search;
use desc::{Problem, Shape};

/// cuBLASLt with its workspace, on the backend's stream.
pub(crate) struct Gemm {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    stream: Arc<CudaStream>,
    cache: Mutex<Cache>,
}

// SAFETY: the handle is only used under `cache`'s lock (every call goes
// through `matmul`, which holds it), and a cuBLASLt handle may be used from
// any thread as long as calls are not concurrent.
unsafe impl Send for Gemm {}
// SAFETY: as above.
unsafe impl Sync for Gemm {}

impl Drop for Gemm {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once; the plans hold no
        // reference to it.
        let _ = unsafe { result::destroy_handle(self.handle) };
    }
}

#[derive(Default)]
struct Cache {
    /// Per `(m, shape)`.
    plans: HashMap<(usize, Shape), Plan>,
    /// Per shape: its batch-invariant algorithm, if cuBLASLt offered one.
    algos: HashMap<Shape, Option<sys::cublasLtMatmulAlgo_t>>,
}

/// Everything one `(m, n, k)` call needs but the pointers.
struct Plan {
    problem: Problem,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Gemm {
    /// A handle and a workspace (32 MiB on Hopper, 4 MiB before: NVIDIA's
    /// recommendation) on `memory`'s stream.
    pub fn new(memory: &DeviceMemory, hopper: bool) -> Result<Self, CudaBackendError> {
        bind(memory.stream())?;
        let size = if hopper { 32 << 20 } else { 4 << 20 };
        let workspace = memory.alloc::<u8>(size)?;
        let handle = result::create_handle().map_err(cublas("cublasLtCreate"))?;
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
        // The BIAS epilogue reads n values (one per row of column-major D).
        if let Some(b) = bias.filter(|b| buffer_len(b) < n) {
            return Err(CudaBackendError::Shape(format!(
                "GEMM bias of {} values for {n} outputs",
                buffer_len(b)
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
        let p = &plan.problem;
        let s = &self.stream;
        let (w_ptr, _w) = w.device_ptr(s);
        let (x_ptr, _x) = x.device_ptr(s);
        if let Some(b) = bias {
            let ptr = match b {
                Buffer::Bf16(b) => b.device_ptr(s).0,
                Buffer::F32(b) => b.device_ptr(s).0,
            };
            p.desc.set(
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
                p.desc.0,
                (&alpha as *const f32).cast(),
                (&beta as *const f32).cast(),
                w_ptr as *const c_void,
                p.a.0,
                x_ptr as *const c_void,
                p.b.0,
                d_ptr as *const c_void,
                p.d.0,
                d_ptr as *mut c_void,
                p.d.0,
                &plan.algo,
                ws_ptr as *mut c_void,
                self.workspace.len(),
                s.cu_stream() as sys::cudaStream_t,
            )
        }
        .map_err(cublas("cublasLtMatmul"))
    }

    fn search(&self) -> Search {
        Search {
            handle: self.handle,
            workspace: self.workspace.len(),
        }
    }

    /// Builds the descriptors of `(m, shape)` and picks its algorithm: the
    /// shape's batch-invariant one if it runs at this `m`, else the
    /// heuristic's choice for this `m`.
    fn plan(&self, cache: &mut Cache, m: usize, shape: Shape) -> Result<Plan, CudaBackendError> {
        let problem = Problem::new(m, shape)?;
        let invariant = match cache.algos.get(&shape) {
            Some(algo) => *algo,
            None => {
                let algo = self.search().invariant(shape)?;
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
            if self.search().supports(&problem, &algo) {
                return Ok(Plan { problem, algo });
            }
            tracing::warn!(
                m,
                n = shape.n,
                k = shape.k,
                "the batch-invariant GEMM algorithm does not run this batch size: \
                 its rows may differ in the last bits from other batch sizes"
            );
        }
        let algo = self
            .search()
            .heuristic(&problem, false)?
            .first()
            .map(|r| r.algo)
            .ok_or_else(|| {
                CudaBackendError::Unsupported(format!(
                    "cuBLASLt has no bf16 GEMM for {m}x{}x{}",
                    shape.n, shape.k
                ))
            })?;
        Ok(Plan { problem, algo })
    }
}

/// Makes the stream's context current on this thread (the engine runs
/// forwards on its own thread).
fn bind(stream: &CudaStream) -> Result<(), CudaBackendError> {
    stream
        .context()
        .bind_to_thread()
        .map_err(driver("cuCtxSetCurrent"))
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
