//! The load driver: N clients sending operations back to back for a time
//! (or a count), with every operation's latency in one histogram; and
//! systems compared by taking turns ([`alternate`]), so that a drift of the
//! machine's speed does not decide a ratio.
//!
//! It knows nothing about what an operation does; each figure passes a
//! closure that runs one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// How long a measurement runs.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Operations run before the clock starts, not counted (per client).
    pub warmup_ops: u64,
    /// How long the measured part runs.
    pub duration: Duration,
    /// Stop earlier once this many operations were measured (all clients
    /// together); `None`: run for `duration`.
    pub max_ops: Option<u64>,
}

/// What one measured run gave.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    /// Operations that succeeded.
    pub ops: u64,
    /// Operations that failed.
    pub failed: u64,
    /// Wall-clock time of the measured part, in seconds.
    pub seconds: f64,
    /// Successful operations per second.
    pub per_second: f64,
    /// Median latency, in microseconds.
    pub p50_us: f64,
    /// 99th-percentile latency, in microseconds.
    pub p99_us: f64,
    /// The first failure's message, if any.
    pub first_error: Option<String>,
}

fn histogram() -> Histogram<u64> {
    // 1 ns .. 100 s with 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("constant, valid bounds")
}

/// One operation of a system under test: `op(client, i)`. Boxed, so that
/// systems of different types can take turns in [`alternate`].
pub type Op = Arc<dyn Fn(usize, u64) -> BoxedRun + Send + Sync>;

/// The future of one [`Op`].
pub type BoxedRun = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Boxes `op` as an [`Op`].
pub fn op<F, Fut>(op: F) -> Op
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    Arc::new(move |client, i| Box::pin(op(client, i)))
}

/// Runs one system alone: `clients` clients, client `c` running `op(c, i)`
/// for i = 0, 1, 2, ...; first `warmup_ops` per client unmeasured, then
/// until the budget is spent.
pub async fn run(clients: usize, budget: Budget, op: &Op) -> LoadResult {
    let mut results = alternate(clients, budget, 1, std::slice::from_ref(op)).await;
    results
        .pop()
        .unwrap_or_else(|| unreachable!("one result per system"))
}

/// Measures `systems` against each other on a machine whose speed drifts
/// (a shared VM's does, by a factor of two within minutes): each is warmed
/// up, then they take turns, `rounds` slices of `budget.duration / rounds`
/// each, in reverse order every other round, so that a slow spell weighs on
/// all of them alike. One result per system, over all its slices.
pub async fn alternate(
    clients: usize,
    budget: Budget,
    rounds: u32,
    systems: &[Op],
) -> Vec<LoadResult> {
    let rounds = rounds.max(1);
    let slice = Budget {
        duration: budget.duration / rounds,
        max_ops: budget.max_ops.map(|max| max.div_ceil(u64::from(rounds))),
        ..budget
    };
    let mut measured: Vec<Measured> = Vec::with_capacity(systems.len());
    let mut next: Vec<Vec<u64>> = Vec::with_capacity(systems.len());
    for op in systems {
        next.push(warm_up(clients, budget.warmup_ops, op).await);
        measured.push(Measured::default());
    }
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..systems.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for system in order {
            let (slice, after) = measure(clients, slice, &systems[system], &next[system]).await;
            measured[system].add(slice);
            next[system] = after;
        }
    }
    measured.into_iter().map(Measured::result).collect()
}

/// Runs `warmup_ops` per client, all clients at once; where each client's
/// count goes on from.
async fn warm_up(clients: usize, warmup_ops: u64, op: &Op) -> Vec<u64> {
    let mut warm = Vec::new();
    for client in 0..clients {
        let op = op.clone();
        warm.push(tokio::spawn(async move {
            for i in 0..warmup_ops {
                let _ = op(client, i).await;
            }
        }));
    }
    for task in warm {
        let _ = task.await;
    }
    vec![warmup_ops; clients]
}

/// What one system's slices measured, added up.
struct Measured {
    latencies: Histogram<u64>,
    failed: u64,
    first_error: Option<String>,
    seconds: f64,
}

impl Default for Measured {
    fn default() -> Self {
        Measured {
            latencies: histogram(),
            failed: 0,
            first_error: None,
            seconds: 0.0,
        }
    }
}

