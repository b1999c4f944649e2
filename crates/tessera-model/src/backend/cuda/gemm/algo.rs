//! Choosing a GEMM's algorithm so that its rows do not depend on the batch
//! size.
//!
//! cuBLASLt's heuristic picks a kernel per problem size, and kernels differ
//! in how they cut and order the `k` sum (tile depth, split-K), so the same
//! row could round differently at another batch size. Each weight shape
//! therefore gets one algorithm, chosen once at [`REFERENCE_M`] among those
//! that reduce over `k` in one pass (no split-K), and every batch size that
//! algorithm supports (`cublasLtMatmulAlgoCheck`) uses it: each output element
//! is then one dot product in one fixed order whatever `m` is. Whether this
//! holds bit for bit on a GPU is what `tests/cuda_backend/` checks.

use cudarc::cublaslt::sys;

use super::super::error::{cublas, CudaBackendError};
use super::desc::{Pref, Problem, Shape};

/// The `m` each weight shape's algorithm is chosen at: a decode batch or a
/// small prefill chunk, where most steps are.
pub(super) const REFERENCE_M: usize = 64;

/// Heuristic results asked for when looking for one without split-K.
const CANDIDATES: usize = 16;

/// cuBLASLt's handle and the workspace bytes its algorithms may use.
#[derive(Clone, Copy)]
pub(super) struct Search {
    pub handle: sys::cublasLtHandle_t,
    pub workspace: usize,
}

impl Search {
    /// The first heuristic result for `shape` at [`REFERENCE_M`] that sums
    /// over `k` in one pass.
    pub fn invariant(
        self,
        shape: Shape,
    ) -> Result<Option<sys::cublasLtMatmulAlgo_t>, CudaBackendError> {
        let problem = Problem::new(REFERENCE_M, shape)?;
        for no_reduction in [true, false] {
            let found = self.heuristic(&problem, no_reduction)?;
            if let Some(r) = found.iter().find(|r| single_pass(&r.algo)) {
                return Ok(Some(r.algo));
            }
        }
        Ok(None)
    }

    /// cuBLASLt's candidates for `problem`, best first, that fit the
    /// workspace; `no_reduction` asks for algorithms without a split-K
    /// reduction only.
    pub fn heuristic(
        self,
        problem: &Problem,
        no_reduction: bool,
    ) -> Result<Vec<sys::cublasLtMatmulHeuristicResult_t>, CudaBackendError> {
        let pref = Pref::new()?;
        pref.set(
            sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
            &(self.workspace as u64),
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
        let p = problem;
        // SAFETY: live descriptors; `results` holds CANDIDATES entries.
        unsafe {
            sys::cublasLtMatmulAlgoGetHeuristic(
                self.handle,
                p.desc.0,
                p.a.0,
                p.b.0,
                p.d.0,
                p.d.0,
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
                && r.workspaceSize <= self.workspace
        });
        Ok(results)
    }

    /// Whether `algo` runs `problem` within the workspace.
    pub fn supports(self, problem: &Problem, algo: &sys::cublasLtMatmulAlgo_t) -> bool {
        // SAFETY: plain data, overwritten by the call.
        let mut check: sys::cublasLtMatmulHeuristicResult_t = unsafe { std::mem::zeroed() };
        let p = problem;
        // SAFETY: live descriptors and a valid algorithm value.
        let status = unsafe {
            sys::cublasLtMatmulAlgoCheck(
                self.handle,
                p.desc.0,
                p.a.0,
                p.b.0,
                p.d.0,
                p.d.0,
                algo,
                &mut check,
            )
        };
        status == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS
            && check.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS
            && check.workspaceSize <= self.workspace
    }
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
