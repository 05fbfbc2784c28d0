"""The store's schema: the migrations that build its tables, one step per schema version.

Tables: `inputs`, `input_meta` and `set_members` (mpc.store.inputs), `sessions` and `audit`
(mpc.store.sessions), `releases` and `release_queries` (mpc.store.releases), `collections`,
`revoked` and `submissions` (mpc.store.collections). The file's `PRAGMA user_version` is the
number of steps applied; StoreBase._migrate applies the rest when it opens the file.
"""

from __future__ import annotations

# _MIGRATIONS[v] takes the schema from user_version v to v + 1. Append, never edit.
# The BLOB column comes last so that list_inputs() never touches its overflow pages.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE inputs (
            name TEXT PRIMARY KEY, length INTEGER NOT NULL CHECK (length >= 1),
            frac_bits INTEGER NOT NULL CHECK (frac_bits BETWEEN 0 AND 32),
            is_scalar INTEGER NOT NULL CHECK (is_scalar IN (0, 1)),
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            data BLOB NOT NULL CHECK (length(data) = 8 * length))""",
        """CREATE TABLE sessions (
            session_id TEXT PRIMARY KEY, protocol TEXT NOT NULL, input_name TEXT NOT NULL,
            participants TEXT NOT NULL, coordinator TEXT NOT NULL, status TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
        "CREATE INDEX sessions_by_created ON sessions (created_at)",
        "CREATE INDEX sessions_by_status ON sessions (status)",
    ),
    (
        # The audit log: one row per event of a session that touched this node's inputs (its
        # prepare, its end, or its refusal). Sizes and kinds of what left the node, never values.
        # Rows are only ever appended: the triggers refuse UPDATE and DELETE.
        """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,
            event TEXT NOT NULL CHECK (event IN ('prepared', 'refused', 'done', 'failed', 'aborted',
                                                 'interrupted')),
            session_id TEXT NOT NULL, coordinator TEXT NOT NULL, protocol TEXT NOT NULL,
            inputs TEXT NOT NULL, participants TEXT NOT NULL,
            sent TEXT NOT NULL DEFAULT '[]', reason TEXT NOT NULL DEFAULT '')""",
        "CREATE INDEX audit_by_session ON audit (session_id)",
        "CREATE INDEX audit_by_time ON audit (at)",
        """CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
        """CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    ),
)
AUDIT_EVENTS = ("prepared", "refused", "released", "done", "failed", "aborted", "interrupted")
_AUDIT_TABLE = """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,
            event TEXT NOT NULL CHECK (event IN ('prepared', 'refused', 'released', 'done', 'failed',
                                                 'aborted', 'interrupted')),
            session_id TEXT NOT NULL, coordinator TEXT NOT NULL, protocol TEXT NOT NULL,
            inputs TEXT NOT NULL, participants TEXT NOT NULL,
            sent TEXT NOT NULL DEFAULT '[]', reason TEXT NOT NULL DEFAULT '')"""
_APPEND_ONLY = tuple(
    f"""CREATE TRIGGER {table}_append_only_{op.lower()} BEFORE {op} ON {table}
            BEGIN SELECT RAISE(ABORT, 'the {what} is append-only'); END"""
    for table, what in (("audit", "audit log"), ("releases", "release log")) for op in ("UPDATE", "DELETE"))
