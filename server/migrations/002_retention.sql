-- Retention: chat lines and audit records are deleted by age (and chat by count), so both
-- are looked up by time; deleting a chat line deletes its recipients, looked up by line.

CREATE INDEX chat_by_time ON chat (at_ms);
CREATE INDEX chat_recipient_by_chat ON chat_recipient (chat_id);
CREATE INDEX audit_by_time ON audit (at_ms);
