//! The create gate: Nodes and Leases are only created through it, and shutdown closes it
//! before deleting them, so nothing can bring one back while (or after) the process removes
//! its nodes. A create that passed the gate runs to its end on a task of its own even if the
//! work that asked for it is dropped, because a request already on the wire lands anyway; the
//! gate closes only once every such create has finished.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::RwLock;

#[derive(Clone, Default)]
pub struct CreateGate {
    /// True once closed. Creates hold a read guard while in flight.
    closed: Arc<RwLock<bool>>,
}

impl CreateGate {
    /// Runs `create` unless the gate is closed (then `None`).
    pub async fn run<T, F>(&self, create: F) -> Option<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let guard = self.closed.clone().read_owned().await;
        if *guard {
            return None;
        }
        tokio::spawn(async move {
            let out = create.await;
            drop(guard);
            out
        })
        .await
        .ok()
    }

    /// Closes the gate: waits (up to `within`) for the creates in flight, after which none
    /// starts. False when some were still running at the deadline (their outcome unknown).
    pub async fn close(&self, within: Duration) -> bool {
        // tokio's RwLock is fair: once this waits, later `run`s queue behind it and then see
        // the gate closed.
        match tokio::time::timeout(within, self.closed.write()).await {
            Ok(mut closed) => {
                *closed = true;
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn close_waits_for_creates_in_flight_and_refuses_later_ones() {
        let gate = CreateGate::default();
        let landed = Arc::new(AtomicUsize::new(0));
        let (g, l) = (gate.clone(), landed.clone());
        // A create that takes 5 s, whose caller is dropped after 1 s: it still lands.
        let caller = tokio::spawn(async move {
            g.run(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                l.fetch_add(1, Ordering::SeqCst);
            })
            .await
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        caller.abort();
        let t0 = tokio::time::Instant::now();
        assert!(gate.close(Duration::from_secs(30)).await);
        assert_eq!(
            landed.load(Ordering::SeqCst),
            1,
            "the create in flight landed first"
        );
        assert!(
            t0.elapsed() >= Duration::from_secs(4),
            "close waited for it"
        );
        let l = landed.clone();
        let later = gate
            .run(async move {
                l.fetch_add(1, Ordering::SeqCst);
            })
            .await;
        assert_eq!(later, None, "closed: nothing runs");
        assert_eq!(landed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn close_gives_up_on_a_hung_create() {
        let gate = CreateGate::default();
        let g = gate.clone();
        let _hung = tokio::spawn(async move { g.run(std::future::pending::<()>()).await });
        tokio::task::yield_now().await;
        assert!(!gate.close(Duration::from_secs(10)).await);
    }
}
