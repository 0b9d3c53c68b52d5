//! The loop of a task that follows the store by position: the dispatcher's
//! one per destination and the host's projection propagation.
//!
//! It owns when a round runs: again at once after progress, after the
//! store's change signal (or a periodic recheck, in case a signal was lost)
//! when idle, after a growing pause when a round failed or stalled. It
//! holds its owner only weakly between rounds, so the task ends when the
//! owner is dropped; and it stops, between rounds, when its [`Followers`]
//! are stopped. It must not know what a round does.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

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

/// The follower tasks of one owner, and their stop: dropped, they are
/// aborted.
#[derive(Debug)]
pub(crate) struct Followers {
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<(String, JoinHandle<()>)>>,
}

impl Default for Followers {
    fn default() -> Self {
        Followers {
            stop: watch::Sender::new(false),
            tasks: Mutex::default(),
        }
    }
}

impl Drop for Followers {
    fn drop(&mut self) {
        for (_, task) in self.tasks.get_mut().unwrap_or_else(|e| e.into_inner()) {
            task.abort();
        }
    }
}

impl Followers {
    /// Spawns a task that runs `round` on `owner` until `owner` is dropped
    /// or these followers are [stopped](Self::stop).
    ///
    /// `changes` is the store's signal that there is something new to
    /// follow; `pause` gives the pause after the `n`th consecutive failed
    /// or stalled round. `name` identifies the follower in logs.
    pub(crate) fn follow<T, E, R, F>(
        &self,
        name: String,
        owner: Weak<T>,
        changes: watch::Receiver<u64>,
        pause: impl Fn(u32) -> Duration + Send + 'static,
        round: R,
    ) where
        T: Send + Sync + 'static,
        E: fmt::Display + 'static,
        R: Fn(Arc<T>) -> F + Send + 'static,
        F: Future<Output = Result<Round, E>> + Send + 'static,
    {
        let stop = self.stop.subscribe();
        let task = tokio::spawn(follow(name.clone(), owner, changes, stop, pause, round));
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, task));
    }

    /// Stops every follower: one waiting starts no other round, one in a
    /// round finishes it if it can by `deadline`, and is abandoned (its task
    /// aborted) if not. An abandoned round moved its checkpoint past only
    /// what it had finished, so what it was delivering is delivered again
    /// by the next run (at least once).
    /// Returns how many were abandoned.
    pub(crate) async fn stop(&self, deadline: Instant) -> usize {
        self.stop.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let mut abandoned = 0;
        for (name, mut task) in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                tracing::warn!(
                    follower = name,
                    "abandoned a round that was still running at the deadline"
                );
                abandoned += 1;
            }
        }
        abandoned
    }
}

/// The loop of one follower (see [`Followers::follow`]).
async fn follow<T, E, R, F>(
    name: String,
    owner: Weak<T>,
    mut changes: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
    pause: impl Fn(u32) -> Duration,
    round: R,
) where
    E: fmt::Display,
    R: Fn(Arc<T>) -> F,
    F: Future<Output = Result<Round, E>>,
{
    let mut failed_rounds = 0;
    loop {
        changes.mark_unchanged();
        if *stop.borrow_and_update() {
            return;
        }
        // Held only for the round: the owner's drop ends the task.
        let Some(owner) = owner.upgrade() else {
            return;
        };
        let round = round(owner).await.unwrap_or_else(|error| {
            tracing::warn!(follower = name, %error, "a round failed");
            Round::Stalled
        });
        let wait = match round {
            Round::Progress => {
                failed_rounds = 0;
                continue;
            }
            Round::Idle => {
                failed_rounds = 0;
                IDLE_RECHECK
            }
            Round::Stalled => {
                failed_rounds += 1;
                pause(failed_rounds)
            }
        };
        tokio::select! {
            // Its sender lives as long as the task is not aborted.
            _ = stop.changed() => return,
            _ = tokio::time::sleep(wait) => {}
            Ok(()) = changes.changed(), if round == Round::Idle => {
                tokio::time::sleep(GATHER).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Followers of `owner`: one idle, and one whose rounds take `round`.
    fn followers(owner: &Arc<()>, round: Duration, finished: &Arc<AtomicU32>) -> Followers {
        let followers = Followers::default();
        // The store's signal, never sent.
        let (_, changes) = watch::channel(0);
        followers.follow(
            "idle".to_owned(),
            Arc::downgrade(owner),
            changes.clone(),
            |_| Duration::from_secs(1),
            |_| async { Ok::<_, String>(Round::Idle) },
        );
        let finished = Arc::clone(finished);
        followers.follow(
            "busy".to_owned(),
            Arc::downgrade(owner),
            changes,
            |_| Duration::from_secs(1),
            move |_| {
                let finished = Arc::clone(&finished);
                async move {
                    tokio::time::sleep(round).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, String>(Round::Idle)
                }
            },
        );
        followers
    }

    #[tokio::test]
    async fn a_stop_lets_a_round_finish_by_the_deadline_and_starts_no_other() {
        let (owner, finished) = (Arc::new(()), Arc::new(AtomicU32::new(0)));
        let followers = followers(&owner, Duration::from_millis(50), &finished);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let abandoned = followers
            .stop(Instant::now() + Duration::from_secs(60))
            .await;
        assert_eq!(abandoned, 0);
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "the round in progress finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(finished.load(Ordering::SeqCst), 1, "and no other started");
    }

    #[tokio::test]
    async fn a_round_still_running_at_the_deadline_is_abandoned() {
        let (owner, finished) = (Arc::new(()), Arc::new(AtomicU32::new(0)));
        let followers = followers(&owner, Duration::from_secs(3600), &finished);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let abandoned = followers
            .stop(Instant::now() + Duration::from_millis(50))
            .await;
        assert_eq!(abandoned, 1, "the busy follower, not the idle one");
        assert_eq!(finished.load(Ordering::SeqCst), 0);
    }
}
