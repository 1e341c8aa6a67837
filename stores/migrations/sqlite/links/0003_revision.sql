-- How many times a link was changed (PATCH or DELETE): caches that heard
-- of a change drop copies older than it.
ALTER TABLE links ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
