//! One partition's segments: which offsets to count, skip or write first,
//! and the segment cut out to be written. Pure: no I/O, so every case of
//! the protocol above is a unit test.

use std::sync::Arc;

use links::clicks::{Aggregator, ClickBatch, ClickEvent, UserAgentClassifier};
use stores::scylla::Progress;
use uuid::Uuid;

/// What to do with the event at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Counted before: skip it.
    Skip,
    /// Count it (or set it aside as a dead letter), then call
    /// [`Source::taken`].
    Take,
    /// Write what is pending first, then ask again: the event lies past
    /// the end of a write another worker may have left half done.
    FlushFirst,
}

/// One partition this worker owns.
#[derive(Debug)]
pub struct Source {
    pub partition: i32,
    owner: Uuid,
    start: i64,
    end: i64,
    /// While events before it may already be in some rows: the `pending`
    /// read when the partition was claimed.
    replay_end: Option<i64>,
    aggregator: Aggregator,
}

impl Source {
    pub fn new(
        partition: i32,
        owner: Uuid,
        progress: Progress,
        classifier: Arc<UserAgentClassifier>,
    ) -> Self {
        Self {
            partition,
            owner,
            start: progress.committed,
            end: progress.committed,
            replay_end: (progress.pending > progress.committed).then_some(progress.pending),
            aggregator: Aggregator::new(classifier),
        }
    }

    pub fn admit(&mut self, offset: i64) -> Admit {
        if offset < self.start {
            return Admit::Skip;
        }
        if let Some(replay_end) = self.replay_end
            && offset >= replay_end
        {
            if self.end > self.start {
                // No event lies between the last one and `replay_end`, so
                // the segment may end there, where some rows already are.
                self.end = replay_end;
                return Admit::FlushFirst;
            }
            self.start = replay_end;
            self.end = replay_end;
            self.replay_end = None;
        }
        Admit::Take
    }

    /// The event at `offset` was taken: counted, or set aside.
    pub fn taken(&mut self, offset: i64) {
        self.end = self.end.max(offset + 1);
    }

    pub fn record(&mut self, event: &ClickEvent) {
        self.aggregator.record(event);
    }

    /// Rows counted in memory since the last write.
    pub fn pending_rows(&self) -> usize {
        self.aggregator.pending_rows()
    }

    /// Whether events were taken since the last write.
    pub fn has_segment(&self) -> bool {
        self.end > self.start
    }

    /// Whether the segment may be written now. Not while it ends short of
    /// a write another worker may have left half done: some rows may
    /// already hold events up to there, others not, so the segment must
    /// end exactly there ([`Admit::FlushFirst`] or its last event).
    pub fn writable(&self) -> bool {
        self.has_segment() && self.replay_end.is_none_or(|r| self.end >= r)
    }

    #[cfg(test)]
    fn end(&self) -> i64 {
        self.end
    }

    fn progress(&self) -> Progress {
        Progress {
            committed: self.start,
            pending: self.replay_end.map_or(self.end, |r| r.max(self.end)),
        }
    }

    /// Takes the segment out to be written, if it may be (see
    /// [`Source::writable`]); the next one starts where it ends. Call it
    /// only when no write is under way: `committed` says the previous
    /// segment is written.
    pub fn cut(&mut self) -> Option<Cut> {
        if !self.writable() {
            return None;
        }
        let cut = Cut {
            partition: self.partition,
            owner: self.owner,
            progress: self.progress(),
            start: self.start,
            end: self.end,
            batch: self.aggregator.take(),
        };
        self.start = self.end;
        if self.replay_end.is_some_and(|r| r <= self.start) {
            self.replay_end = None;
        }
        Some(cut)
    }
}

/// A segment taken out of its source to be written.
#[derive(Debug)]
pub struct Cut {
    pub(super) partition: i32,
    pub(super) owner: Uuid,
    pub(super) progress: Progress,
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) batch: ClickBatch,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(committed: i64, pending: i64) -> Source {
        Source::new(
            0,
            Uuid::now_v7(),
            Progress { committed, pending },
            UserAgentClassifier::shared(),
        )
    }

    #[test]
    fn events_before_committed_are_skipped() {
        let mut s = source(100, 100);
        assert_eq!(s.admit(99), Admit::Skip);
        assert_eq!(s.admit(100), Admit::Take);
        s.taken(100);
        assert_eq!(
            s.progress(),
            Progress {
                committed: 100,
                pending: 101
            }
        );
        assert!(s.cut().is_some());
        assert_eq!(s.admit(100), Admit::Skip);
        assert_eq!(
            s.progress(),
            Progress {
                committed: 101,
                pending: 101
            }
        );
    }

    #[test]
    fn a_half_done_write_ends_the_first_segment_exactly() {
        let mut s = source(100, 150);
        for offset in 100..125 {
            assert_eq!(s.admit(offset), Admit::Take);
            s.taken(offset);
        }
        // Not written short of the half-done write's end.
        assert!(s.has_segment() && !s.writable());
        // The next event is past it: write up to there first.
        assert_eq!(s.admit(160), Admit::FlushFirst);
        assert_eq!(s.end(), 150);
        assert!(s.writable());
        assert_eq!(
            s.progress(),
            Progress {
                committed: 100,
                pending: 150
            }
        );
        let cut = s.cut().expect("writable");
        assert_eq!((cut.start, cut.end), (100, 150));
        assert_eq!(s.admit(160), Admit::Take);
        s.taken(160);
        assert_eq!(
            s.progress(),
            Progress {
                committed: 150,
                pending: 161
            }
        );
    }

    #[test]
    fn the_last_event_before_a_half_done_end_makes_the_segment_writable() {
        let mut s = source(100, 150);
        for offset in 100..150 {
            assert_eq!(s.admit(offset), Admit::Take);
            s.taken(offset);
            assert_eq!(s.writable(), offset == 149);
        }
        assert!(s.cut().is_some() && s.cut().is_none());
        assert_eq!(
            s.progress(),
            Progress {
                committed: 150,
                pending: 150
            }
        );
    }

    #[test]
    fn nothing_left_to_replay_moves_the_start_to_the_pending_end() {
        let mut s = source(100, 150);
        assert_eq!(s.admit(150), Admit::Take);
        s.taken(150);
        assert_eq!(
            s.progress(),
            Progress {
                committed: 150,
                pending: 151
            }
        );
    }
}
