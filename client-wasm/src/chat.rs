//! The chat as the client keeps it, free of any browser API: the lines received, in `id`
//! order without duplicates, and which of our own the server could not save ([`ChatLog`]),
//! and the names the page gives scopes and recipients. The browser side (`web::chat`) owns the panel's DOM; this module must not
//! touch it.

use quad_shared::AvatarId;
use quad_shared::protocol::{ChatLine, ChatScope, ChatTo};
use std::collections::{BTreeSet, VecDeque};

/// The most lines kept (and shown); the oldest go first.
pub const MAX_LINES: usize = 400;

/// The chat lines this client holds, oldest first.
#[derive(Debug, Default)]
pub struct ChatLog {
    lines: VecDeque<ChatLine>,
    /// Lines the server could not save ([`quad_shared::protocol::ServerMsg::ChatNotSaved`]):
    /// they reached people live but are in no history. At most [`MAX_LINES`], the newest.
    unsaved: BTreeSet<u64>,
    /// Set on every change, so the panel redraws only when something changed.
    pub dirty: bool,
}

/// What the panel says of a line the server could not save.
pub const NOT_SAVED_NOTE: &str = "not saved";

/// What the page tells the sender when one of its lines could not be saved.
pub const NOT_SAVED_NOTICE: &str = "Your message reached the people here, but the server \
    could not save it: it will not be in the chat history.";

impl ChatLog {
    /// Adds one line in `id` order; a line already held (history overlaps live lines) is
    /// dropped.
    pub fn add(&mut self, line: ChatLine) {
        let Err(at) = self.lines.binary_search_by_key(&line.id, |l| l.id) else {
            return;
        };
        self.lines.insert(at, line);
        while self.lines.len() > MAX_LINES {
            self.lines.pop_front();
        }
        self.dirty = true;
    }

    /// Merges earlier lines (history) with those held.
    pub fn merge(&mut self, lines: impl IntoIterator<Item = ChatLine>) {
        for line in lines {
            self.add(line);
        }
    }

    /// Notes that line `id` was not saved (it may not have arrived yet).
    pub fn mark_unsaved(&mut self, id: u64) {
        self.unsaved.insert(id);
        while self.unsaved.len() > MAX_LINES {
            self.unsaved.pop_first();
        }
        self.dirty = true;
    }

    /// Whether the server said line `id` was not saved.
    pub fn is_unsaved(&self, id: u64) -> bool {
        self.unsaved.contains(&id)
    }

    /// The lines held, oldest first.
    pub fn lines(&self) -> impl Iterator<Item = &ChatLine> {
        self.lines.iter()
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// A scope's name on the page (`data-scope`) and in `window.quad.snapshot()`.
pub fn scope_name(scope: &ChatScope) -> &'static str {
    match scope {
        ChatScope::Nearby => "nearby",
        ChatScope::Room(_) => "room",
        ChatScope::Space => "space",
        ChatScope::Direct => "direct",
    }
}

/// A recipient as the chat form's `<select>` names it: `nearby`, `room`, `space` or
/// `direct:<avatar id>`.
pub fn recipient_value(to: ChatTo) -> String {
    match to {
        ChatTo::Nearby => "nearby".into(),
        ChatTo::Room => "room".into(),
        ChatTo::Space => "space".into(),
        ChatTo::Direct(id) => format!("direct:{}", id.0),
    }
}

/// Reads a [`recipient_value`]; `None` for anything else.
pub fn parse_recipient(value: &str) -> Option<ChatTo> {
    match value {
        "nearby" => Some(ChatTo::Nearby),
        "room" => Some(ChatTo::Room),
        "space" => Some(ChatTo::Space),
        other => {
            let id = other.strip_prefix("direct:")?;
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(ChatTo::Direct(AvatarId(id.parse().ok()?)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quad_shared::protocol::Role;

    fn line(id: u64) -> ChatLine {
        ChatLine {
            id,
            at_ms: id * 1000,
            scope: ChatScope::Space,
            from: None,
            from_name: format!("p{id}"),
            from_role: Role::Guest,
            to_name: None,
            text: format!("line {id}"),
        }
    }

    fn ids(log: &ChatLog) -> Vec<u64> {
        log.lines().map(|l| l.id).collect()
    }

    #[test]
    fn history_merges_in_id_order_without_duplicates() {
        let mut log = ChatLog::default();
        log.add(line(5));
        log.add(line(7));
        assert!(log.dirty);
        log.dirty = false;
        log.add(line(7));
        assert!(!log.dirty, "a line held already changes nothing");
        log.merge([3, 5, 6, 1].map(line));
        assert_eq!(ids(&log), [1, 3, 5, 6, 7]);
        assert!(log.dirty);
    }

    #[test]
    fn the_oldest_lines_go_past_the_limit() {
        let mut log = ChatLog::default();
        log.merge((1..=MAX_LINES as u64 + 10).map(line));
        assert_eq!(log.len(), MAX_LINES);
        assert_eq!(log.lines().next().map(|l| l.id), Some(11));
        // Older than everything held: kept out.
        log.add(line(2));
        assert_eq!(log.lines().next().map(|l| l.id), Some(11));
        assert_eq!(log.len(), MAX_LINES);
    }

    #[test]
    fn lines_not_saved_are_marked_and_the_marks_are_bounded() {
        let mut log = ChatLog::default();
        log.add(line(4));
        log.dirty = false;
        log.mark_unsaved(4);
        assert!(log.dirty);
        assert!(log.is_unsaved(4));
        assert!(!log.is_unsaved(5));
        for id in 10..10 + MAX_LINES as u64 {
            log.mark_unsaved(id);
        }
        assert!(!log.is_unsaved(4), "the oldest marks go");
        assert!(log.is_unsaved(9 + MAX_LINES as u64));
    }

    #[test]
    fn recipients_round_trip_and_refuse_anything_else() {
        for to in [
            ChatTo::Nearby,
            ChatTo::Room,
            ChatTo::Space,
            ChatTo::Direct(AvatarId(42)),
        ] {
            assert_eq!(parse_recipient(&recipient_value(to)), Some(to));
        }
        for bad in [
            "",
            "Room",
            "direct:",
            "direct:+4",
            "direct:x",
            "direct:4294967296",
            "4",
        ] {
            assert_eq!(parse_recipient(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn scopes_have_page_names() {
        assert_eq!(scope_name(&ChatScope::Room("Lab".into())), "room");
        assert_eq!(scope_name(&ChatScope::Direct), "direct");
    }
}
