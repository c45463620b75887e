//! The C allocator's arenas, set once at start-up.
//!
//! glibc's malloc gives each thread that contends for a lock an arena of its own, up to
//! eight per core, and an arena keeps the pages it freed. The platform allocates on many
//! threads (the async runtime, its blocking pool where Parquet is encoded, librdkafka's
//! threads and the poll loop), so freed batches, chunks and encoder buffers stayed
//! resident in a dozen arenas at once. Two arenas keep them shared and bounded (measured
//! on a 100-partition backlog: BENCHMARKS.md, "Peak RSS as the backlog grows").

/// Most malloc arenas of this process (and of what it forks before `exec`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENA_MAX: i32 = 2;

/// Limits the allocator's arenas; call first thing in `main`, before any thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads exist.
    let _ = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX) };
}
