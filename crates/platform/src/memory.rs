//! How the process's memory allocator behaves, set once at start.
//!
//! glibc's malloc serves a large allocation (a bulk request's thousand accounts, a batch's
//! statement, a response) with its own `mmap` and unmaps it when freed, but only above a
//! threshold that it raises, by itself, to the size of every such block freed. After a few
//! large buffers the threshold is megabytes, and later ones come from the heap arenas, which
//! keep them after they are freed: the auth-service grew from 38 to 52 MiB during a 100,000-user
//! import and stayed there. A fixed threshold turns that adjustment off: large buffers always go
//! back to the system when freed (38 → 47 MiB, BENCHMARKS.md row 9), for a system call per
//! large buffer, which the hot paths do not allocate.

/// Buffers from this size on are mapped and unmapped on their own (glibc's default start).
pub const LARGE_BUFFER: usize = 256 * 1024;

/// Fixes malloc's large-buffer threshold at [`LARGE_BUFFER`]. Call before any thread is
/// started. A no-op where the allocator is not glibc's. `MALLOC_MMAP_THRESHOLD_` in the
/// environment, read by glibc itself, still wins.
pub fn return_large_buffers() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        return;
    }
    set_mmap_threshold(LARGE_BUFFER);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_mmap_threshold(bytes: usize) {
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `mallopt` takes two integers and touches only malloc's own settings under its
    // own lock; it has no pointer arguments and no precondition beyond glibc being the
    // allocator, which the cfg above ensures. A refusal (return 0) leaves the defaults.
    let accepted = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) };
    if accepted == 0 {
        eprintln!("warning: malloc refused a large-buffer threshold of {bytes} bytes");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mmap_threshold(_bytes: usize) {}
