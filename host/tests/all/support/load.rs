//! Load for the swap tests: clients sending commands over HTTP back to back
//! while a test swaps versions under them, each call kept with when it was
//! sent and answered and the events it appended, and every failure kept
//! with what it answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::Api;

/// One answered call: when it was sent and answered, and the ids of the
/// events it appended.
pub struct Call {
    pub sent: Instant,
    pub answered: Instant,
    pub event_ids: Vec<String>,
}

/// What the clients did, once stopped.
pub struct Finished {
    /// Every call answered with 200, in the order each client sent them.
    pub calls: Vec<Call>,
    /// Every other answer (or transport error), as text.
    pub failures: Vec<String>,
}

/// The request client `c` sends as its `i`-th call: the path (under the
/// API's URL) and the body, POSTed.
pub type Request = Arc<dyn Fn(usize, u64) -> (String, String) + Send + Sync>;

/// Clients sending commands until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    clients: Vec<JoinHandle<(Vec<Call>, Vec<String>)>>,
}

/// The ids of the events a command's answer lists.
pub fn event_ids(answer: &Value) -> Vec<String> {
    answer["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["eventId"].as_str().map(str::to_owned))
        .collect()
}

impl Load {
    /// Starts `clients` clients against the API at `url`, each sending
    /// `request(client, i)` for i = 0, 1, ... as soon as its last call is
    /// answered.
    pub fn start(url: &str, clients: usize, request: Request) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|client| {
                let (api, stop, answered) =
                    (Api::new(url.to_owned()), stop.clone(), answered.clone());
                let request = request.clone();
                tokio::spawn(async move {
                    let mut calls = Vec::new();
                    let mut failures = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let (path, body) = request(client, i);
                        let sent = Instant::now();
                        match api.post(&path, &body).await {
                            Ok((StatusCode::OK, answer)) => calls.push(Call {
                                sent,
                                answered: Instant::now(),
                                event_ids: event_ids(&answer),
                            }),
                            other => failures.push(format!("{path} {body}: {other:?}")),
                        }
                        answered.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    (calls, failures)
                })
            })
            .collect();
        Load {
            stop,
            answered,
            clients,
        }
    }

    /// Waits until `calls` more calls are answered than when it is
    /// called: the load runs through whatever the test does between two of
    /// these. (Calls in flight when it is called may be among them: with
    /// `N` clients, `calls - N` of them at least were sent after.)
    pub async fn progressed(&self, calls: usize) -> anyhow::Result<()> {
        let seen = self.answered.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.answered.load(Ordering::Relaxed) >= seen + calls {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "the load stalled");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Stops the clients once their calls in flight are answered.
    pub async fn stop(self) -> anyhow::Result<Finished> {
        self.stop.store(true, Ordering::Relaxed);
        let mut finished = Finished {
            calls: Vec::new(),
            failures: Vec::new(),
        };
        for client in self.clients {
            let (mut calls, mut failures) = client.await?;
            finished.calls.append(&mut calls);
            finished.failures.append(&mut failures);
        }
        Ok(finished)
    }
}
