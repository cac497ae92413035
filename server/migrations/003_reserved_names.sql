-- The display names of join-link holders, which guests may not take (compared by their
-- letters and digits, lower-cased: the key). Kept across restarts.
CREATE TABLE reserved_names (
    name_key TEXT PRIMARY KEY NOT NULL,
    reserved_ms INTEGER NOT NULL
);
