//! The io_uring backend: one ring per driver, a slab of in-flight slots, submission from the calling
//! task, completions reaped at every submit and poll and by a poller task woken through an eventfd.
//!
//! Invariants (each is relied on by a `// SAFETY:` comment below or in `ops.rs`):
//! 1. A slot owns everything the kernel may touch for its operation — buffers, iovecs, paths,
//!    the file's descriptor — from before its entries are pushed until its last completion is
//!    reaped. Dropping the operation's future only marks the slot abandoned.
//! 2. A slot's key is reused only after the slot is removed, and a slot is removed only once all
//!    its completions arrived, so a completion always finds the slot it belongs to.
//! 3. The ring is never torn down while a slot is alive: `Drop for Ring` waits for every
//!    completion first.
//! 4. The submission and completion queues are touched only under the slot lock (which makes the
//!    `*_shared` queue accessors sound), and an operation's entries are published in the queue's
//!    tail together. `io_uring_enter` runs outside the lock, so a read that the page cache serves
//!    inside the call does not hold up other threads; it submits everything published, so the
//!    entries of a link are never split. No lock is held across an `.await`.
//!
//! Dropping the last handle waits (blocking the thread) for the completions of abandoned
//! operations, usually microseconds, at worst one fsync. io-wq, the kernel's worker pool, belongs
//! to the submitting thread: work submitted from a thread that then exits may complete with
//! `ECANCELED`; tokio's worker threads live as long as their runtime.

pub(crate) mod ops;

use std::any::Any;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use io_uring::{IoUring, squeue};
use slab::Slab;
use tokio::io::unix::AsyncFd;

use crate::driver::{Counters, Ticket};
use crate::probe::UringReady;

/// The entries of one operation: one, or two linked (`IOSQE_IO_LINK` set on the first).
pub(crate) enum Sqes {
    One(squeue::Entry),
    Linked(squeue::Entry, squeue::Entry),
}

/// Runs on the result of an abandoned operation, to release what the result owns (an opened
/// descriptor).
pub(crate) type Cleanup = fn(&[i32; 2]);

struct Slot {
    /// Completions still to come.
    pending: u8,
    /// The `res` of each entry's completion, in entry order.
    results: [i32; 2],
    waker: Option<Waker>,
    /// The future was dropped: the slot is removed as soon as `pending` reaches 0.
    abandoned: bool,
    cleanup: Option<Cleanup>,
    /// Kept alive for the kernel (invariant 1).
    resources: Box<dyn Any + Send>,
    _ticket: Ticket,
}

/// The ring and its in-flight slots.
pub(crate) struct Ring {
    /// Its queues are accessed only while `slots` is locked (invariant 4).
    uring: IoUring,
    slots: Mutex<Slab<Slot>>,
    event_fd: Arc<OwnedFd>,
    ftruncate: bool,
    counters: Arc<Counters>,
}

/// How often a submission that the kernel refuses for lack of resources (EAGAIN, EBUSY) is
/// retried at once before it is left queued for the next submit, poll or reap.
const SUBMIT_RETRIES: usize = 64;

