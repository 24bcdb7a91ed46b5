package sqlite

import (
	"context"
	"fmt"
)

// migrations are applied in order; migrations[i] brings the schema from
// version i to i+1. Append new ones, never edit a released one.
//
// Conventions: times are INTEGER microseconds since the Unix epoch in UTC,
// 0 for the zero time; JSON is stored as BLOB, NULL when absent.
var migrations = []string{
	// Version 1: groups, specs, runs, events and the webhook outbox.
	`
CREATE TABLE groups (
	id             TEXT PRIMARY KEY,
	owner          TEXT NOT NULL,
	metadata       BLOB,
	created_at     INTEGER NOT NULL,
	modified_at    INTEGER NOT NULL,
	num_runs       INTEGER NOT NULL DEFAULT 0,
	last_run_seq   INTEGER NOT NULL DEFAULT 0,
	last_event_seq INTEGER NOT NULL DEFAULT 0,
	-- runs per status, in the order of api.AllStatuses
	n_queued          INTEGER NOT NULL DEFAULT 0,
	n_action_required INTEGER NOT NULL DEFAULT 0,
	n_running         INTEGER NOT NULL DEFAULT 0,
	n_completed       INTEGER NOT NULL DEFAULT 0,
	n_failed          INTEGER NOT NULL DEFAULT 0,
	n_cancelling      INTEGER NOT NULL DEFAULT 0,
	n_cancelled       INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE task_specs (
	hash TEXT PRIMARY KEY,
	spec BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE runs (
	-- ord is the rowid: the order runs were added in, for oldest-first claims
	ord         INTEGER PRIMARY KEY,
	id          TEXT NOT NULL UNIQUE,
	group_id    TEXT NOT NULL,
	seq         INTEGER NOT NULL,
	owner       TEXT NOT NULL,
	processor   TEXT NOT NULL,
	status      TEXT NOT NULL,
	input       BLOB,
	spec_hash   TEXT NOT NULL,
	warnings    BLOB,
	error       BLOB,
	cached      INTEGER NOT NULL DEFAULT 0,
	attempt     INTEGER NOT NULL DEFAULT 0,
	checkpoint  BLOB,
	created_at  INTEGER NOT NULL,
	modified_at INTEGER NOT NULL,
	finished_at INTEGER NOT NULL DEFAULT 0,
	not_before  INTEGER NOT NULL DEFAULT 0,
	lease_owner TEXT NOT NULL DEFAULT '',
	lease_until INTEGER NOT NULL DEFAULT 0,
	-- prev_status is set to the old status by every status change, so that
	-- UPDATE ... RETURNING reports both sides and counters can follow
	prev_status TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX runs_group_seq ON runs (group_id, seq) WHERE group_id <> '';
CREATE INDEX runs_claim ON runs (processor, ord, not_before) WHERE status = 'queued';
CREATE INDEX runs_leased ON runs (lease_owner, lease_until)
	WHERE status IN ('running', 'cancelling');

-- run_outputs holds what a run produced, apart from the runs table so that
-- finishing a run does not grow its row in place
CREATE TABLE run_outputs (
	ord    INTEGER PRIMARY KEY,
	output BLOB,
	usage  BLOB
);

CREATE TABLE events (
	group_id TEXT NOT NULL,
	seq      INTEGER NOT NULL,
	kind     TEXT NOT NULL,
	run_id   TEXT,
	status   BLOB,
	at       INTEGER NOT NULL,
	PRIMARY KEY (group_id, seq)
) WITHOUT ROWID;

CREATE TABLE deliveries (
	id         TEXT PRIMARY KEY,
	run_id     TEXT NOT NULL,
	url        TEXT NOT NULL,
	payload    BLOB,
	attempts   INTEGER NOT NULL DEFAULT 0,
	next_at    INTEGER NOT NULL,
	last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX deliveries_due ON deliveries (next_at);
`,
	// Version 2: each run's metadata apart from its input, so that event
	// logs read it without the input, and each run state event's run by its
	// row number.
	`
ALTER TABLE runs ADD COLUMN metadata BLOB;
UPDATE runs SET metadata = CAST(json_extract(CAST(input AS TEXT), '$.metadata') AS BLOB)
	WHERE input IS NOT NULL AND json_valid(CAST(input AS TEXT))
	AND json_type(CAST(input AS TEXT), '$.metadata') = 'object';
ALTER TABLE events ADD COLUMN run_ord INTEGER;
UPDATE events SET run_ord = (SELECT ord FROM runs WHERE runs.id = events.run_id)
	WHERE run_id IS NOT NULL;
`,
	// Version 3: group budgets, and the result cache's key on runs.
	`
ALTER TABLE groups ADD COLUMN cost REAL NOT NULL DEFAULT 0;
ALTER TABLE groups ADD COLUMN max_cost REAL NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN cache_key TEXT NOT NULL DEFAULT '';
CREATE INDEX runs_cache ON runs (processor, cache_key, finished_at)
	WHERE cache_key <> '' AND status = 'completed';
`,
}

// migrate creates the schema or brings it up to date, recording the version
// in schema_version.
func (s *Store) migrate(ctx context.Context) error {
	return s.write(ctx, func(tx *wtx) error {
		if _, err := s.w.ExecContext(ctx,
			`CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
			return fmt.Errorf("create schema_version: %w", err)
		}
		var version int
		err := s.w.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_version`).
			Scan(&version)
		if err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if version > len(migrations) {
			return fmt.Errorf("schema version %d is newer than this build knows (%d)",
				version, len(migrations))
		}
		for v := version; v < len(migrations); v++ {
			if _, err := s.w.ExecContext(ctx, migrations[v]); err != nil {
				return fmt.Errorf("migrate schema to version %d: %w", v+1, err)
			}
		}
		if version < len(migrations) {
			if _, err := s.w.ExecContext(ctx, `DELETE FROM schema_version`); err != nil {
				return fmt.Errorf("record schema version: %w", err)
			}
			_, err = s.w.ExecContext(ctx, `INSERT INTO schema_version VALUES (?)`, len(migrations))
			if err != nil {
				return fmt.Errorf("record schema version: %w", err)
			}
		}
		return nil
	})
}
