//! The timer a peer connection's driver sleeps on, kept between its loop turns.
//!
//! webrtc-rs's connection driver asks its runtime for a new sleep on every turn of its
//! loop, which under load is once per forwarded packet, and drops it at the end of the
//! turn. With tokio's plain `sleep` each of those is an allocation, a registration in the
//! timer wheel (under the timer driver's lock) and a cancellation (under it again), for a
//! deadline that is nearly always the one the last turn had: the connection's next
//! protocol timer. [`TimerSlot`] keeps the tokio [`Sleep`] a dropped [`SlotSleep`] leaves
//! behind, and the next [`TimerSlot::sleep`] resets it to the new deadline instead: tokio
//! moves a registered timer's deadline later without taking any lock, and it is woken
//! exactly as a fresh one would be.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// How far ahead a sleep too long to represent is put, as tokio's own `sleep` does.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// At most one spare timer, shared by the sleeps it hands out (one runtime's).
#[derive(Debug, Default)]
pub struct TimerSlot {
    spare: Arc<Mutex<Option<Pin<Box<Sleep>>>>>,
}

impl TimerSlot {
    /// A future that completes `duration` from now, on the spare timer if there is one.
    /// Must be called within a tokio runtime with time enabled, as `tokio::time::sleep`.
    pub fn sleep(&self, duration: Duration) -> SlotSleep {
        let now = Instant::now();
        let deadline = now
            .checked_add(duration)
            .unwrap_or_else(|| now + FAR_FUTURE);
        let spare = lock(&self.spare).take();
        let timer = match spare {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        SlotSleep {
            timer: Some(timer),
            spare: self.spare.clone(),
        }
    }

    /// Whether a dropped sleep's timer is waiting to be reused.
    #[cfg(test)]
    fn has_spare(&self) -> bool {
        lock(&self.spare).is_some()
    }
}

fn lock(spare: &Mutex<Option<Pin<Box<Sleep>>>>) -> MutexGuard<'_, Option<Pin<Box<Sleep>>>> {
    // The slot holds a plain value that is swapped whole; a panic elsewhere cannot leave
    // it half-written, so a poisoned lock is still good.
    spare.lock().unwrap_or_else(|e| e.into_inner())
}

/// A sleep from a [`TimerSlot`]; dropped, it gives its timer back to the slot.
#[derive(Debug)]
pub struct SlotSleep {
    /// `None` only while being dropped.
    timer: Option<Pin<Box<Sleep>>>,
    spare: Arc<Mutex<Option<Pin<Box<Sleep>>>>>,
}

impl Future for SlotSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.get_mut().timer.as_mut() {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl Drop for SlotSleep {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            let mut spare = lock(&self.spare);
            if spare.is_none() {
                *spare = Some(timer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    /// Lets the paused clock run `by` and gives every woken task its turn.
    async fn advance(by: Duration) {
        tokio::time::advance(by).await;
        tokio::task::yield_now().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_completes_at_its_deadline_and_not_before() {
        let slot = TimerSlot::default();
        let mut sleep = Box::pin(slot.sleep(Duration::from_millis(100)));
        advance(Duration::from_millis(99)).await;
        assert!(sleep.as_mut().now_or_never().is_none());
        advance(Duration::from_millis(1)).await;
        assert!(sleep.as_mut().now_or_never().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_sleep_leaves_its_timer_for_the_next() {
        let slot = TimerSlot::default();
        assert!(!slot.has_spare());
        let mut first = Box::pin(slot.sleep(Duration::from_millis(100)));
        assert!(first.as_mut().now_or_never().is_none());
        drop(first);
        assert!(slot.has_spare());
        let second = slot.sleep(Duration::from_millis(100));
        assert!(!slot.has_spare(), "the second sleep took the spare timer");
        drop(second);
        assert!(slot.has_spare());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reused_timer_set_later_does_not_fire_at_the_old_deadline() {
        let slot = TimerSlot::default();
        let mut first = Box::pin(slot.sleep(Duration::from_millis(50)));
        // Registered with the timer wheel at 50 ms.
        assert!(first.as_mut().now_or_never().is_none());
        drop(first);
        let mut later = Box::pin(slot.sleep(Duration::from_millis(200)));
        assert!(later.as_mut().now_or_never().is_none());
        advance(Duration::from_millis(60)).await;
        assert!(
            later.as_mut().now_or_never().is_none(),
            "fired at the old deadline"
        );
        advance(Duration::from_millis(139)).await;
        assert!(later.as_mut().now_or_never().is_none());
        advance(Duration::from_millis(1)).await;
        assert!(later.as_mut().now_or_never().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reused_timer_set_earlier_fires_at_the_new_deadline() {
        let slot = TimerSlot::default();
        let mut first = Box::pin(slot.sleep(Duration::from_secs(10)));
        assert!(first.as_mut().now_or_never().is_none());
        drop(first);
        let sooner = slot.sleep(Duration::from_millis(20));
        let started = Instant::now();
        // Completes by itself as the paused clock jumps to the next timer: 20 ms, not 10 s.
        sooner.await;
        assert_eq!(started.elapsed(), Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_that_fired_is_reused_and_fires_again() {
        let slot = TimerSlot::default();
        for round in 1..=3u64 {
            let started = Instant::now();
            slot.sleep(Duration::from_millis(30 * round)).await;
            assert_eq!(started.elapsed(), Duration::from_millis(30 * round));
            assert!(slot.has_spare());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_task_is_woken_by_a_reused_timer() {
        let slot = Arc::new(TimerSlot::default());
        drop(slot.sleep(Duration::from_secs(1)));
        let sleeper = slot.clone();
        let task = tokio::spawn(async move { sleeper.sleep(Duration::from_millis(40)).await });
        tokio::task::yield_now().await;
        assert!(!task.is_finished());
        advance(Duration::from_millis(40)).await;
        tokio::time::timeout(Duration::from_millis(1), task)
            .await
            .expect("woken at the deadline")
            .expect("task ran");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unrepresentable_duration_sleeps_far_ahead() {
        let slot = TimerSlot::default();
        let mut sleep = Box::pin(slot.sleep(Duration::MAX));
        advance(Duration::from_secs(86_400)).await;
        assert!(sleep.as_mut().now_or_never().is_none());
    }
}