impl Measured {
    fn add(&mut self, other: Measured) {
        let _ = self.latencies.add(&other.latencies);
        self.failed += other.failed;
        self.seconds += other.seconds;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn result(self) -> LoadResult {
        let ops = self.latencies.len();
        LoadResult {
            ops,
            failed: self.failed,
            seconds: self.seconds,
            per_second: ops as f64 / self.seconds.max(f64::EPSILON),
            p50_us: self.latencies.value_at_quantile(0.5) as f64 / 1_000.0,
            p99_us: self.latencies.value_at_quantile(0.99) as f64 / 1_000.0,
            first_error: self.first_error,
        }
    }
}

/// One measured slice: every client from its `start[client]`-th operation
/// until the budget is spent; and where each client got to.
async fn measure(clients: usize, budget: Budget, op: &Op, start: &[u64]) -> (Measured, Vec<u64>) {
    let started = Instant::now();
    let deadline = started + budget.duration;
    let per_client_max = budget
        .max_ops
        .map(|max| max.div_ceil(clients.max(1) as u64));
    let mut tasks = Vec::new();
    for client in 0..clients {
        let op = op.clone();
        let first = start.get(client).copied().unwrap_or(0);
        tasks.push(tokio::spawn(async move {
            let mut measured = Measured::default();
            let mut i = first;
            while Instant::now() < deadline && per_client_max.is_none_or(|max| i - first < max) {
                let begun = Instant::now();
                match op(client, i).await {
                    Ok(()) => {
                        let nanos = u64::try_from(begun.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        measured.latencies.saturating_record(nanos.max(1));
                    }
                    Err(error) => {
                        measured.failed += 1;
                        measured
                            .first_error
                            .get_or_insert_with(|| format!("{error:#}"));
                    }
                }
                i += 1;
                // A client waits for its answer and sends the next command,
                // as one on a network would, letting the others go first.
                // Without this, a client whose commands never wait runs
                // them back to back until tokio's cooperative budget makes
                // it yield, and the others' latencies measure that queue:
                // 20 to 30 ms at p99 at concurrency 32 in process, against
                // about 0.1 ms with it. Alone, a client has nobody to let
                // go first, and a yield would only hand it to the other
                // worker thread, cache-cold.
                if clients > 1 {
                    tokio::task::yield_now().await;
                }
            }
            (measured, i)
        }));
    }
    let mut measured = Measured::default();
    let mut next = start.to_vec();
    next.resize(clients, 0);
    for (client, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok((slice, after)) => {
                measured.add(slice);
                next[client] = after;
            }
            Err(join) => {
                measured.failed += 1;
                measured
                    .first_error
                    .get_or_insert_with(|| format!("a client panicked: {join}"));
            }
        }
    }
    measured.seconds = started.elapsed().as_secs_f64();
    (measured, next)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Each slice of one operation: the order of the calls is the order of
    /// the slices, and each system's count goes on across its slices.
    #[tokio::test]
    async fn systems_take_turns_in_alternating_order_and_count_on() -> anyhow::Result<()> {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let systems: Vec<Op> = (0..2)
            .map(|system| {
                let calls = calls.clone();
                op(move |_, i| {
                    let calls = calls.clone();
                    async move {
                        calls
                            .lock()
                            .map_err(|_| anyhow::anyhow!("poisoned"))?
                            .push((system, i));
                        Ok(())
                    }
                })
            })
            .collect();
        let budget = Budget {
            warmup_ops: 1,
            duration: Duration::from_secs(60),
            max_ops: Some(4),
        };
        let results = alternate(1, budget, 4, &systems).await;

        let calls = calls.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let warm_ups = [(0, 0), (1, 0)];
        // Round by round: 0 then 1, 1 then 0, ...
        let slices = [
            (0, 1),
            (1, 1),
            (1, 2),
            (0, 2),
            (0, 3),
            (1, 3),
            (1, 4),
            (0, 4),
        ];
        assert_eq!(calls[..2], warm_ups);
        assert_eq!(calls[2..], slices);
        assert_eq!(results.iter().map(|r| r.ops).collect::<Vec<_>>(), [4, 4]);
        assert!(results.iter().all(|r| r.failed == 0 && r.seconds > 0.0));
        Ok(())
    }
}
