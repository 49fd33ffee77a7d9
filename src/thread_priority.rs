//! Lower scheduling priority for a node's background threads.
//!
//! On a node with few cores, the pull pipeline's stages compete for them: the store's writer
//! is the slowest stage, and every moment it waits for a core behind the page decoder or
//! the WAL checkpoint (which have time to spare: they run ahead of it, or catch up later)
//! is added to the sync's duration. Raising the writer's priority needs privileges a
//! container does not have; lowering the background threads' does not.

/// Niceness for threads whose work can wait for the writer and the API.
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's priority to `nice` (Linux keeps one per thread); elsewhere,
/// or if the kernel refuses, the thread keeps the default and only logs why.
pub fn lower_current_thread(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
            tracing::debug!(error = %e, nice, "cannot lower this thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// The calling thread's niceness (Linux; 0 elsewhere).
pub fn current_thread_nice() -> i32 {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(0)
    }
    #[cfg(not(target_os = "linux"))]
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn only_the_calling_thread_is_lowered() {
        let main_before = current_thread_nice();
        let lowered = std::thread::spawn(|| {
            let before = current_thread_nice();
            lower_current_thread(before + 3);
            current_thread_nice()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (main_before + 3).min(19));
        assert_eq!(current_thread_nice(), main_before);
    }
}
