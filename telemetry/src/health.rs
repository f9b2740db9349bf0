//! Liveness that tells the truth: the tasks a service cannot live without (a queue dispatcher,
//! a watch, a lease loop) are spawned through [`Health::spawn_critical`]; if one ends while the
//! service is not shutting down (it returned, panicked or was aborted), `/healthz` answers 503
//! naming it, so the kubelet restarts the process instead of leaving it silently halted.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default, Debug)]
pub struct Health {
    /// Names of the critical tasks that stopped outside a shutdown, in the order they did.
    dead: Arc<Mutex<Vec<&'static str>>>,
}

impl Health {
    /// `Ok` while every critical task lives, else the names of those that stopped.
    pub fn check(&self) -> Result<(), Vec<&'static str>> {
        match self.dead.lock() {
            Ok(dead) if dead.is_empty() => Ok(()),
            Ok(dead) => Err(dead.clone()),
            // A panic while holding this lock is itself a dead task.
            Err(_) => Err(vec!["health bookkeeping"]),
        }
    }

    /// Marks `task` as stopped for good (for tasks that are not spawned through this type).
    pub fn mark_dead(&self, task: &'static str) {
        tracing::error!(task, "a critical task stopped; /healthz now fails");
        if let Ok(mut dead) = self.dead.lock() {
            dead.push(task);
        }
    }

    /// A guard that marks `task` dead when dropped before `shutdown` is cancelled: on a normal
    /// return, on a panic (the guard drops while unwinding) and on an abort alike.
    pub fn guard(&self, task: &'static str, shutdown: CancellationToken) -> TaskGuard {
        TaskGuard {
            health: self.clone(),
            task,
            shutdown,
        }
    }

    /// Spawns `fut` as the critical task `task` (see [`Health::guard`]).
    pub fn spawn_critical<F>(
        &self,
        task: &'static str,
        shutdown: CancellationToken,
        fut: F,
    ) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let guard = self.guard(task, shutdown);
        tokio::spawn(async move {
            let _guard = guard;
            fut.await
        })
    }
}

pub struct TaskGuard {
    health: Health,
    task: &'static str,
    shutdown: CancellationToken,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if !self.shutdown.is_cancelled() {
            self.health.mark_dead(self.task);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_ends_panics_or_is_aborted_is_dead_unless_shutting_down() {
        let cases: [(&str, u8, bool, bool); 5] = [
            ("returns early", 0, false, false),
            ("panics", 1, false, false),
            ("aborted", 2, false, false),
            ("returns after shutdown", 0, true, true),
            ("aborted after shutdown", 2, true, true),
        ];
        for (name, how, shut_first, healthy) in cases {
            let health = Health::default();
            let token = CancellationToken::new();
            let handle = health.spawn_critical("worker", token.clone(), async move {
                match how {
                    0 => {}
                    1 => panic!("boom"),
                    _ => std::future::pending::<()>().await,
                }
            });
            if shut_first {
                token.cancel();
            }
            if how == 2 {
                handle.abort();
            }
            let _ = handle.await;
            assert_eq!(health.check().is_ok(), healthy, "{name}");
            if !healthy {
                assert_eq!(health.check(), Err(vec!["worker"]), "{name}");
            }
        }
    }

    #[tokio::test]
    async fn a_living_task_keeps_health() {
        let health = Health::default();
        let token = CancellationToken::new();
        let handle = health.spawn_critical("watch", token.clone(), std::future::pending::<()>());
        tokio::task::yield_now().await;
        assert_eq!(health.check(), Ok(()));
        token.cancel();
        handle.abort();
        let _ = handle.await;
        assert_eq!(health.check(), Ok(()));
    }
}
