//! What this host last learned of each stream's head, so that a command can
//! run its handler without first asking the store where the stream is.
//!
//! Only the command flow uses it, under the stream's turn. A head handed out
//! here is a guess, never a fact: the append that follows expects exactly
//! that sequence, so a stale guess costs a re-run of the handler and cannot
//! cause a wrong write. It must not be used where nothing checks the guess.

use super::cache::Lru;
use crate::model::StreamId;

/// The heads of the streams this host used most recently.
#[derive(Debug)]
pub(super) struct StreamHeads {
    entries: Lru<StreamId, Head>,
}

#[derive(Debug, Clone, Copy)]
struct Head {
    sequence: u64,
    /// False once a guess for the stream was stale: another writer appends
    /// to it, and a guess would keep costing a re-run.
    guessable: bool,
}

impl StreamHeads {
    /// Remembers up to `capacity` streams; 0 remembers none, so that every
    /// command reads its stream's head.
    pub(super) fn new(capacity: usize) -> Self {
        StreamHeads {
            entries: Lru::new(capacity),
        }
    }

    /// The sequence to run a command on `stream` at, without reading it,
    /// when this host knows the head and no other writer was seen moving it.
    pub(super) fn guess(&self, stream: &StreamId) -> Option<u64> {
        let mut entries = self.entries.lock()?;
        entries
            .get(stream)
            .filter(|head| head.guessable)
            .map(|head| head.sequence)
    }

    /// `stream` was at `sequence`: read from the store, or appended up to.
    pub(super) fn saw(&self, stream: &StreamId, sequence: u64) {
        let Some(mut entries) = self.entries.lock() else {
            return;
        };
        match entries.get_mut(stream) {
            Some(head) => head.sequence = sequence,
            None => {
                entries.put(
                    stream.clone(),
                    Head {
                        sequence,
                        guessable: true,
                    },
                );
            }
        }
    }

    /// A guess for `stream` was stale: it is at `actual`, moved by another
    /// writer. Commands to it read its head from now on.
    pub(super) fn moved_by_another(&self, stream: &StreamId, actual: u64) {
        let Some(mut entries) = self.entries.lock() else {
            return;
        };
        entries.put(
            stream.clone(),
            Head {
                sequence: actual,
                guessable: false,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(key: &str) -> StreamId {
        StreamId::new("Bank", "Account", key).expect("valid")
    }

    #[test]
    fn a_head_seen_is_guessed_until_another_writer_moves_the_stream() {
        let heads = StreamHeads::new(2);
        let one = stream("one");
        assert_eq!(heads.guess(&one), None);
        heads.saw(&one, 3);
        assert_eq!(heads.guess(&one), Some(3));
        heads.saw(&one, 4);
        assert_eq!(heads.guess(&one), Some(4));
        heads.moved_by_another(&one, 9);
        assert_eq!(heads.guess(&one), None);
        // Seeing it again does not make it guessable: the other writer is
        // still there.
        heads.saw(&one, 10);
        assert_eq!(heads.guess(&one), None);
    }

    #[test]
    fn the_least_recently_used_stream_is_forgotten_and_zero_keeps_none() {
        let heads = StreamHeads::new(2);
        for (key, sequence) in [("a", 1), ("b", 2), ("c", 3)] {
            heads.saw(&stream(key), sequence);
        }
        assert_eq!(heads.guess(&stream("a")), None);
        assert_eq!(heads.guess(&stream("c")), Some(3));

        let none = StreamHeads::new(0);
        none.saw(&stream("a"), 1);
        assert_eq!(none.guess(&stream("a")), None);
    }
}
