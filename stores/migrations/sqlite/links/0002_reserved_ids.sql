-- Ids set aside because an alias took the code the generator makes of them;
-- leases skip them.
CREATE TABLE reserved_ids (
    id INTEGER NOT NULL PRIMARY KEY
);
