//! The `meridian` command.

/// jemalloc, not glibc's malloc: a put allocates a few dozen small blocks
/// on each node (frames, Raft entries, batch keys, skiplist nodes), from
/// several threads at once, and glibc's malloc (tuned to two arenas to keep
/// snapshot memory down) cost 10-12% of put throughput at 16 and 64
/// clients and 11-14% of the servers' CPU per put against jemalloc with the
/// options below (interleaved pairs, docs/benchmarks.md "Stop 30").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it initialises (the `MALLOC_CONF` of this
/// prefixed build; `_RJEM_MALLOC_CONF` in the environment overrides them).
/// Freed pages go back to the system at once (decay 0) from a background
/// thread: with the default 10 s decay a follower receiving a 327 MB
/// snapshot peaked at +151 MB resident above idle (tests/peer.rs, long
/// run), over the 100 MB bound; with decay 0, under it, and puts measured
/// with these options.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:0,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    meridian::cli::main()
}
