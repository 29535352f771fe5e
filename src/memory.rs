//! Process-wide memory settings for the binaries.

/// Opts this process out of transparent huge pages (Linux `PR_SET_THP_DISABLE`; elsewhere a
/// no-op). Where THP is set to `always`, every 2 MiB region a buffer touches is backed whole,
/// so a process that streams disks through a few chunk-sized buffers would hold far more
/// memory than it uses. Call it first thing in `main`; children inherit it.
pub fn opt_out_of_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process's memory map; it reads and
    // writes no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
