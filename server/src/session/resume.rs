//! Resumable sessions: who may take a session over after its connection dropped.
//!
//! Every session in the space holds a resume token, given to its client in `Welcome`. When
//! the connection is lost (not closed by the client), the avatar is *parked* for
//! `resume_grace_secs`: it stays in the space, its peers see it as reconnecting, and a new
//! connection whose `Hello` carries the token takes it over (same avatar, place and room).
//! A token also takes over a session whose connection the server still believes open (a
//! half-open TCP connection after a Wi-Fi change): the old one is told it was superseded.
//!
//! Each take-over starts a new *epoch* of the entry. Whatever an older epoch's session does
//! later (park, leave, expire) is ignored, so a late message from a dead connection can
//! never undo a resume.
//!
//! The registry holds one entry per avatar in the space, parked or live, so it is bounded
//! by `max_sessions` (parked avatars count as sessions until they expire).

use crate::auth::UserKey;
use quad_shared::AvatarId;
use quad_shared::protocol::Role;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Who a resumed session is: what a take-over, or a rejoin after the avatar is gone,
/// needs to know.
#[derive(Debug, Clone)]
pub struct Resumable {
    pub id: AvatarId,
    pub name: String,
    pub role: Role,
    pub user: UserKey,
    /// The classroom the person's join link is for.
    pub link_room: Option<String>,
}

/// A session's hold on its entry.
#[derive(Debug, Clone)]
pub struct Claim {
    pub token: String,
    pub epoch: u64,
    /// Cancelled when another connection takes the session over.
    pub superseded: CancellationToken,
}

enum Holder {
    Live(CancellationToken),
    Parked { until: Instant },
}

struct Entry {
    who: Resumable,
    epoch: u64,
    holder: Holder,
}

/// The registry of resume tokens (one per avatar in the space).
pub struct Resumes {
    entries: Mutex<HashMap<String, Entry>>,
    grace: Duration,
}

impl Resumes {
    pub fn new(grace: Duration) -> Resumes {
        Resumes {
            entries: Mutex::new(HashMap::new()),
            grace,
        }
    }

    /// How long a dropped session may be taken over.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave a map half-updated (every change is
        // one insert, remove or field store), so a poisoned lock is still good.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new token for a session that just joined as `who`.
    pub fn issue(&self, who: Resumable) -> Claim {
        let token = new_token();
        let superseded = CancellationToken::new();
        self.lock().insert(
            token.clone(),
            Entry {
                who,
                epoch: 0,
                holder: Holder::Live(superseded.clone()),
            },
        );
        Claim {
            token,
            epoch: 0,
            superseded,
        }
    }

    /// Takes over the session of `token`, live or parked within its grace period; the
    /// session that held it (if live) is told it was superseded.
    pub fn claim(&self, token: &str, now: Instant) -> Option<(Resumable, Claim)> {
        let mut entries = self.lock();
        let entry = entries.get_mut(token)?;
        if let Holder::Parked { until } = entry.holder
            && now >= until
        {
            // Its expiry is on the way (see `expire`); a join starts afresh.
            return None;
        }
        if let Holder::Live(old) = &entry.holder {
            old.cancel();
        }
        let superseded = CancellationToken::new();
        entry.epoch += 1;
        entry.holder = Holder::Live(superseded.clone());
        Some((
            entry.who.clone(),
            Claim {
                token: token.to_owned(),
                epoch: entry.epoch,
                superseded,
            },
        ))
    }

    /// Parks the session of `claim` after its connection was lost; `false` if another
    /// connection took it over meanwhile (the caller then does nothing).
    pub fn park(&self, claim: &Claim, now: Instant) -> bool {
        let mut entries = self.lock();
        match entries.get_mut(&claim.token) {
            Some(entry) if entry.epoch == claim.epoch => {
                entry.holder = Holder::Parked {
                    until: now + self.grace,
                };
                true
            }
            _ => false,
        }
    }

    /// Removes the parked session of `claim` once its grace period is over; `true` if it
    /// was still parked (the caller removes the avatar), `false` if it was taken over.
    pub fn expire(&self, claim: &Claim) -> bool {
        let mut entries = self.lock();
        match entries.get(&claim.token) {
            Some(entry)
                if entry.epoch == claim.epoch && matches!(entry.holder, Holder::Parked { .. }) =>
            {
                entries.remove(&claim.token);
                true
            }
            _ => false,
        }
    }

    /// Removes the session of `claim` for good (its client left); `false` if another
    /// connection holds it now.
    pub fn end(&self, claim: &Claim) -> bool {
        let mut entries = self.lock();
        match entries.get(&claim.token) {
            Some(entry) if entry.epoch == claim.epoch => {
                entries.remove(&claim.token);
                true
            }
            _ => false,
        }
    }

    /// Entries held (live and parked), for `/metrics` and tests.
    pub fn held(&self) -> usize {
        self.lock().len()
    }

    /// Parked entries, for `/metrics` and tests.
    pub fn parked(&self) -> usize {
        self.lock()
            .values()
            .filter(|e| matches!(e.holder, Holder::Parked { .. }))
            .count()
    }
}

/// 128 random bits, as 32 hex digits.
fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(id: u32) -> Resumable {
        Resumable {
            id: AvatarId(id),
            name: format!("p{id}"),
            role: Role::Guest,
            user: UserKey::session(0, id),
            link_room: None,
        }
    }

    #[test]
    fn a_live_session_taken_over_is_superseded_and_cannot_park_or_end_it() {
        let r = Resumes::new(Duration::from_secs(20));
        let now = Instant::now();
        let first = r.issue(who(1));
        assert_eq!(first.token.len(), 32);
        let (again, second) = r.claim(&first.token, now).expect("live: may be taken over");
        assert_eq!(again.id, AvatarId(1));
        assert!(first.superseded.is_cancelled());
        assert!(!second.superseded.is_cancelled());
        assert!(!r.park(&first, now), "the old connection's park is ignored");
        assert!(!r.end(&first), "the old connection's leave is ignored");
        assert_eq!(r.held(), 1);
        assert!(r.end(&second));
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn a_parked_session_is_resumed_within_its_grace_and_expires_after() {
        let r = Resumes::new(Duration::from_secs(20));
        let now = Instant::now();
        let first = r.issue(who(1));
        assert!(r.park(&first, now));
        assert_eq!(r.parked(), 1);
        let (_, second) = r
            .claim(&first.token, now + Duration::from_secs(19))
            .expect("within the grace period");
        assert!(!r.expire(&first), "resumed: the old expiry does nothing");
        assert_eq!(r.parked(), 0);
        assert!(r.park(&second, now + Duration::from_secs(30)));
        assert!(
            r.claim(&second.token, now + Duration::from_secs(50))
                .is_none(),
            "past the grace period"
        );
        assert!(r.expire(&second));
        assert_eq!(r.held(), 0);
        assert!(r.claim(&second.token, now).is_none(), "gone for good");
    }

    #[test]
    fn unknown_tokens_resume_nothing() {
        let r = Resumes::new(Duration::from_secs(20));
        let _ = r.issue(who(1));
        assert!(
            r.claim("00000000000000000000000000000000", Instant::now())
                .is_none()
        );
        assert!(r.claim("", Instant::now()).is_none());
    }
}
