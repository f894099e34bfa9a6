//! A submitted write that two parties drive: the appender that launched it (its leader) and the
//! writer task.
//!
//! `futures::future::Shared` would do, but it wakes every registered waker when the future
//! completes, the completing task's own included. On tokio a task woken while it runs is
//! rescheduled as a yield, which wakes another worker: one futex wake (an IPI on a virtual
//! machine) per lone durable append, for nothing. Here the party that completes the write wakes
//! only the other party, and only if it waits.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Who polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Party {
    Leader = 0,
    Writer = 1,
}

/// The write's future and, once done, its outcome. Cloning shares it.
pub(crate) struct BatchIo<T>(Arc<Share<T>>);

impl<T> Clone for BatchIo<T> {
    fn clone(&self) -> Self {
        BatchIo(self.0.clone())
    }
}

struct Share<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    /// `None` while a party polls it (the lock is not held across the poll), and once done.
    future: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
    done: bool,
    /// The outcome, until taken.
    outcome: Option<T>,
    /// Each party's waker, while it waits.
    wakers: [Option<Waker>; 2],
}

impl<T> Share<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // Every update below is a single assignment: a panic elsewhere cannot leave it half done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The inner future's waker: wakes whichever parties wait.
impl<T: Send + 'static> Wake for Share<T> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let wakers = {
            let mut st = self.lock();
            [st.wakers[0].take(), st.wakers[1].take()]
        };
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }
}

impl<T: Send + 'static> BatchIo<T> {
    pub(crate) fn new(future: Pin<Box<dyn Future<Output = T> + Send>>) -> Self {
        BatchIo(Arc::new(Share {
            state: Mutex::new(State {
                future: Some(future),
                done: false,
                outcome: None,
                wakers: [None, None],
            }),
        }))
    }

    /// Drives the write as `party`: ready once it is done. While pending, `cx`'s waker is woken
    /// when the write makes progress or the other party completes it.
    pub(crate) fn poll_as(&self, party: Party, cx: &mut Context<'_>) -> Poll<()> {
        let mut future = {
            let mut st = self.0.lock();
            if st.done {
                return Poll::Ready(());
            }
            let slot = &mut st.wakers[party as usize];
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
            match st.future.take() {
                Some(future) => future,
                // The other party polls it now; it wakes this one when done, and the future
                // wakes both when it moves on.
                None => return Poll::Pending,
            }
        };
        let waker = Waker::from(self.0.clone());
        let res = future.as_mut().poll(&mut Context::from_waker(&waker));
        let mut st = self.0.lock();
        match res {
            Poll::Ready(outcome) => {
                st.done = true;
                st.outcome = Some(outcome);
                st.wakers[party as usize] = None;
                let other = st.wakers[1 - party as usize].take();
                drop(st);
                drop(future);
                if let Some(other) = other {
                    other.wake();
                }
                Poll::Ready(())
            }
            Poll::Pending => {
                st.future = Some(future);
                Poll::Pending
            }
        }
    }

    /// Waits for the write as `party`.
    pub(crate) async fn wait(&self, party: Party) {
        std::future::poll_fn(|cx| self.poll_as(party, cx)).await;
    }

    pub(crate) fn is_done(&self) -> bool {
        self.0.lock().done
    }

    /// The outcome, once: whoever publishes the write takes it.
    pub(crate) fn take_outcome(&self) -> Option<T> {
        self.0.lock().outcome.take()
    }

    pub(crate) fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its wakes.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(io: &BatchIo<u32>, party: Party, waker: &Waker) -> Poll<()> {
        io.poll_as(party, &mut Context::from_waker(waker))
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (count.clone(), Waker::from(count))
    }

    /// A future that is pending until `ready` is set, and keeps the waker it was last polled
    /// with.
    #[derive(Default)]
    struct Gate {
        ready: std::sync::atomic::AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    impl Gate {
        fn open(&self) {
            self.ready.store(true, Ordering::SeqCst);
            if let Some(w) = self.waker.lock().unwrap().take() {
                w.wake();
            }
        }

        fn future(self: &Arc<Self>) -> Pin<Box<dyn Future<Output = u32> + Send>> {
            let gate = self.clone();
            Box::pin(std::future::poll_fn(move |cx| {
                if gate.ready.load(Ordering::SeqCst) {
                    Poll::Ready(7)
                } else {
                    *gate.waker.lock().unwrap() = Some(cx.waker().clone());
                    Poll::Pending
                }
            }))
        }
    }

    #[test]
    fn progress_wakes_both_parties_and_a_completion_not_its_own() {
        let gate = Arc::new(Gate::default());
        let io = BatchIo::new(gate.future());
        let (leader_wakes, leader) = counting();
        let (writer_wakes, writer) = counting();
        assert!(poll(&io, Party::Leader, &leader).is_pending());
        assert!(poll(&io, Party::Writer, &writer).is_pending());
        gate.open();
        // The progress wakes both parties.
        assert_eq!(leader_wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(writer_wakes.0.load(Ordering::SeqCst), 1);
        // The writer completes it: no one is woken (the leader waits no more since its wake).
        assert!(poll(&io, Party::Writer, &writer).is_ready());
        assert_eq!(io.take_outcome(), Some(7));
        assert_eq!(io.take_outcome(), None);
        assert!(io.is_done());
        assert_eq!(leader_wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(writer_wakes.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn completion_wakes_only_the_other_party() {
        let gate = Arc::new(Gate::default());
        let io = BatchIo::new(gate.future());
        let (leader_wakes, leader) = counting();
        let (writer_wakes, writer) = counting();
        assert!(poll(&io, Party::Writer, &writer).is_pending());
        // The gate opens without waking (as a completion reaped while the leader polls).
        gate.ready.store(true, Ordering::SeqCst);
        assert!(poll(&io, Party::Leader, &leader).is_ready());
        assert_eq!(leader_wakes.0.load(Ordering::SeqCst), 0);
        assert_eq!(writer_wakes.0.load(Ordering::SeqCst), 1);
        // Done: every later poll is ready at once, from either party.
        assert!(poll(&io, Party::Writer, &writer).is_ready());
        assert!(io.ptr_eq(&io.clone()));
    }
}
