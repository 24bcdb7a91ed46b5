package pipeline

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store/sqlite"
)

// Row statuses in the state store. The run statuses of the API that a row
// ends in (completed, failed, cancelled) are recorded only after the row was
// written to the sink, so a crash in between rewrites it, never loses it.
const (
	// stateSubmitting: the row is about to be added (or was added by a
	// call whose reply was never recorded); reconcile adopts its run.
	stateSubmitting = "submitting"
	// stateSubmitted: the row's run id is known and its result not yet
	// written.
	stateSubmitted = "submitted"
	// StatusInvalidInput is the status of a row whose mapped input breaks
	// the task's input schema; it is written to the sink, never submitted.
	StatusInvalidInput = "invalid_input"
)

// rowState is what the state store knows of one source row.
type rowState struct {
	Key string
	// KeyValues is the JSON array of the key column values, so that a
	// result row can carry the typed key without the source row.
	KeyValues   string
	Fingerprint string
	SpecHash    string
	GroupID     string
	RunID       string
	Status      string
	// Pass is the pipeline pass that last read the key from the source;
	// a key seen twice in one pass is a duplicate.
	Pass int64
}

// stateStore is the local, durable memory of a pipeline: its task group per
// target and, for every row key, the run that serves it. It lives in
// target.state_dir as SQLite (WAL, synchronous=NORMAL: a committed
// transaction survives kill -9 of the process).
type stateStore struct {
	db *sql.DB
	// stmts caches prepared statements by their text (see prepared).
	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt
	// lock is held while the store is open, unless the caller holds it.
	lock *StateLock
	path string
}

// StateLock is the exclusive hold of one process on a state directory: two
// pipelines (or a pipeline and an embedded engine started by wait) must
// never drive the same state at once. The operating system releases it
// when the process dies, so kill -9 never leaves it behind.
type StateLock struct {
	f *os.File
}

// LockState takes the lock of the state directory dir (creating it), or
// fails at once with ErrStateLocked when another process holds it.
func LockState(dir string) (*StateLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	f, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	return &StateLock{f: f}, nil
}

// Unlock releases the lock.
func (l *StateLock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

const stateSchema = `
CREATE TABLE IF NOT EXISTS meta (
	name  TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
	target       TEXT PRIMARY KEY,
	group_id     TEXT NOT NULL,
	run_cursor   TEXT NOT NULL DEFAULT '',
	event_cursor TEXT NOT NULL DEFAULT '',
	created_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rows (
	key         TEXT PRIMARY KEY,
	key_values  TEXT NOT NULL DEFAULT '[]',
	fingerprint TEXT NOT NULL,
	spec_hash   TEXT NOT NULL,
	group_id    TEXT NOT NULL DEFAULT '',
	run_id      TEXT NOT NULL DEFAULT '',
	status      TEXT NOT NULL,
	pass        INTEGER NOT NULL DEFAULT 0,
	updated_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rows_run ON rows (run_id);
-- Rows by status are only looked up when a pass starts (rows left
-- submitting) and ends (rows waiting for runs a group lost): a scan then
-- costs less than keeping an index through every status change.
DROP INDEX IF EXISTS rows_status;
`

// stateCacheKiB is the page cache of the state store.
const stateCacheKiB = 32 << 10

// ErrStateLocked is returned when another taskpipe process holds the state
// directory.
var ErrStateLocked = errors.New("state directory is in use by another taskpipe process")

// openState opens (creating) the state store in dir. Unless held is given,
// it locks dir against a second concurrent pipeline process.
func openState(ctx context.Context, dir string, held *StateLock) (*stateStore, error) {
	lock := held
	if lock == nil {
		var err error
		if lock, err = LockState(dir); err != nil {
			return nil, err
		}
	}
	release := func() {
		if held == nil {
			lock.Unlock()
		}
	}
	path := filepath.Join(dir, "pipeline.db")
	// The cache holds the hot part of the key and run id indexes: with
	// SQLite's default 2 MB, a million keys make every lookup a read.
	db := sqlite.OpenDB(path, "journal_mode = WAL", "synchronous = NORMAL", "busy_timeout = 10000",
		fmt.Sprintf("cache_size = -%d", stateCacheKiB))
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, stateSchema); err != nil {
		db.Close()
		release()
		return nil, fmt.Errorf("create state schema in %s: %w", path, err)
	}
	st := &stateStore{db: db, path: path, stmts: map[string]*sql.Stmt{}}
	if held == nil {
		st.lock = lock
	}
	return st, nil
}

// Close closes the store and releases the directory lock it took.
func (s *stateStore) Close() error {
	for _, st := range s.stmts {
		st.Close()
	}
	err := s.db.Close()
	if lerr := s.lock.Unlock(); err == nil {
		err = lerr
	}
	return err
}

// nextPass starts a new pipeline pass and returns its number.
func (s *stateStore) nextPass(ctx context.Context) (int64, error) {
	var pass int64
	err := s.db.QueryRowContext(ctx, `
		INSERT INTO meta (name, value) VALUES ('pass', '1')
		ON CONFLICT (name) DO UPDATE SET value = CAST(value AS INTEGER) + 1
		RETURNING CAST(value AS INTEGER)`).Scan(&pass)
	if err != nil {
		return 0, fmt.Errorf("start pass: %w", err)
	}
	return pass, nil
}

// groupRecord is the task group of a target.
type groupRecord struct {
	GroupID     string
	RunCursor   string
	EventCursor string
}

