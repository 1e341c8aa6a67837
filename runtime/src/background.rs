//! Background work yields to requests.
//!
//! Counting clicks matters less than serving redirects. The threads that
//! aggregate clicks and write their counts can run under Linux's `SCHED_IDLE`
//! policy, which gives them the CPU only when nothing else wants it: when the
//! machine is saturated, request handling keeps every cycle, the click queue
//! fills and further clicks are dropped and counted; when load falls, the
//! background threads catch up. Threads started from one inherit its policy.

use serde::Deserialize;
use thread_priority::{
    NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
    set_thread_priority_and_policy, thread_native_id,
};

/// How background threads are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Only when the CPU would otherwise idle (`SCHED_IDLE`).
    #[default]
    Idle,
    /// Like request handling.
    Normal,
}

/// Applies `priority` to the calling thread.
pub fn set_current_thread(priority: Priority) -> Result<(), String> {
    let policy = match priority {
        Priority::Idle => NormalThreadSchedulePolicy::Idle,
        Priority::Normal => return Ok(()),
    };
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(policy),
    )
    .map_err(|e| format!("{e:?}"))
}

/// Whether the calling thread runs under `SCHED_IDLE`.
pub fn current_thread_is_idle() -> bool {
    matches!(
        thread_priority::thread_schedule_policy(),
        Ok(ThreadSchedulePolicy::Normal(
            NormalThreadSchedulePolicy::Idle
        ))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_applies_to_the_calling_thread_and_its_children_only() {
        let (idle, child_idle) = std::thread::spawn(|| {
            set_current_thread(Priority::Idle).expect("SCHED_IDLE");
            let child = std::thread::spawn(current_thread_is_idle)
                .join()
                .expect("child");
            (current_thread_is_idle(), child)
        })
        .join()
        .expect("thread");
        assert!(idle);
        assert!(child_idle);
        assert!(!current_thread_is_idle());
    }
}