impl Ring {
    /// Takes over a probed ring: registers an eventfd and starts the poller on the current tokio
    /// runtime.
    pub(crate) fn start(ready: UringReady, counters: Arc<Counters>) -> io::Result<Arc<Ring>> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            io::Error::other("the io_uring backend must be started inside a tokio runtime")
        })?;
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor and nothing else owns it.
        let event_fd = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
        ready
            .ring
            .submitter()
            .register_eventfd(event_fd.as_raw_fd())?;
        let notifier = {
            let _guard = runtime.enter();
            // SAFETY: the `Arc<OwnedFd>` keeps the eventfd open, always as the same descriptor,
            // for as long as the `AsyncFd` holds it.
            unsafe {
                AsyncFd::register_with_interest(event_fd.clone(), tokio::io::Interest::READABLE)
            }
            .map_err(|e| e.into_parts().1)?
        };
        let ring = Arc::new(Ring {
            uring: ready.ring,
            slots: Mutex::new(Slab::new()),
            event_fd,
            ftruncate: ready.ftruncate,
            counters,
        });
        runtime.spawn(poll_completions(Arc::downgrade(&ring), notifier));
        Ok(ring)
    }

    pub(crate) fn has_ftruncate(&self) -> bool {
        self.ftruncate
    }

    fn lock(&self) -> Locked<'_> {
        // A panic while holding the lock cannot leave the slab half-updated in a way that matters
        // for memory safety (slots are only inserted or removed whole), so keep going.
        Locked {
            uring: &self.uring,
            slots: self.slots.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Pushes an operation's entries, submits them, and returns the future of its completion.
    ///
    /// `resources` is boxed before `build` runs and stays in the slot until the last completion,
    /// so pointers into it stay valid for the kernel however the caller's future ends.
    ///
    /// # Safety
    ///
    /// Every pointer that `build` puts into the entries must point into `resources` (or its heap
    /// data, such as the bytes of a buffer it owns), or to memory that lives forever, and must be
    /// valid for the reads or writes the operation makes. Descriptors named by the entries must
    /// stay open until completion (hold the owning handle in `resources`).
    pub(crate) unsafe fn submit<T: Send + 'static>(
        self: &Arc<Self>,
        ticket: Ticket,
        resources: T,
        cleanup: Option<Cleanup>,
        build: impl FnOnce(&mut T) -> Sqes,
    ) -> Op<T> {
        let mut resources = Box::new(resources);
        let sqes = build(&mut resources);
        let mut locked = self.lock();
        let key = locked.slots.vacant_key();
        let tag = |entry: squeue::Entry, index: u64| entry.user_data(((key as u64) << 1) | index);
        let (entries, count): ([squeue::Entry; 2], usize) = match sqes {
            Sqes::One(a) => ([tag(a, 0), io_uring::opcode::Nop::new().build()], 1),
            Sqes::Linked(a, b) => ([tag(a.flags(squeue::Flags::IO_LINK), 0), tag(b, 1)], 2),
        };
        let inserted = locked.slots.insert(Slot {
            pending: count as u8,
            results: [0; 2],
            waker: None,
            abandoned: false,
            cleanup,
            resources,
            _ticket: ticket,
        });
        debug_assert_eq!(inserted, key);
        locked.push(&entries[..count]);
        drop(locked);
        self.submit_queued();
        Op {
            ring: self.clone(),
            key: Some(key),
            _marker: PhantomData,
        }
    }

    /// Hands the queued entries to the kernel, outside the lock. Entries the kernel refuses for
    /// now (EAGAIN, EBUSY: out of resources) stay queued for the next submit, poll or reap.
    ///
    /// The count passed is "everything": the kernel clamps it to the entries published in the
    /// queue's tail, and the tail only moves by whole operations (under the lock), so a write and
    /// its linked fsync are never split between two submissions. A count computed here from the
    /// queue's head and tail could be stale (another thread may have submitted meanwhile) and end
    /// between the two entries of a link.
    fn submit_queued(&self) {
        for _ in 0..SUBMIT_RETRIES {
            // SAFETY: no pointer argument; the entries submitted were pushed under the slot lock,
            // with their resources already held by their slots.
            let res = unsafe {
                self.uring
                    .submitter()
                    .enter::<libc::sigset_t>(u32::MAX, 0, 0, None)
            };
            match res {
                Ok(_) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(error = %e, "io_uring submit refused; reaping and retrying");
                    let released = self.lock().reap();
                    drop(released);
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Reaps completions and hands over entries left queued; called by the poller and by
    /// polled operations.
    fn service(&self) {
        let (queued, released) = {
            let mut locked = self.lock();
            let released = locked.reap();
            (locked.queued(), released)
        };
        // Abandoned slots release their buffers, descriptors and tickets outside the lock.
        drop(released);
        if queued {
            self.submit_queued();
        }
    }
}

/// The ring's queues and the slots, under the lock.
struct Locked<'a> {
    uring: &'a IoUring,
    slots: MutexGuard<'a, Slab<Slot>>,
}

impl Locked<'_> {
    /// True if entries wait in the submission queue.
    fn queued(&self) -> bool {
        // SAFETY: the slot lock is held, so no other queue handle exists (invariant 4).
        !unsafe { self.uring.submission_shared() }.is_empty()
    }

    fn push(&mut self, entries: &[squeue::Entry]) {
        loop {
            // SAFETY: the slot lock is held, so no other queue handle exists (invariant 4).
            let mut queue = unsafe { self.uring.submission_shared() };
            // SAFETY: the entries' pointers are valid until completion by the contract of
            // `Ring::submit`, and their slot (holding the resources) is already in the slab.
            let pushed = unsafe { queue.push_multiple(entries) };
            drop(queue);
            if pushed.is_ok() {
                return;
            }
            // Only entries that an earlier refused submit left behind can fill the queue (there
            // are no more tickets than slots): hand them over, waiting for a completion if the
            // kernel lacks room.
            let mut released = self.reap();
            if let Err(e) = self.uring.submit_and_wait(1) {
                tracing::debug!(error = %e, "io_uring submit_and_wait refused; retrying");
            }
            released.extend(self.reap());
            // Rare; the slots' resources are dropped here, under the lock.
            drop(released);
        }
    }

    /// Records every available completion in its slot and wakes the waiting future. Abandoned
    /// slots that are complete are removed and returned, for the caller to drop after unlocking.
    #[must_use = "released slots are to be dropped after the lock"]
    fn reap(&mut self) -> Vec<Slot> {
        self.reap_for(None)
    }

    /// As `reap`, from the future of slot `polling`, which is not woken: it looks at its slot
    /// next. A task woken while it runs is rescheduled by tokio as a yield, which wakes another
    /// worker for nothing.
    #[must_use = "released slots are to be dropped after the lock"]
    fn reap_for(&mut self, polling: Option<usize>) -> Vec<Slot> {
        let mut released = Vec::new();
        // SAFETY: the slot lock is held, so no other queue handle exists (invariant 4).
        let completions = unsafe { self.uring.completion_shared() };
        for cqe in completions {
            let user_data = cqe.user_data();
            let key = (user_data >> 1) as usize;
            let index = (user_data & 1) as usize;
            let Some(slot) = self.slots.get_mut(key) else {
                debug_assert!(false, "completion for unknown slot {key}");
                continue;
            };
            slot.results[index] = cqe.result();
            slot.pending -= 1;
            if slot.pending > 0 {
                continue;
            }
            if slot.abandoned {
                let slot = self.slots.remove(key);
                if let Some(cleanup) = slot.cleanup {
                    cleanup(&slot.results);
                }
                released.push(slot);
            } else if polling != Some(key)
                && let Some(waker) = slot.waker.take()
            {
                waker.wake();
            }
        }
        released
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let mut locked = self.lock();
        // Slots left now belong to dropped futures, and the kernel may still write into their
        // buffers: wait for every completion before that memory is freed (invariant 3).
        let mut failures = 0;
        while !locked.slots.is_empty() {
            match locked.uring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failures += 1;
                    if failures > SUBMIT_RETRIES {
                        // Leaking is the only safe end when the kernel cannot be waited for.
                        tracing::error!(error = %e, slots = locked.slots.len(), "io_uring teardown cannot wait for in-flight operations; leaking their buffers");
                        std::mem::forget(std::mem::take(&mut *locked.slots));
                        break;
                    }
                }
            }
            drop(locked.reap());
        }
        drop(locked);
        // Wake the poller so it sees the ring is gone and ends.
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live stack buffer to an eventfd this ring owns.
        unsafe { libc::write(self.event_fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }
}

