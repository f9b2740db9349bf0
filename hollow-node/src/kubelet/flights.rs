//! One review in flight per question. A process serves thousands of nodes from one listener
//! (or one per node), so a caller's first scrape of every node arrives as thousands of
//! requests at once that all miss the answer cache; without this each would send the
//! apiserver its own TokenReview or SubjectAccessReview. Concurrent askers of the same key
//! share the first one's answer, failure included, so an apiserver blackout costs one wait,
//! not one per request.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

type Cell<V> = Arc<tokio::sync::OnceCell<Result<V, String>>>;

/// Reviews in flight, by key.
pub struct Flights<K, V> {
    inflight: Mutex<HashMap<K, Cell<V>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> Default for Flights<K, V> {
    fn default() -> Self {
        Flights {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Flights<K, V> {
    /// `ask`'s answer for `key`, shared with every caller that asks for `key` before it is
    /// answered. If the caller running `ask` goes away (its request dropped), the next waiter
    /// runs it. The entry is gone once answered: the caller's TTL cache keeps answers.
    pub async fn share<F, Fut>(&self, key: &K, ask: F) -> Result<V, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, String>>,
    {
        let cell = self
            .inflight
            .lock()
            .ok()
            .map(|mut map| map.entry(key.clone()).or_default().clone());
        let Some(cell) = cell else {
            return ask().await;
        };
        let out = cell.get_or_init(ask).await.clone();
        if let Ok(mut map) = self.inflight.lock()
            && map.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell))
        {
            map.remove(key);
        }
        out
    }

    /// No key in flight (answered keys leave the map).
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.inflight.lock().map(|m| m.is_empty()).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn concurrent_askers_of_a_key_share_one_review() {
        let flights: Flights<&str, u32> = Flights::default();
        let asked = AtomicUsize::new(0);
        let ask = || async {
            asked.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, String>(7)
        };
        let same = futures::future::join_all((0..50).map(|_| flights.share(&"a", ask))).await;
        assert!(same.iter().all(|r| r == &Ok(7)));
        assert_eq!(asked.load(Ordering::SeqCst), 1, "one review for 50 askers");
        assert!(flights.is_empty(), "answered keys leave the map");

        // Another key is its own review; a later ask of an answered key asks again.
        let (a, b) = tokio::join!(flights.share(&"a", ask), flights.share(&"b", ask));
        assert_eq!((a, b), (Ok(7), Ok(7)));
        assert_eq!(asked.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_shared_too() {
        let flights: Flights<u8, u32> = Flights::default();
        let asked = AtomicUsize::new(0);
        let ask = || async {
            asked.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(30)).await;
            Err::<u32, _>("apiserver unreachable".to_string())
        };
        let all = futures::future::join_all((0..20).map(|_| flights.share(&1, ask))).await;
        assert!(all.iter().all(|r| r.is_err()));
        assert_eq!(asked.load(Ordering::SeqCst), 1, "a blackout costs one wait");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_asker_hands_the_review_on() {
        let flights: Flights<u8, u32> = Flights::default();
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, String>(1)
        };
        // The first asker gives up after 1 s; the second, waiting, runs its own review.
        let first = tokio::time::timeout(Duration::from_secs(1), flights.share(&0, slow));
        let second = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            flights.share(&0, || async { Ok::<_, String>(2) }).await
        };
        let (first, second) = tokio::join!(first, second);
        assert!(first.is_err(), "the first timed out");
        assert_eq!(second, Ok(2));
        assert!(flights.is_empty());
    }
}
