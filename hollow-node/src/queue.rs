//! A delay queue for per-node and per-pod work with a few workers. Adding an item that is
//! already queued keeps the earlier deadline; items are sharded by key, so one pod or node is
//! never worked on by two workers at once.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue::Key;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Work {
    Lease(u32),
    NodeStatus(u32),
    Pod(Arc<str>),
}

#[derive(Clone)]
pub struct Queue {
    tx: mpsc::UnboundedSender<(Work, Duration)>,
}

impl Queue {
    pub fn add(&self, work: Work, after: Duration) {
        // Fails only after shutdown, when nothing needs doing any more.
        let _ = self.tx.send((work, after));
    }
}

/// The worker for `work`: node work (leases, node status) has its own half of the workers, so
/// pod transitions never wait behind a round of lease renewals and vice versa.
fn shard(work: &Work, n: usize) -> usize {
    let mut h = DefaultHasher::new();
    work.hash(&mut h);
    let h = h.finish();
    if n < 2 {
        return 0;
    }
    let node_workers = n / 2;
    match work {
        Work::Lease(_) | Work::NodeStatus(_) => (h % node_workers as u64) as usize,
        Work::Pod(_) => node_workers + (h % (n - node_workers) as u64) as usize,
    }
}

/// Starts the dispatcher and `workers` workers that call `handle` for each due item, until
/// `shutdown`. Returns the queue and a join handle of all tasks.
pub fn start<F, Fut>(
    workers: usize,
    shutdown: CancellationToken,
    handle: F,
) -> (Queue, tokio::task::JoinHandle<()>)
where
    F: Fn(Work) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<(Work, Duration)>();
    let handle = Arc::new(handle);
    let mut senders = Vec::with_capacity(workers);
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers.max(1) {
        let (wtx, mut wrx) = mpsc::channel::<Work>(256);
        senders.push(wtx);
        let handle = handle.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let work = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    w = wrx.recv() => match w { Some(w) => w, None => return },
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = handle(work) => {},
                }
            }
        }));
    }
    let dispatcher = tokio::spawn(async move {
        let mut delays: DelayQueue<Work> = DelayQueue::new();
        let mut keys: HashMap<Work, (Key, Instant)> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                item = rx.recv() => {
                    let Some((work, after)) = item else { break };
                    let deadline = Instant::now() + after;
                    match keys.get_mut(&work) {
                        Some((key, at)) => {
                            if deadline < *at {
                                delays.reset_at(key, deadline);
                                *at = deadline;
                            }
                        }
                        None => {
                            let key = delays.insert_at(work.clone(), deadline);
                            keys.insert(work, (key, deadline));
                        }
                    }
                }
                Some(expired) = delays.next(), if !delays.is_empty() => {
                    let work = expired.into_inner();
                    keys.remove(&work);
                    let i = shard(&work, senders.len());
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = senders[i].send(work) => {},
                    }
                }
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    (Queue { tx }, dispatcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn lanes() {
        for n in [1usize, 2, 4, 32] {
            let node_workers = if n < 2 { 1 } else { n / 2 };
            for i in 0..100u32 {
                let w = shard(&Work::Lease(i), n);
                assert!(w < node_workers.min(n), "lease {i} of {n} on worker {w}");
                let p = shard(&Work::Pod(format!("ns/p{i}").into()), n);
                assert!(
                    p < n && (n < 2 || p >= node_workers),
                    "pod {i} of {n} on worker {p}"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn dedupes_and_keeps_earliest_deadline() {
        let seen: Arc<Mutex<Vec<(Work, u128)>>> = Arc::default();
        let t0 = Instant::now();
        let s = seen.clone();
        let token = CancellationToken::new();
        let (q, join) = start(2, token.clone(), move |w| {
            let s = s.clone();
            async move {
                if let Ok(mut v) = s.lock() {
                    v.push((w, t0.elapsed().as_millis() / 100 * 100));
                }
            }
        });
        q.add(Work::Lease(1), Duration::from_secs(5));
        q.add(Work::Lease(1), Duration::from_secs(2)); // earlier wins
        q.add(Work::Lease(1), Duration::from_secs(9)); // later is dropped
        q.add(Work::Pod("a/b".into()), Duration::from_secs(1));
        q.add(Work::Pod("a/b".into()), Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(20)).await;
        token.cancel();
        let _ = join.await;
        let mut got = seen.lock().map(|v| v.clone()).unwrap_or_default();
        got.sort_by_key(|(_, t)| *t);
        assert_eq!(
            got,
            vec![(Work::Pod("a/b".into()), 1000), (Work::Lease(1), 2000)]
        );
    }
}
