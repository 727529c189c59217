//! The process's allocator setting the kernels are measured with.

/// Keeps freed memory in the process heap instead of returning it to the operating system.
///
/// A CPU training step allocates and frees activation-sized buffers (tens of MB) hundreds of
/// times. With glibc's defaults each of them is its own `mmap`; freeing it unmaps it, which on a
/// multi-threaded process interrupts every core to flush its TLB, and the next allocation faults
/// its pages in again. Measured on the 2-core benchmark machine this halved the speed of the
/// convolution backward pass (docs/BENCHMARKS.md).
///
/// **Process-wide**: it changes the C allocator for the whole process, so only a program's
/// `main` should call it, once at start (the `byol` binary and the profiling examples do); no
/// library function calls it. A no-op where the C library is not glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters; it is thread-safe in glibc and these
    // values (no mmap'ed chunks, never trim) are valid for it.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
