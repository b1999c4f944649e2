//! KV pools committed as they are used.
//!
//! A pool is asked of the allocator zeroed (`calloc`), never written at
//! start: a large zeroed allocation is fresh anonymous memory, which the
//! kernel maps to physical pages only when they are first written. So a
//! gigabyte-sized KV cache costs address space at start-up and resident
//! memory only for the blocks sequences have written; the block pool hands
//! out blocks already used before untouched ones, so resident memory
//! follows the load. The budget is still the pool's full size: the memory
//! is reserved against it, only committed later.

use std::alloc::{alloc_zeroed, Layout};

use super::kernel::KvValue;
use crate::error::{ModelError, Result};

/// A pool of `len` values, all 0.0, its pages not yet touched.
pub(super) fn zeroed_pool<T: KvValue>(len: usize) -> Result<Vec<T>> {
    if len == 0 || std::mem::size_of::<T>() == 0 {
        return Ok(Vec::new());
    }
    let too_large = || ModelError::Backend(format!("a KV pool of {len} values is too large"));
    let layout = Layout::array::<T>(len).map_err(|_| too_large())?;
    // SAFETY: `layout` has a non-zero size (len > 0, T not zero-sized).
    let ptr = unsafe { alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        return Err(ModelError::Backend(format!(
            "could not reserve {} bytes for a KV pool",
            layout.size()
        )));
    }
    // SAFETY: `ptr` was allocated by the global allocator with the layout of
    // `[T; len]` (what `Vec<T>` with capacity `len` deallocates with), and
    // all `len` values are initialized: zero bits are a valid `T` equal to
    // 0.0 (`KvValue`'s contract).
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn pools_read_as_zero() {
        let a: Vec<f16> = zeroed_pool(1 << 20).unwrap();
        assert_eq!(a.len(), 1 << 20);
        assert!(a.iter().all(|v| v.to_f32() == 0.0 && v.is_sign_positive()));
        let b: Vec<f32> = zeroed_pool(4097).unwrap();
        assert!(b.iter().all(|&v| v.to_bits() == 0));
        assert!(zeroed_pool::<f32>(0).unwrap().is_empty());
    }

    #[test]
    fn an_impossible_pool_is_an_error_not_an_abort() {
        assert!(zeroed_pool::<f32>(usize::MAX / 2).is_err());
    }
}
