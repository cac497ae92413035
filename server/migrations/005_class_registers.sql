-- Class registers: one row per class session (a class from the first person walking into
-- its room to the last walking out), and one per person who attended it, with when they
-- came and went (`intervals`, JSON: [[from_ms, to_ms or null], ...]) and how they took part.
CREATE TABLE class_sessions (
    id TEXT PRIMARY KEY NOT NULL,
    room TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    ended_ms INTEGER,
    left_out INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX class_sessions_by_started ON class_sessions (started_ms);
CREATE TABLE class_attendees (
    session TEXT NOT NULL REFERENCES class_sessions (id) ON DELETE CASCADE,
    user_key TEXT NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    intervals TEXT NOT NULL,
    talk_ms INTEGER NOT NULL,
    hands INTEGER NOT NULL,
    chat_lines INTEGER NOT NULL,
    away_count INTEGER NOT NULL,
    away_ms INTEGER NOT NULL,
    PRIMARY KEY (session, user_key)
);
CREATE INDEX class_attendees_by_user ON class_attendees (user_key);
-- A recording belongs to the class session it was made in.
ALTER TABLE recordings ADD COLUMN session TEXT NOT NULL DEFAULT '';
