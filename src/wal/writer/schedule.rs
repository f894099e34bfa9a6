//! When the writer takes what is staged: the grouped-commit schedule.
//!
//! [`Batching::decide`] is a pure decision over what the stage holds, whether a write is in
//! flight and the clock; it keeps its own small state between calls. Two things hold staged
//! entries back:
//! - under `SyncPolicy::Grouped { window }`, the window that the first entries finding the writer
//!   idle open;
//! - after a synced batch, the appenders it acknowledged: closed-loop writers come back within
//!   microseconds, and waiting a moment for them makes the next batch (and its one fdatasync)
//!   serve them all, instead of splitting writers into cohorts that alternate.
//!
//! Invariants: nothing is held back once a batch is full (`max_batch_bytes`) or a reader waits
//! for it (`flush_wanted`); the wait for returning appenders ends after [`GATHER_MAX`] or
//! [`GATHER_YIELDS`] yields of the writer task, whichever comes first.

use std::time::{Duration, Instant};

/// The longest wait for acknowledged appenders to come back, in time and in yields of the
/// writer task.
const GATHER_MAX: Duration = Duration::from_micros(200);
const GATHER_YIELDS: u32 = 16;

/// What the writer should do with what is staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Nothing is staged.
    Nothing,
    /// A write is in flight (one at a time).
    Busy,
    /// Under `Grouped`, the window is still open.
    Window,
    /// Appenders just acknowledged are expected back: yield to them first.
    Gather,
    /// Take everything staged and write it.
    Launch,
}

/// What the stage holds, as the schedule sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Staged {
    pub(super) bytes: usize,
    pub(super) calls: usize,
    /// A reader waits for the staged entries to be written.
    pub(super) flush_wanted: bool,
}

/// The schedule's state between decisions.
#[derive(Debug, Default)]
pub(super) struct Batching {
    /// Calls acknowledged by the last synced batch, and staged during its write: the next
    /// batch waits for that many calls (see the module documentation).
    expect_returns: usize,
    /// When the wait for them began, and how many times the writer yielded for them.
    gather_started: Option<Instant>,
    gather_yields: u32,
    /// Under `Grouped`, when the staged entries may go.
    launch_at: Option<tokio::time::Instant>,
}

impl Batching {
    /// Decides what to do with `staged`. `busy`: a write is in flight; `window`: the `Grouped`
    /// window, if the policy has one; `clock` is read only when the decision depends on time.
    pub(super) fn decide(
        &mut self,
        staged: Staged,
        busy: bool,
        window: Option<Duration>,
        max_batch_bytes: usize,
        clock: impl FnOnce() -> Instant,
    ) -> Decision {
        if staged.bytes == 0 {
            return Decision::Nothing;
        }
        if busy {
            return Decision::Busy;
        }
        if let Some(window) = window
            && self.launch_at.is_none()
        {
            // Under `Grouped`, staged entries that find the writer idle wait for others.
            self.launch_at = Some(tokio::time::Instant::now() + window);
        }
        let now = clock();
        let window_over = self
            .launch_at
            .is_none_or(|t| tokio::time::Instant::from_std(now) >= t);
        let gathering = staged.calls < self.expect_returns
            && self.gather_yields < GATHER_YIELDS
            && self
                .gather_started
                .is_some_and(|t| now.duration_since(t) < GATHER_MAX);
        if (window_over && !gathering) || staged.bytes >= max_batch_bytes || staged.flush_wanted {
            self.launch_at = None;
            self.expect_returns = 0;
            self.gather_started = None;
            Decision::Launch
        } else if gathering {
            self.gather_yields += 1;
            Decision::Gather
        } else {
            Decision::Window
        }
    }

    /// A synced batch was published and nothing is in flight: `calls` appenders (acknowledged
    /// now, or staged during the write) are expected in the next batch.
    pub(super) fn expect_returns(&mut self, calls: usize, now: Instant) {
        self.expect_returns = calls;
        self.gather_started = Some(now);
        self.gather_yields = 0;
    }

