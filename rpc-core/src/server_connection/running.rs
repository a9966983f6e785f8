//! The calls running on a connection: each call's task under its id, so that a CANCEL, the
//! connection's end or a shutdown can stop it, and whoever accepted the connection can see
//! how many there are ([`ConnectionActivity`]).
//!
//! An id names a call only while it runs: a client may reuse it as soon as it has sent
//! CANCEL. A task that ends therefore removes its own entry only (matched by task id), so
//! the cleanup of a call cancelled just as it finished never removes the entry of the new
//! call that took its id.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::task::{AbortHandle, Id, JoinHandle};

use crate::recover::lock;
use crate::transport::ConnectionActivity;

/// The running calls of one connection.
pub(super) struct RunningCalls {
    tasks: Mutex<HashMap<u32, AbortHandle>>,
    activity: ConnectionActivity,
}

impl RunningCalls {
    pub(super) fn new(activity: ConnectionActivity) -> Self {
        RunningCalls {
            tasks: Mutex::new(HashMap::new()),
            activity,
        }
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<u32, AbortHandle>> {
        lock(&self.tasks)
    }

    /// Registers the task `spawn` starts as call `call_id`'s. The table stays locked while
    /// it starts, so the task cannot end (and look for its entry) before the entry exists.
    pub(super) fn spawn(&self, call_id: u32, spawn: impl FnOnce() -> JoinHandle<()>) {
        let mut tasks = self.tasks();
        let task = spawn();
        if tasks.insert(call_id, task.abort_handle()).is_none() {
            self.activity.call_started();
        }
    }

    /// Takes call `call_id` out of the table (a cancel names the call), handing back its
    /// task to stop.
    pub(super) fn remove(&self, call_id: u32) -> Option<AbortHandle> {
        let task = self.tasks().remove(&call_id);
        if task.is_some() {
            self.activity.call_ended();
        }
        task
    }

    /// Takes call `call_id` out of the table if task `task` is the one running it (a task
    /// that ends removes its own entry, never a newer call's under the same id); whether
    /// it did.
    pub(super) fn remove_own(&self, call_id: u32, task: Id) -> bool {
        let mut tasks = self.tasks();
        if tasks
            .get(&call_id)
            .is_none_or(|running| running.id() != task)
        {
            return false;
        }
        tasks.remove(&call_id);
        self.activity.call_ended();
        true
    }

    /// Whether call `call_id` is running.
    pub(super) fn contains(&self, call_id: u32) -> bool {
        // Only the connection's driver adds calls, counting each while the table is still
        // locked, so a count of none read here means an empty table: the usual case while
        // handlers finish without waiting, answered without taking the lock.
        self.activity.calls_in_flight() > 0 && self.tasks().contains_key(&call_id)
    }

    /// How many calls are running.
    pub(super) fn len(&self) -> usize {
        self.tasks().len()
    }

    /// Stops every running call.
    pub(super) fn abort_all(&self) {
        for (_, task) in self.tasks().drain() {
            task.abort();
        }
        self.activity.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_finished_task_never_removes_a_newer_call_under_its_id() {
        let activity = ConnectionActivity::default();
        let running = RunningCalls::new(activity.clone());
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let mut old_task = None;
        running.spawn(7, || {
            let task = tokio::spawn(async {
                let _ = released.await;
            });
            old_task = Some(task.id());
            task
        });
        // The client cancels call 7 and at once reuses its id for a new call.
        assert!(running.remove(7).is_some());
        running.spawn(7, || tokio::spawn(std::future::pending()));
        assert_eq!(activity.calls_in_flight(), 1);
        // The old call's task ends (it finished just as the cancel came) and cleans up.
        let _ = release.send(());
        let old_task = old_task.unwrap();
        assert!(!running.remove_own(7, old_task), "it removed the new call");
        assert!(running.contains(7));
        assert_eq!(activity.calls_in_flight(), 1);
        running.abort_all();
        assert_eq!(activity.calls_in_flight(), 0);
    }

    #[tokio::test]
    async fn a_task_removes_its_own_entry() {
        let running = RunningCalls::new(ConnectionActivity::default());
        let mut id = None;
        running.spawn(3, || {
            let task = tokio::spawn(std::future::pending());
            id = Some(task.id());
            task
        });
        assert!(running.remove_own(3, id.unwrap()));
        assert_eq!(running.len(), 0);
    }
}
