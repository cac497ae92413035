-- Class recordings: one row per recording, from the moment a teacher starts it. The file
-- itself is in the recordings directory (`<id>.webm`); its raw tracks (`<id>/`) are kept
-- there when no file could be made.
CREATE TABLE recordings (
    id TEXT PRIMARY KEY NOT NULL,
    room TEXT NOT NULL,
    by_user TEXT NOT NULL,
    by_name TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    -- recording, mixing, ready or failed
    state TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    shared INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX recordings_by_started ON recordings (started_ms);
