//! A session's outbox: the one way frames reach a client. The space, the SFU (room and
//! member tasks), the chat history sender and the session itself (its replies) all push
//! encoded frames into it; the session task alone takes them out and writes them to the
//! WebSocket.
//!
//! The outbox has a budget in bytes, not in frames: frames range from a 10-byte `Pong` to a
//! 150 kB session description, so a frame count bounds nothing. A push that would take the
//! queued bytes over the budget is refused and marks the outbox overflowed: the client is
//! not reading fast enough (or not at all), and its session task closes it with a reason.
//! A session's memory for frames waiting to be sent is thus at most its budget.

use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The budget is spent: the session is being closed for not keeping up.
    Overflow,
    /// The session has ended.
    Closed,
}

#[derive(Debug)]
struct Shared {
    /// Bytes pushed and not yet taken out by the session task.
    queued: AtomicUsize,
    budget: usize,
    /// Cancelled when a push found the budget spent.
    overflowed: CancellationToken,
}

/// The sending side: cheap to clone, for everyone who has frames for this client.
#[derive(Clone, Debug)]
pub struct SessionOutbox {
    tx: mpsc::UnboundedSender<Bytes>,
    shared: Arc<Shared>,
}

/// A handle that does not keep the session's outbox open (for a late message, such as a
/// chat line's storage failing, that is not worth keeping a closed session around for).
#[derive(Clone, Debug)]
pub struct WeakSessionOutbox {
    tx: mpsc::WeakUnboundedSender<Bytes>,
    shared: std::sync::Weak<Shared>,
}

impl WeakSessionOutbox {
    /// The outbox, if its session still has it open.
    pub fn upgrade(&self) -> Option<SessionOutbox> {
        Some(SessionOutbox {
            tx: self.tx.upgrade()?,
            shared: self.shared.upgrade()?,
        })
    }
}

/// The receiving side, owned by the session task.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::UnboundedReceiver<Bytes>,
    shared: Arc<Shared>,
}

/// A new outbox that holds at most `budget` bytes of frames.
pub fn channel(budget: usize) -> (SessionOutbox, OutboxReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        budget,
        overflowed: CancellationToken::new(),
    });
    (
        SessionOutbox {
            tx,
            shared: shared.clone(),
        },
        OutboxReceiver { rx, shared },
    )
}

impl SessionOutbox {
    /// A handle that does not keep this outbox open.
    pub fn downgrade(&self) -> WeakSessionOutbox {
        WeakSessionOutbox {
            tx: self.tx.downgrade(),
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Queues `frame`, unless that would take the queue over its budget (then the outbox is
    /// marked overflowed and the session closes) or the session has ended.
    pub fn push(&self, frame: Bytes) -> Result<(), Refused> {
        let shared = &self.shared;
        if shared.overflowed.is_cancelled() {
            return Err(Refused::Overflow);
        }
        let len = frame.len();
        let before = shared.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > shared.budget {
            shared.queued.fetch_sub(len, Ordering::AcqRel);
            shared.overflowed.cancel();
            return Err(Refused::Overflow);
        }
        if self.tx.send(frame).is_err() {
            shared.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(Refused::Closed);
        }
        Ok(())
    }

    /// Whether a frame of `len` bytes would be queued now (for a sender that must not lose
    /// a frame, such as an SDP offer, and can try again later instead).
    pub fn has_room(&self, len: usize) -> bool {
        let shared = &self.shared;
        !shared.overflowed.is_cancelled()
            && !self.tx.is_closed()
            && shared.queued.load(Ordering::Acquire) + len <= shared.budget
    }

    /// Bytes waiting to be sent.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }
}

impl OutboxReceiver {
    /// The next frame to write. `None` only when every sender is gone (never while the
    /// session, which keeps one for its replies, runs).
    pub async fn recv(&mut self) -> Option<Bytes> {
        let frame = self.rx.recv().await?;
        self.shared.queued.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }

    /// The next frame if one is waiting (for a closing session's last words).
    pub fn try_recv(&mut self) -> Option<Bytes> {
        let frame = self.rx.try_recv().ok()?;
        self.shared.queued.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }

    /// Cancelled once a push found the budget spent (to wait on while receiving).
    pub fn overflow_token(&self) -> CancellationToken {
        self.shared.overflowed.clone()
    }

    /// Whether a push found the budget spent.
    pub fn is_overflowed(&self) -> bool {
        self.shared.overflowed.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_in_bytes_and_overflow_is_sticky() {
        let (tx, mut rx) = channel(100);
        let other = tx.clone();
        assert_eq!(tx.push(Bytes::from(vec![0; 60])), Ok(()));
        assert!(other.has_room(40));
        assert!(!other.has_room(41));
        // One byte over: refused, and the session is marked.
        assert_eq!(other.push(Bytes::from(vec![0; 41])), Err(Refused::Overflow));
        assert!(rx.is_overflowed());
        // Even a small frame is refused now: the session is closing.
        assert_eq!(tx.push(Bytes::from_static(b"x")), Err(Refused::Overflow));
        assert!(!tx.has_room(1));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime builds");
        rt.block_on(async {
            rx.overflow_token().cancelled().await;
            assert_eq!(rx.recv().await.map(|f| f.len()), Some(60));
        });
        assert_eq!(tx.queued(), 0);
    }

    #[test]
    fn taking_frames_out_frees_the_budget() {
        let (tx, mut rx) = channel(100);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime builds");
        for _ in 0..10 {
            assert_eq!(tx.push(Bytes::from(vec![0; 70])), Ok(()));
            assert_eq!(tx.queued(), 70);
            rt.block_on(async { rx.recv().await });
            assert_eq!(tx.queued(), 0);
        }
        assert!(!rx.is_overflowed());
        drop(rx);
        assert_eq!(tx.push(Bytes::from_static(b"x")), Err(Refused::Closed));
        assert_eq!(tx.queued(), 0);
    }
}
