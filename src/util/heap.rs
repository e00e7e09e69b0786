//! The process heap: giving freed memory back to the kernel (an `unsafe`
//! libc call, kept out of the core filesystem, which has none).

/// Give the heap's free pages back to the kernel (glibc's `malloc_trim`;
/// nothing elsewhere).
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the kernel; it
    // takes no pointer and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
