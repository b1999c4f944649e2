//! Device memory of the CUDA backend: every buffer (weights, KV cache,
//! activations) comes from the device's stream-ordered memory pool
//! (`cuMemAllocAsync`, which cudarc's `CudaStream::alloc` calls on devices
//! with memory pools: all of sm_80+).
//!
//! The pool is told to keep what is freed (release threshold: unlimited), so
//! after the first steps a forward's activations are served from memory the
//! pool already holds: no `cudaMalloc` or `cudaFree` inside a forward, and
//! the addresses repeat from one step of the same shape to the next. Both are
//! what capturing decode steps as CUDA graphs will need (graph capture records
//! stream-ordered allocations as memory nodes); capture itself is not
//! implemented yet.
//!
//! All work goes to one stream, so a buffer freed on the host is reused only
//! by work queued after everything that used it: no events are needed, and
//! cudarc's per-buffer event tracking is turned off ([`DeviceMemory::new`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cudarc::driver::{
    result, sys, CudaContext, CudaSlice, CudaStream, DevicePtrMut, DeviceRepr, ValidAsZeroBits,
};

use super::budget::GpuMemory;
use super::error::{driver, CudaBackendError};

/// The backend's stream and the buffers allocated on it.
pub(crate) struct DeviceMemory {
    stream: Arc<CudaStream>,
    /// Fill every new buffer with 0xFF bytes (NaN in bf16 and f32), so a test
    /// sees any element a kernel failed to write.
    poison: AtomicBool,
}

impl DeviceMemory {
    /// A new stream on `context`, with cudarc's event tracking turned off and
    /// the pool set to keep freed memory.
    pub fn new(context: &Arc<CudaContext>) -> Result<Self, CudaBackendError> {
        // SAFETY: every buffer of this backend is allocated, used and freed on
        // the one stream created below, in stream order; nothing is shared
        // with another stream, which is what event tracking would guard.
        unsafe { context.disable_event_tracking() };
        let stream = context.new_stream().map_err(driver("cuStreamCreate"))?;
        if !keep_freed_memory(context)? {
            tracing::warn!(
                "cuda:{}: no stream-ordered memory pool; every buffer is a cudaMalloc",
                context.ordinal()
            );
        }
        Ok(Self {
            stream,
            poison: AtomicBool::new(false),
        })
    }

    /// The stream every operation runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Turns poisoning of new buffers on or off (tests).
    pub fn set_poison(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed);
    }

    /// A buffer of `len` elements (at least one: the driver allocates no
    /// empty buffers), uninitialized unless poisoning is on. Every caller
    /// writes what it reads.
    pub fn alloc<T: DeviceRepr>(&self, len: usize) -> Result<CudaSlice<T>, CudaBackendError> {
        // SAFETY: the contents are uninitialized; callers write before reading.
        let mut buf =
            unsafe { self.stream.alloc::<T>(len.max(1)) }.map_err(driver("cuMemAllocAsync"))?;
        if self.poison.load(Ordering::Relaxed) {
            let bytes = buf.num_bytes();
            let (ptr, _record) = buf.device_ptr_mut(&self.stream);
            // SAFETY: `ptr` is the start of `bytes` bytes just allocated.
            unsafe { result::memset_d8_async(ptr, 0xff, bytes, self.stream.cu_stream()) }
                .map_err(driver("cuMemsetD8Async"))?;
        }
        Ok(buf)
    }

    /// A zeroed buffer of `len` elements (at least one).
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>, CudaBackendError> {
        self.stream
            .alloc_zeros::<T>(len.max(1))
            .map_err(driver("cuMemAllocAsync"))
    }

    /// A new buffer holding `host`.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>, CudaBackendError> {
        let mut buf = self.alloc::<T>(host.len())?;
        if !host.is_empty() {
            self.stream
                .memcpy_htod(host, &mut buf)
                .map_err(driver("cuMemcpyHtoDAsync"))?;
        }
        Ok(buf)
    }

    /// The first `len` elements of `buf`, after everything queued before
    /// them has run; also reports any error a kernel left behind.
    pub fn download<T: DeviceRepr + Default + Clone>(
        &self,
        buf: &CudaSlice<T>,
        len: usize,
    ) -> Result<Vec<T>, CudaBackendError> {
        let mut host = vec![T::default(); len];
        if len > 0 {
            let view = buf.try_slice(0..len).ok_or_else(|| {
                CudaBackendError::Shape(format!(
                    "reading {len} elements of a buffer of {}",
                    buf.len()
                ))
            })?;
            self.stream
                .memcpy_dtoh(&view, &mut host)
                .map_err(driver("cuMemcpyDtoHAsync"))?;
        }
        self.synchronize()?;
        Ok(host)
    }

    /// Waits for the stream; reports a fault of any kernel queued before, and
    /// any error recorded where none could be returned (a buffer's free).
    pub fn synchronize(&self) -> Result<(), CudaBackendError> {
        self.stream
            .synchronize()
            .map_err(driver("cuStreamSynchronize"))?;
        self.stream
            .context()
            .check_err()
            .map_err(driver("an earlier asynchronous call"))
    }

    /// Free and total device memory now (`cuMemGetInfo`).
    pub fn info(&self) -> Result<GpuMemory, CudaBackendError> {
        let (free, total) = self
            .stream
            .context()
            .mem_get_info()
            .map_err(driver("cuMemGetInfo"))?;
        Ok(GpuMemory {
            free: free as u64,
            total: total as u64,
        })
    }
}

/// Sets the device's current memory pool to keep freed memory for reuse
/// instead of returning it to the driver at each synchronization. `false`
/// when the device has no memory pools.
fn keep_freed_memory(context: &CudaContext) -> Result<bool, CudaBackendError> {
    if !context.has_async_alloc() {
        return Ok(false);
    }
    context
        .bind_to_thread()
        .map_err(driver("cuCtxSetCurrent"))?;
    let mut threshold: u64 = u64::MAX;
    // SAFETY: the device comes from the live context; the attribute's value
    // is a cuuint64_t, which `threshold` is.
    unsafe {
        let pool = result::device::get_mem_pool(context.cu_device())
            .map_err(driver("cuDeviceGetMemPool"))?;
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .map_err(driver("cuMemPoolSetAttribute"))?;
    }
    Ok(true)
}
