//! The loop of a task that follows the store by position: the dispatcher's
//! one per destination and the host's projection propagation.
//!
//! It owns when a round runs: again at once after progress, after the
//! store's change signal (or a periodic recheck, in case a signal was lost)
//! when idle, after a growing pause when a round failed or stalled. It
//! holds its owner only weakly between rounds, so the task ends when the
//! owner is dropped. It must not know what a round does.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long an idle follower waits for a signal before it looks anyway.
const IDLE_RECHECK: Duration = Duration::from_secs(2);

/// How long a follower woken by a signal waits for more rows before its
/// round, so that a steady trickle of commands is taken a few at a time: a
/// round's fixed costs (its claim, its checkpoint write, in SQLite an
/// fsync) are then shared. Small next to any delivery latency that matters.
const GATHER: Duration = Duration::from_millis(5);

/// What a round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Round {
    /// It moved its checkpoint; more may be waiting.
    Progress,
    /// Nothing to do, or another follower holds the checkpoint.
    Idle,
    /// It could not take everything it read, or it failed (and logged
    /// why); the rest waits for the next round, after a pause.
    Stalled,
}

/// Spawns a task that runs `round` on `owner` until `owner` is dropped.
///
/// `changes` is the store's signal that there is something new to follow;
/// `pause` gives the pause after the `n`th consecutive failed or stalled
/// round. `name` identifies the follower in logs.
pub(crate) fn follow<T, E, R, F>(
    name: String,
    owner: Weak<T>,
    mut changes: watch::Receiver<u64>,
    pause: impl Fn(u32) -> Duration + Send + 'static,
    round: R,
) -> JoinHandle<()>
where
    T: Send + Sync + 'static,
    E: fmt::Display,
    R: Fn(Arc<T>) -> F + Send + 'static,
    F: Future<Output = Result<Round, E>> + Send,
{
    tokio::spawn(async move {
        let mut failed_rounds = 0;
        loop {
            changes.mark_unchanged();
            // Held only for the round: the owner's drop ends the task.
            let Some(owner) = owner.upgrade() else {
                return;
            };
            let round = round(owner).await.unwrap_or_else(|error| {
                tracing::warn!(follower = name, %error, "a round failed");
                Round::Stalled
            });
            match round {
                Round::Progress => failed_rounds = 0,
                Round::Idle => {
                    failed_rounds = 0;
                    if let Ok(Ok(())) = tokio::time::timeout(IDLE_RECHECK, changes.changed()).await
                    {
                        tokio::time::sleep(GATHER).await;
                    }
                }
                Round::Stalled => {
                    failed_rounds += 1;
                    tokio::time::sleep(pause(failed_rounds)).await;
                }
            }
        }
    })
}
