package pipeline

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/specs"
	"github.com/taskpipe/taskpipe/store/sqlite"
)

// PendingOptions say which rows CountPending reads and which state it
// compares them with; the fields mean what they mean in Options.
type PendingOptions struct {
	Source   Source
	Key      []string
	Mapping  map[string]specs.MappingEntry
	TaskSpec api.TaskSpec
	// Target is the target ID (see TargetID) whose task group the state
	// records.
	Target      string
	StateDir    string
	Limit       int64
	RetryFailed bool
}

// PendingRows is how the rows of a source stand against the state store.
type PendingRows struct {
	// Rows is the number of source rows read (up to the limit).
	Rows int64
	// Submit is the number of rows a run would submit, each a new run.
	Submit int64
	// Skipped are rows whose recorded run is reused: completed (and failed
	// ones unless RetryFailed) with the same input and spec, or still
	// running in the target's group.
	Skipped int64
	// Invalid are rows whose input breaks the task's input schema; they
	// are written as invalid_input, never submitted.
	Invalid int64
}

// CountPending reads the source and counts the rows a pipeline run would
// submit, for a cost estimate before the run. It only reads: the state
// store is opened read-only and its lock is not taken, so it works beside
// a run that holds the state, and a missing state dir (no earlier run)
// means every valid row is submitted. Keys repeated in the source are
// counted each time, so Submit is an upper bound.
func CountPending(ctx context.Context, opts PendingOptions) (PendingRows, error) {
	var out PendingRows
	_, m, err := makePlan(ctx, opts.Source, opts.Key, opts.Mapping, opts.TaskSpec)
	if err != nil {
		return out, fmt.Errorf("%w: %w", ErrPlan, err)
	}
	specHash := specs.SpecHash(opts.TaskSpec)
	st, groupID, err := openStateReadOnly(ctx, opts.StateDir, opts.Target)
	if err != nil {
		return out, err
	}
	if st != nil {
		defer st.Close()
	}

	// Map every row and look its key up, a batch at a time.
	err = opts.Source.Read(ctx, DefaultBatchSize, func(b Batch) error {
		rows := b.Rows
		if lim := opts.Limit; lim > 0 {
			if b.Offset >= lim {
				return errLimitReached
			}
			rows = rows[:min(int64(len(rows)), lim-b.Offset)]
		}
		mapped := make([]mappedRow, len(rows))
		keys := make([]string, len(rows))
		for i, row := range rows {
			mapped[i] = m.mapRow(row)
			keys[i] = mapped[i].Key
		}
		states := map[string]rowState{}
		if st != nil {
			if states, err = st.rows(ctx, keys); err != nil {
				return err
			}
		}
		for _, r := range mapped {
			out.Rows++
			prev, seen := states[r.Key]
			switch {
			case r.Invalid != "":
				out.Invalid++
			case seen && prev.Fingerprint == r.Fingerprint && prev.SpecHash == specHash &&
				keepState(prev, groupID, opts.RetryFailed) != rowResubmitted:
				out.Skipped++
			default:
				out.Submit++
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errLimitReached) {
		return out, fmt.Errorf("read source: %w", err)
	}
	return out, nil
}

// openStateReadOnly opens the state store in dir for reading, without its
// lock, and returns the group it records for target. It returns a nil
// store when there is none yet; it creates nothing.
func openStateReadOnly(ctx context.Context, dir, target string) (*stateStore, string, error) {
	path := filepath.Join(dir, "pipeline.db")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil
	} else if err != nil {
		return nil, "", fmt.Errorf("open state: %w", err)
	}
	dsn := (&url.URL{Scheme: "file", OmitHost: true, Path: path, RawQuery: "mode=ro"}).String()
	db := sqlite.OpenDB(dsn, "query_only = 1", "busy_timeout = 10000")
	db.SetMaxOpenConns(1)
	st := &stateStore{db: db, path: path, stmts: map[string]*sql.Stmt{}}
	g, _, err := st.group(ctx, target)
	if err != nil {
		st.Close()
		return nil, "", fmt.Errorf("open state %s: %w", path, err)
	}
	return st, g.GroupID, nil
}