    /// Whether the next batch waits for several appenders: it is then the writer task's, not
    /// a leader's (see `leader.rs`).
    pub(super) fn gathers_many(&self) -> bool {
        self.expect_returns > 1
    }

    /// When the open `Grouped` window ends, if one is open.
    pub(super) fn launch_at(&self) -> Option<tokio::time::Instant> {
        self.launch_at
    }

    /// Nothing is staged any more (a flush or a leader took it): no window is open.
    pub(super) fn close_window(&mut self) {
        self.launch_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn staged(bytes: usize, calls: usize) -> Staged {
        Staged {
            bytes,
            calls,
            flush_wanted: false,
        }
    }

    #[test]
    fn nothing_staged_or_a_write_in_flight_launches_nothing() {
        let mut b = Batching::default();
        let now = Instant::now();
        assert_eq!(
            b.decide(staged(0, 0), false, None, MAX, || now),
            Decision::Nothing
        );
        assert_eq!(
            b.decide(staged(10, 1), true, None, MAX, || now),
            Decision::Busy
        );
    }

    #[test]
    fn with_nothing_to_wait_for_what_is_staged_goes_at_once() {
        let mut b = Batching::default();
        assert_eq!(
            b.decide(staged(10, 1), false, None, MAX, Instant::now),
            Decision::Launch
        );
    }

    #[test]
    fn after_a_synced_batch_the_writer_gathers_returning_appenders_within_its_bounds() {
        let now = Instant::now();
        let mut b = Batching::default();
        b.expect_returns(3, now);
        assert!(b.gathers_many());
        // Fewer calls than expected: wait, at most GATHER_YIELDS times.
        for _ in 0..GATHER_YIELDS {
            assert_eq!(
                b.decide(staged(10, 1), false, None, MAX, || now),
                Decision::Gather
            );
        }
        assert_eq!(
            b.decide(staged(10, 1), false, None, MAX, || now),
            Decision::Launch
        );
        // Launching ends the gathering.
        assert!(!b.gathers_many());
    }

    #[test]
    fn gathering_ends_when_everyone_is_back_or_the_time_is_up() {
        let now = Instant::now();
        let mut b = Batching::default();
        b.expect_returns(3, now);
        assert_eq!(
            b.decide(staged(30, 3), false, None, MAX, || now),
            Decision::Launch
        );
        b.expect_returns(3, now);
        let later = now + GATHER_MAX;
        assert_eq!(
            b.decide(staged(10, 1), false, None, MAX, || later),
            Decision::Launch
        );
    }

    #[test]
    fn a_full_batch_or_a_waiting_reader_goes_at_once() {
        let now = Instant::now();
        let mut b = Batching::default();
        b.expect_returns(3, now);
        assert_eq!(
            b.decide(staged(MAX, 1), false, None, MAX, || now),
            Decision::Launch
        );
        b.expect_returns(3, now);
        let flush = Staged {
            flush_wanted: true,
            ..staged(10, 1)
        };
        assert_eq!(b.decide(flush, false, None, MAX, || now), Decision::Launch);
    }

    #[test]
    fn a_grouped_window_holds_entries_until_it_ends() {
        let window = Some(Duration::from_secs(3600));
        let mut b = Batching::default();
        let now = Instant::now();
        assert_eq!(
            b.decide(staged(10, 1), false, window, MAX, || now),
            Decision::Window
        );
        let opened = b.launch_at().expect("a window is open");
        // A second look does not move the window.
        assert_eq!(
            b.decide(staged(20, 2), false, window, MAX, || now),
            Decision::Window
        );
        assert_eq!(b.launch_at(), Some(opened));
        let after = opened.into_std() + Duration::from_millis(1);
        assert_eq!(
            b.decide(staged(20, 2), false, window, MAX, || after),
            Decision::Launch
        );
        assert_eq!(b.launch_at(), None);
        // Taken by someone else meanwhile: the window closes.
        b.decide(staged(10, 1), false, window, MAX, || now);
        b.close_window();
        assert_eq!(b.launch_at(), None);
    }
}
