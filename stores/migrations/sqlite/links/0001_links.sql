-- Links, id blocks and settings of the embedded store (links.db).
-- Times are milliseconds since the epoch, UTC.

CREATE TABLE links (
    code          TEXT    NOT NULL PRIMARY KEY,
    url           TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    redirect      INTEGER NOT NULL,
    forward_query INTEGER NOT NULL,
    deleted_at    INTEGER,
    token_digest  BLOB    NOT NULL,
    -- When the row may be forgotten: the retention after expiry or deletion.
    purge_at      INTEGER
) WITHOUT ROWID;

CREATE INDEX links_by_purge_at ON links (purge_at) WHERE purge_at IS NOT NULL;

-- The next id not yet leased to any instance.
CREATE TABLE id_blocks (
    name TEXT    NOT NULL PRIMARY KEY,
    next INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO id_blocks (name, next) VALUES ('links', 0);

CREATE TABLE settings (
    name  TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