// group returns the recorded group of target, or ok false.
func (s *stateStore) group(ctx context.Context, target string) (g groupRecord, ok bool, err error) {
	err = s.db.QueryRowContext(ctx,
		`SELECT group_id, run_cursor, event_cursor FROM groups WHERE target = ?`, target,
	).Scan(&g.GroupID, &g.RunCursor, &g.EventCursor)
	if errors.Is(err, sql.ErrNoRows) {
		return g, false, nil
	}
	if err != nil {
		return g, false, fmt.Errorf("load group of %s: %w", target, err)
	}
	return g, true, nil
}

// setGroup records the group of target (before any run is added to it).
func (s *stateStore) setGroup(ctx context.Context, target, groupID string) error {
	_, err := s.db.ExecContext(ctx, `
		INSERT INTO groups (target, group_id, created_at) VALUES (?, ?, ?)
		ON CONFLICT (target) DO UPDATE SET group_id = excluded.group_id,
			run_cursor = '', event_cursor = ''`,
		target, groupID, now())
	if err != nil {
		return fmt.Errorf("record group %s: %w", groupID, err)
	}
	return nil
}

// setCursors records how far the group's runs (every run up to RunCursor
// is settled) and events streams were followed.
func (s *stateStore) setCursors(ctx context.Context, target, runCursor, eventCursor string) error {
	_, err := s.db.ExecContext(ctx,
		`UPDATE groups SET run_cursor = ?, event_cursor = ? WHERE target = ?`,
		runCursor, eventCursor, target)
	if err != nil {
		return fmt.Errorf("record cursors: %w", err)
	}
	return nil
}

// rows returns the state of the given keys.
func (s *stateStore) rows(ctx context.Context, keys []string) (map[string]rowState, error) {
	out, err := s.lookup(ctx, "key", keys)
	if err != nil {
		return nil, fmt.Errorf("load row states: %w", err)
	}
	byKey := make(map[string]rowState, len(out))
	for _, r := range out {
		byKey[r.Key] = r
	}
	return byKey, nil
}

// rowColumns are the columns scanRow reads, in order.
const rowColumns = `key, key_values, fingerprint, spec_hash, group_id, run_id, status, pass`

// scanRow reads one row of rowColumns.
func scanRow(rs *sql.Rows) (rowState, error) {
	var r rowState
	err := rs.Scan(&r.Key, &r.KeyValues, &r.Fingerprint, &r.SpecHash, &r.GroupID, &r.RunID,
		&r.Status, &r.Pass)
	return r, err
}

// countByStatus counts the rows in each status, limited to rows read by
// pass when pass > 0.
func (s *stateStore) countByStatus(ctx context.Context, pass int64) (map[string]int64, error) {
	q := `SELECT status, count(*) FROM rows`
	var args []any
	if pass > 0 {
		q += ` WHERE pass = ?`
		args = append(args, pass)
	}
	rs, err := s.db.QueryContext(ctx, q+` GROUP BY status`, args...)
	if err != nil {
		return nil, fmt.Errorf("count rows: %w", err)
	}
	defer rs.Close()
	out := map[string]int64{}
	for rs.Next() {
		var st string
		var n int64
		if err := rs.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("count rows: %w", err)
		}
		out[st] = n
	}
	return out, rs.Err()
}

// submitting returns the rows whose add-runs call was never confirmed.
func (s *stateStore) submitting(ctx context.Context) (map[string]rowState, error) {
	rs, err := s.db.QueryContext(ctx, `SELECT `+rowColumns+` FROM rows WHERE status = ?`,
		stateSubmitting)
	if err != nil {
		return nil, fmt.Errorf("load submitting rows: %w", err)
	}
	defer rs.Close()
	out := map[string]rowState{}
	for rs.Next() {
		r, err := scanRow(rs)
		if err != nil {
			return nil, fmt.Errorf("load submitting rows: %w", err)
		}
		out[r.Key] = r
	}
	return out, rs.Err()
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

// lost returns the rows of pass still waiting for a run of groupID.
func (s *stateStore) lost(ctx context.Context, pass int64, groupID string) ([]rowState, error) {
	rs, err := s.db.QueryContext(ctx, `SELECT `+rowColumns+` FROM rows
		WHERE status = ? AND pass = ? AND group_id = ?`, stateSubmitted, pass, groupID)
	if err != nil {
		return nil, fmt.Errorf("load waiting rows: %w", err)
	}
	defer rs.Close()
	var out []rowState
	for rs.Next() {
		r, err := scanRow(rs)
		if err != nil {
			return nil, fmt.Errorf("load waiting rows: %w", err)
		}
		out = append(out, r)
	}
	return out, rs.Err()
}

// countWaiting counts the rows waiting for runs of groupID.
func (s *stateStore) countWaiting(ctx context.Context, groupID string) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM rows WHERE group_id = ? AND status IN (?, ?)`,
		groupID, stateSubmitted, stateSubmitting).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count rows waiting for group %s: %w", groupID, err)
	}
	return n, nil
}

// settledElsewhere returns the group other than groupID whose runs
// finished the most rows of specHash, and how many.
func (s *stateStore) settledElsewhere(ctx context.Context, groupID, specHash string) (string, int64, error) {
	var group string
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT group_id, count(*) AS n FROM rows
		WHERE group_id NOT IN (?, '') AND spec_hash = ? AND status IN (?, ?, ?, ?)
		GROUP BY group_id ORDER BY n DESC LIMIT 1`, groupID, specHash,
		string(api.StatusCompleted), string(api.StatusFailed), string(api.StatusCancelled),
		StatusInvalidOutput).Scan(&group, &n)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", 0, fmt.Errorf("count rows of other groups: %w", err)
	}
	return group, n, nil
}
