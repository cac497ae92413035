-- The shared store of a cluster (PostgreSQL): the same tables as the embedded SQLite
-- store's migrations 001-006, in one step. Times are milliseconds since the Unix epoch.
CREATE TABLE chat (
    id        BIGINT PRIMARY KEY,   -- assigned by the space, increasing
    at_ms     BIGINT NOT NULL,
    scope     TEXT   NOT NULL,      -- nearby | room | space | direct
    room      TEXT,                 -- the room's name, for room chat
    from_user TEXT   NOT NULL,
    from_name TEXT   NOT NULL,
    from_role TEXT   NOT NULL,
    to_name   TEXT,                 -- direct messages
    body      TEXT   NOT NULL
);
CREATE INDEX chat_by_scope ON chat (scope, room, id);
CREATE INDEX chat_by_time ON chat (at_ms);

CREATE TABLE chat_recipient (
    user_key TEXT   NOT NULL,
    chat_id  BIGINT NOT NULL REFERENCES chat (id) ON DELETE CASCADE,
    PRIMARY KEY (user_key, chat_id)
);
CREATE INDEX chat_recipient_by_chat ON chat_recipient (chat_id);

CREATE TABLE audit (
    id          BIGSERIAL PRIMARY KEY,
    at_ms       BIGINT NOT NULL,
    room        TEXT   NOT NULL,
    actor_user  TEXT   NOT NULL,
    actor_name  TEXT   NOT NULL,
    action      TEXT   NOT NULL,
    target_name TEXT,
    detail      TEXT   NOT NULL
);
CREATE INDEX audit_by_time ON audit (at_ms);

CREATE TABLE secret (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE reserved_names (
    name_key    TEXT PRIMARY KEY,
    reserved_ms BIGINT NOT NULL
);

CREATE TABLE recordings (
    id          TEXT PRIMARY KEY,
    room        TEXT    NOT NULL,
    by_user     TEXT    NOT NULL,
    by_name     TEXT    NOT NULL,
    started_ms  BIGINT  NOT NULL,
    duration_ms BIGINT  NOT NULL DEFAULT 0,
    bytes       BIGINT  NOT NULL DEFAULT 0,
    state       TEXT    NOT NULL,  -- recording, mixing, ready or failed
    message     TEXT    NOT NULL DEFAULT '',
    shared      BOOLEAN NOT NULL DEFAULT FALSE,
    session     TEXT    NOT NULL DEFAULT '',
    location    TEXT    NOT NULL DEFAULT 'local'
);
CREATE INDEX recordings_by_started ON recordings (started_ms);

CREATE TABLE class_sessions (
    id         TEXT PRIMARY KEY,
    room       TEXT    NOT NULL,
    started_ms BIGINT  NOT NULL,
    ended_ms   BIGINT,
    left_out   BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX class_sessions_by_started ON class_sessions (started_ms);

CREATE TABLE class_attendees (
    seq        BIGSERIAL,             -- the order people were first kept in
    session    TEXT   NOT NULL REFERENCES class_sessions (id) ON DELETE CASCADE,
    user_key   TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    role       TEXT   NOT NULL,
    intervals  TEXT   NOT NULL,
    talk_ms    BIGINT NOT NULL,
    hands      BIGINT NOT NULL,
    chat_lines BIGINT NOT NULL,
    away_count BIGINT NOT NULL,
    away_ms    BIGINT NOT NULL,
    PRIMARY KEY (session, user_key)
);
CREATE INDEX class_attendees_by_user ON class_attendees (user_key);