_MIGRATIONS += (
    (
        # What each stored input declares in public: its version (never reused for a name, even
        # after `input rm`), its kind, and its bounds (encoded at its own scale; NULL for an input
        # stored by an older mpc, which must be stored again with bounds before it is used).
        # A separate table, so that reading it never touches an input's BLOB overflow pages.
        """CREATE TABLE input_meta (
            name TEXT PRIMARY KEY, version INTEGER NOT NULL CHECK (version >= 1),
            kind TEXT NOT NULL CHECK (kind IN ('number', 'ballots')), lo INTEGER, hi INTEGER,
            yes INTEGER CHECK ((kind = 'ballots') = (yes IS NOT NULL)),
            CHECK ((lo IS NULL) = (hi IS NULL) AND (lo IS NULL OR lo <= hi)))""",
        "INSERT INTO input_meta (name, version, kind, lo, hi, yes) SELECT name, 1, 'number', NULL, NULL, NULL "
        "FROM inputs",
        # The releases each input version took part in (DESIGN.md §9); append-only, like the audit log.
        """CREATE TABLE releases (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, session_id TEXT NOT NULL,
            input_name TEXT NOT NULL, version INTEGER NOT NULL, query TEXT NOT NULL,
            counted INTEGER NOT NULL CHECK (counted IN (0, 1)))""",
        "CREATE INDEX releases_by_input ON releases (input_name, version)",
        # The audit log learns the event "released": rebuilt with the wider CHECK, rows kept.
        _AUDIT_TABLE.replace("CREATE TABLE audit", "CREATE TABLE audit_v3"),
        "INSERT INTO audit_v3 SELECT * FROM audit",
        "DROP TABLE audit",
        "ALTER TABLE audit_v3 RENAME TO audit",
        "CREATE INDEX audit_by_session ON audit (session_id)",
        "CREATE INDEX audit_by_time ON audit (at)",
        *_APPEND_ONLY,
    ),
)
_MIGRATIONS += (
    (
        # Three more kinds, each for one protocol (mpc/protocols/catalogue.py): "options" are a
        # plurality vote's ballots (indices 0..hi, their tally per option kept beside them as JSON),
        # "curve" a net-demand curve over a price grid (checked at put never to increase), "bids" an
        # auction's sealed bids. input_meta is rebuilt for the wider CHECKs, rows kept; the tally of
        # 0/1 ballots stored before is [length - yes, yes], derived when read.
        """CREATE TABLE input_meta_v4 (
            name TEXT PRIMARY KEY, version INTEGER NOT NULL CHECK (version >= 1),
            kind TEXT NOT NULL CHECK (kind IN ('number', 'ballots', 'options', 'curve', 'bids')),
            lo INTEGER, hi INTEGER,
            yes INTEGER CHECK ((kind = 'ballots') = (yes IS NOT NULL)),
            tally TEXT CHECK (tally IS NULL OR kind IN ('ballots', 'options')),
            CHECK ((lo IS NULL) = (hi IS NULL) AND (lo IS NULL OR lo <= hi)))""",
        "INSERT INTO input_meta_v4 (name, version, kind, lo, hi, yes, tally) "
        "SELECT name, version, kind, lo, hi, yes, NULL FROM input_meta",
        "DROP TABLE input_meta",
        "ALTER TABLE input_meta_v4 RENAME TO input_meta",
    ),
)
_MIGRATIONS += (
    (
        # Differentially private releases (DESIGN.md §11) spend the owner's (epsilon, delta) budget
        # of an input, across all its versions: each is recorded with what it spent, as an exact
        # decimal, in the same transaction as its audit entry. NULL: an exact release.
        "ALTER TABLE releases ADD COLUMN epsilon TEXT",
        "ALTER TABLE releases ADD COLUMN delta TEXT",
    ),
)
_MIGRATIONS += (
    (
        # A sixth kind, "set" (DESIGN.md §14): distinct identifiers for a private set intersection,
        # each with an associated integer value. The values are the input's `inputs.data` (zeros for a
        # set without values), so that its length, bounds and version work as for any input; the
        # identifiers live beside it in `set_members`, packed in the stored order, each as a 2-byte
        # little-endian length and its bytes. input_meta is rebuilt for the wider CHECK, rows kept.
        """CREATE TABLE input_meta_v6 (
            name TEXT PRIMARY KEY, version INTEGER NOT NULL CHECK (version >= 1),
            kind TEXT NOT NULL CHECK (kind IN ('number', 'ballots', 'options', 'curve', 'bids', 'set')),
            lo INTEGER, hi INTEGER,
            yes INTEGER CHECK ((kind = 'ballots') = (yes IS NOT NULL)),
            tally TEXT CHECK (tally IS NULL OR kind IN ('ballots', 'options')),
            CHECK ((lo IS NULL) = (hi IS NULL) AND (lo IS NULL OR lo <= hi)))""",
        "INSERT INTO input_meta_v6 (name, version, kind, lo, hi, yes, tally) "
        "SELECT name, version, kind, lo, hi, yes, tally FROM input_meta",
        "DROP TABLE input_meta",
        "ALTER TABLE input_meta_v6 RENAME TO input_meta",
        # The BLOB comes last, as in `inputs`.
        """CREATE TABLE set_members (
            name TEXT PRIMARY KEY, size INTEGER NOT NULL CHECK (size >= 1),
            has_values INTEGER NOT NULL CHECK (has_values IN (0, 1)),
            identifiers BLOB NOT NULL CHECK (length(identifiers) >= 3 * size))""",
    ),
)
_MIGRATIONS += (
    (
        # The distinct queries each input version took part in, with whether the first counted against
        # its budget (a later identical query never does): what deciding on the next release reads, so
        # that it takes as long after the ten-thousandth repeat as after the first. Kept with `releases`,
        # in the same transaction; append-only like it.
        """CREATE TABLE release_queries (
            input_name TEXT NOT NULL, version INTEGER NOT NULL, query TEXT NOT NULL,
            counted INTEGER NOT NULL CHECK (counted IN (0, 1)), first_seq INTEGER NOT NULL,
            PRIMARY KEY (input_name, version, query))""",
        "INSERT INTO release_queries (input_name, version, query, counted, first_seq) "
        "SELECT input_name, version, query, MAX(counted), MIN(seq) FROM releases GROUP BY input_name, version, query",
        *(f"""CREATE TRIGGER release_queries_append_only_{op.lower()} BEFORE {op} ON release_queries
            BEGIN SELECT RAISE(ABORT, 'the release log is append-only'); END""" for op in ("UPDATE", "DELETE")),
    ),
)
_MIGRATIONS += (
    (
        # Collections (DESIGN.md §12): contributors who run no node submit additive shares, one per
        # credential, to a few nodes. `collections` is each one's public spec (a ballot collection is
        # 0/1, a range one lo..hi; `length` words per submission; owner_key verifies its credentials).
        """CREATE TABLE collections (
            name TEXT PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('ballot', 'range')),
            lo INTEGER NOT NULL, hi INTEGER NOT NULL,
            length INTEGER NOT NULL CHECK (length BETWEEN 1 AND 4096),
            min_batch INTEGER NOT NULL CHECK (min_batch >= 1),
            resubmit TEXT NOT NULL CHECK (resubmit IN ('refuse', 'replace')),
            nodes TEXT NOT NULL,
            created_at TEXT NOT NULL,
            owner_key BLOB NOT NULL CHECK (length(owner_key) = 32),
            CHECK (lo <= hi AND (kind = 'range' OR (lo = 0 AND hi = 1))))""",
        """CREATE TABLE revoked (
            collection TEXT NOT NULL, credential BLOB NOT NULL CHECK (length(credential) = 16),
            PRIMARY KEY (collection, credential)) WITHOUT ROWID""",
        # One share per (collection, credential), little-endian uint64 words; that it has the
        # collection's 8 * length bytes is checked in Python (mpc.store.collections). WITHOUT ROWID:
        # the key is the only way in, and an index b-tree keeps at most ~1 KB of a row on its leaf, so
        # reading the keys of a collection of long shares does not walk a page per row.
        """CREATE TABLE submissions (
            collection TEXT NOT NULL, credential BLOB NOT NULL CHECK (length(credential) = 16),
            nonce BLOB NOT NULL CHECK (length(nonce) = 16), received_at TEXT NOT NULL,
            share BLOB NOT NULL CHECK (length(share) > 0 AND length(share) % 8 = 0),
            PRIMARY KEY (collection, credential)) WITHOUT ROWID""",
        # A closed collection takes no submission or revocation: sessions run over closed ones only,
        # so that no two releases differ by one contributor's submission.
        """CREATE TABLE closed_collections (name TEXT PRIMARY KEY, closed_at TEXT NOT NULL) WITHOUT ROWID""",
    ),
)
_MIGRATIONS += (
    (
        # Option collections: a vote for one of `length` options (2..256), submitted one-hot (lo = 0,
        # hi = 1). SQLite cannot change a CHECK in place: the table is rebuilt with its rows.
        """CREATE TABLE collections_9 (
            name TEXT PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('ballot', 'range', 'option')),
            lo INTEGER NOT NULL, hi INTEGER NOT NULL,
            length INTEGER NOT NULL CHECK (length BETWEEN 1 AND 4096),
            min_batch INTEGER NOT NULL CHECK (min_batch >= 1),
            resubmit TEXT NOT NULL CHECK (resubmit IN ('refuse', 'replace')),
            nodes TEXT NOT NULL,
            created_at TEXT NOT NULL,
            owner_key BLOB NOT NULL CHECK (length(owner_key) = 32),
            CHECK (lo <= hi AND (kind = 'range' OR (lo = 0 AND hi = 1))),
            CHECK (kind <> 'option' OR length BETWEEN 2 AND 256))""",
        "INSERT INTO collections_9 SELECT * FROM collections",
        "DROP TABLE collections",
        "ALTER TABLE collections_9 RENAME TO collections",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)
