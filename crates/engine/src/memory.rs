//! How the process holds memory it frees (glibc's allocator). Scoring and training allocate and free
//! buffers of tens of MB per op: kept in the heap, they are reused instead of page-faulted and zeroed
//! afresh; after the few moments that leave much of it free (a model loaded, a large request scored)
//! it is handed back to the kernel.

/// glibc returns every allocation above its mmap threshold to the kernel on free, so the next one of
/// that size is page-faulted and zeroed afresh. Training allocates and frees tensors of tens of MB
/// per op; pinning the threshold at its 32 MB maximum and keeping freed memory in the heap took a
/// MiniLM step from 8.0 s to 4.9 s here (16 pairs of 256 tokens). Call before other threads start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator tunables.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}

/// Hands the heap's free pages back to the kernel. After a load: every weight went through a
/// transient f32 copy (tens of MB each, from the heap) between the packed weights that stay, which
/// with trimming off stayed resident (2.2 GB on top of a 2.5 GB int8 Gemma). After a large request:
/// its activations and inputs. `malloc_trim` releases free pages inside the heap too.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() {
    // SAFETY: malloc_trim only returns free memory to the kernel; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}

/// `release_free_memory` when more than `threshold` bytes sit free in the heap (all arenas): for a
/// caller that cannot wait for an idle moment (the Python module after each call). Below it, the
/// freed working memory stays for the next call, which would otherwise page-fault it afresh (4-6%
/// of a 100-pair call on bge-reranker-base int8 when trimmed after every call).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory_above(threshold: usize) {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let free = unsafe { libc::mallinfo2() }.fordblks;
    if free > threshold {
        release_free_memory();
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory_above(_threshold: usize) {}
