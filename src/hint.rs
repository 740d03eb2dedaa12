//! Hints to the processor that change no result: a prefetch of the cache
//! line that holds a value, used where a loop knows the next addresses it
//! will read from a table too large for the cache (the store's write set,
//! the workers' symbol caches).
//!
//! Invariant: nothing here reads or writes anything the program sees; on an
//! architecture without a hint here, each function does nothing.

/// Asks the CPU to bring the cache line of `value` in.
#[inline]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch never faults and reads nothing the program
        // sees; the pointer comes from a reference, so it is valid anyway.
        // SSE, which it needs, is part of x86_64's baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(value).cast()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
