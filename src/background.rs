//! Threads that work beside the request path (the SQLite audit lookup merge, the webhook
//! dispatcher) give way to it: under a load that keeps every core busy, they wait.

/// How far a background thread gives way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    /// Linux's idle scheduling class (`SCHED_IDLE`): only CPU time no other thread wants. For
    /// work that holds no lock another thread may wait for.
    Idle,
    /// The lowest priority of the normal class (nice 19): a small share under load, never none.
    Lowest,
}

/// Lowers the calling thread's priority; false when the system refused (or is not Linux).
pub(crate) fn lower_priority(priority: Priority) -> bool {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
            ThreadPriority, ThreadSchedulePolicy,
        };
        let policy = match priority {
            Priority::Idle => NormalThreadSchedulePolicy::Idle,
            Priority::Lowest => NormalThreadSchedulePolicy::Other,
        };
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(policy),
        )
        .is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = priority;
        false
    }
}
