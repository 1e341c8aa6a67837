-- Click counts of the embedded store (clicks.db), apart from the links so
-- that writing counts never holds the lock link writes need.
-- Times are seconds since the epoch, UTC.

CREATE TABLE click_totals (
    code       TEXT    NOT NULL PRIMARY KEY,
    clicks     INTEGER NOT NULL,
    bot_clicks INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE click_buckets (
    code        TEXT    NOT NULL,
    granularity TEXT    NOT NULL,
    start       INTEGER NOT NULL,
    clicks      INTEGER NOT NULL,
    bot_clicks  INTEGER NOT NULL,
    PRIMARY KEY (code, granularity, start)
) WITHOUT ROWID;

CREATE TABLE click_tops (
    code      TEXT    NOT NULL,
    day       INTEGER NOT NULL,
    dimension TEXT    NOT NULL,
    value     TEXT    NOT NULL,
    clicks    INTEGER NOT NULL,
    PRIMARY KEY (code, day, dimension, value)
) WITHOUT ROWID;
