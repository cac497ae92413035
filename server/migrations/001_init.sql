-- Quad's first schema: chat, the teacher-action audit log, and secrets.

CREATE TABLE chat (
    id        INTEGER PRIMARY KEY,  -- assigned by the space, increasing
    at_ms     INTEGER NOT NULL,     -- milliseconds since the Unix epoch
    scope     TEXT    NOT NULL,     -- nearby | room | space | direct
    room      TEXT,                 -- the room's name, for room chat
    from_user TEXT    NOT NULL,
    from_name TEXT    NOT NULL,
    from_role TEXT    NOT NULL,
    to_name   TEXT,                 -- direct messages
    body      TEXT    NOT NULL
);
CREATE INDEX chat_by_scope ON chat (scope, room, id);

-- Who received a nearby or direct message (the sender included), for their history.
CREATE TABLE chat_recipient (
    user    TEXT    NOT NULL,
    chat_id INTEGER NOT NULL REFERENCES chat (id) ON DELETE CASCADE,
    PRIMARY KEY (user, chat_id)
) WITHOUT ROWID;

CREATE TABLE audit (
    id          INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    room        TEXT    NOT NULL,
    actor_user  TEXT    NOT NULL,
    actor_name  TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    target_name TEXT,
    detail      TEXT    NOT NULL
);

CREATE TABLE secret (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