/// Waits for the eventfd the kernel signals on every completion, and reaps. Ends when the ring is
/// gone.
async fn poll_completions(ring: Weak<Ring>, notifier: AsyncFd<Arc<OwnedFd>>) {
    loop {
        let mut ready = match notifier.readable().await {
            Ok(ready) => ready,
            Err(e) => {
                tracing::error!(error = %e, "io_uring completion poller failed");
                return;
            }
        };
        // Reset the counter before reaping: a completion posted after the reap raises it again.
        match ready.try_io(|fd| drain_eventfd(fd.get_ref())) {
            // Drained: clear the readiness now rather than learn it from one more read's EAGAIN
            // (a syscall per wake-up). A completion signalled since the readiness was reported
            // keeps it set: tokio clears only the readiness event it handed out.
            Ok(_) => ready.clear_ready(),
            Err(_would_block) => continue,
        }
        let Some(ring) = ring.upgrade() else { return };
        ring.service();
    }
}

fn drain_eventfd(fd: &OwnedFd) -> io::Result<()> {
    let mut count = [0u8; 8];
    // SAFETY: reads at most 8 bytes into a live stack buffer of 8 bytes.
    let res = unsafe { libc::read(fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
    if res < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The future of one submitted operation: resolves to the completion results and the resources
/// handed back.
pub(crate) struct Op<T> {
    ring: Arc<Ring>,
    /// `None` once the result was taken.
    key: Option<usize>,
    _marker: PhantomData<fn() -> T>,
}

impl<T: 'static> Future for Op<T> {
    type Output = ([i32; 2], T);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let key = self
            .key
            .expect("io_uring operation polled after completion");
        let mut state = self.ring.lock();
        let released = state.reap_for(Some(key));
        let slot = &mut state.slots[key];
        if slot.pending > 0 {
            if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                slot.waker = Some(cx.waker().clone());
            }
            let queued = state.queued();
            drop(state);
            drop(released);
            // Entries a refused submit left behind would otherwise wait for another completion.
            if queued {
                self.ring.submit_queued();
            }
            return Poll::Pending;
        }
        let slot = state.slots.remove(key);
        drop(state);
        drop(released);
        self.key = None;
        let Slot {
            results, resources, ..
        } = slot;
        let resources = match resources.downcast::<T>() {
            Ok(resources) => resources,
            Err(_) => unreachable!("an io_uring slot holds resources of another operation"),
        };
        Poll::Ready((results, *resources))
    }
}

impl<T> Drop for Op<T> {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut state = self.ring.lock();
        let slot = &mut state.slots[key];
        if slot.pending == 0 {
            // Completed but never polled: release now (the cleanup releases what the result owns).
            let slot = state.slots.remove(key);
            drop(state);
            if let Some(cleanup) = slot.cleanup {
                cleanup(&slot.results);
            }
        } else {
            slot.abandoned = true;
            slot.waker = None;
            self.ring.counters.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }
}
