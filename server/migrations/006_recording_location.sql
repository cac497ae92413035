-- Where a recording's file is: `local` (the recordings folder) or `s3` (the configured
-- bucket, under its prefix).
ALTER TABLE recordings ADD COLUMN location TEXT NOT NULL DEFAULT 'local';
