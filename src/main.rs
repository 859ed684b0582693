//! The `meridian` command.

fn main() -> std::process::ExitCode {
    bound_malloc_retention();
    meridian::cli::main()
}

/// glibc's malloc, left to itself, keeps freed blocks of a few hundred KiB
/// to a few MiB (request frames, Raft entries with large values, snapshot
/// chunks) in one arena per thread, and raises its mmap threshold to every
/// large block freed, so such blocks stop going back to the system. Measured
/// on a follower receiving a 327 MB snapshot (tests/peer.rs, long run):
/// +165 MB resident above idle as glibc left it, +85 MB with the mmap
/// threshold fixed at 128 KiB and two arenas (docs/benchmarks.md). Must run
/// before any other thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn bound_malloc_retention() {
    /// Blocks from this size up are mmapped and returned to the system on free.
    const MMAP_THRESHOLD_BYTES: libc::c_int = 128 * 1024;
    /// Arenas shared by all threads.
    const ARENAS: libc::c_int = 2;
    // SAFETY: mallopt only changes allocator tunables; it is called first
    // thing in main, before this process starts any other thread.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_malloc_retention() {
    // Other allocators have their own policies; nothing to tune.
}
