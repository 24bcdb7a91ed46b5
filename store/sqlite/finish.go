package sqlite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/taskpipe/taskpipe/store"
)

// finishSet and finishWhere apply one finish if the run is active and, for
// a non-empty node, still leased to it.
const (
	finishSet = `UPDATE runs SET prev_status = status, status = ?1, error = ?2, cached = ?3,
	modified_at = ?4, finished_at = ?4, lease_owner = '', lease_until = 0 `
	finishWhere = `WHERE id = ?5 AND status IN ('queued', 'running', 'cancelling')
	AND (?6 = '' OR lease_owner = ?6)`
)

// FinishRuns records terminal outcomes in one transaction. A finish whose
// run is missing, no longer active or leased to another node is skipped, as
// is a second finish of the same run in fs. Each applied finish clears the
// lease, logs a run state event and queues its webhook, if any; then each
// group touched logs one status event. A zero At means now.
func (s *Store) FinishRuns(ctx context.Context, fs []store.Finish) (store.FinishResult, error) {
	for i := range fs {
		if !fs[i].Status.Terminal() {
			return store.FinishResult{}, fmt.Errorf("finish run %s: status %q is not terminal",
				fs[i].RunID, fs[i].Status)
		}
	}
	if len(fs) == 0 {
		return store.FinishResult{}, nil
	}
	now := time.Now().UTC()
	var res store.FinishResult
	err := s.write(ctx, func(tx *wtx) error {
		res = store.FinishResult{}

		// Apply each finish that still may be, with its output and webhook.
		changes := make([]change, 0, len(fs))
		seen := make(map[string]bool, len(fs))
		for i := range fs {
			f := &fs[i]
			if seen[f.RunID] {
				continue
			}
			seen[f.RunID] = true
			at := f.At
			if at.IsZero() {
				at = now
			}
			c, ok, err := tx.finish(f, at)
			if err != nil {
				return fmt.Errorf("finish run %s: %w", f.RunID, err)
			}
			if !ok {
				continue
			}
			changes = append(changes, c)
			if f.Webhook != nil {
				if err := tx.queueDelivery(*f.Webhook, f.RunID, at); err != nil {
					return err
				}
			}
		}

		// Log the run states and the groups' new status.
		events, err := tx.recordChanges(changes, true)
		if err != nil {
			return err
		}
		res.Events = events
		res.Applied = appliedRuns(changes)
		return nil
	})
	if err != nil {
		return store.FinishResult{}, fmt.Errorf("finish runs: %w", err)
	}
	return res, nil
}

// finish applies one finish and reports the change, or false when it was
// skipped. A run this store claimed is finished without reading its row.
//
// TODO(perf): claim plus finish still costs ~33 µs of CPU per run (one
// UPDATE, one output INSERT and one event INSERT per run, each ~4-9 µs in
// modernc.org/sqlite); the engine target wants the store several times
// under 50 µs for the whole life of a run. Next steps: multi-row INSERTs
// for run_outputs and events, and fewer RETURNING columns in ClaimRuns.
func (tx *wtx) finish(f *store.Finish, at time.Time) (change, bool, error) {
	var c change
	args := []any{string(f.Status), blob(f.Error), f.Cached, micros(at), f.RunID, f.Node}
	if a, ok := tx.s.active.m[f.RunID]; ok {
		// Known run: check the lease here, then let the WHERE clause confirm.
		if f.Node != "" && a.run.LeaseOwner != f.Node {
			return change{}, false, nil
		}
		args[4] = a.ord
		n, err := tx.exec(finishSet+`WHERE ord = ?5 AND status IN ('running', 'cancelling')
			AND (?6 = '' OR lease_owner = ?6)`, args...)
		if err != nil {
			return change{}, false, err
		}
		if n == 0 {
			return change{}, false, nil
		}
		delete(tx.s.active.m, f.RunID)
		c = change{ord: a.ord, run: a.run, prev: a.run.Status}
	} else {
		// Unknown run: read it back from the update.
		rows, err := tx.query(finishSet+finishWhere+` RETURNING ord, prev_status, `+
			returningRunCols, args...)
		if err != nil {
			return change{}, false, err
		}
		applied, err := scanChanges(rows, 1)
		if err != nil || len(applied) == 0 {
			return change{}, false, err
		}
		c = applied[0]
	}

	// Store the output apart and report the run as it is now.
	if len(f.Output) > 0 || len(f.Usage) > 0 {
		if _, err := tx.exec(`INSERT OR REPLACE INTO run_outputs (ord, output, usage)
			VALUES (?, ?, ?)`, c.ord, blob(f.Output), blob(f.Usage)); err != nil {
			return change{}, false, fmt.Errorf("store output: %w", err)
		}
	}
	r := &c.run
	r.Status, r.Error, r.Output, r.Usage, r.Cached = f.Status, f.Error, f.Output, f.Usage, f.Cached
	r.ModifiedAt, r.FinishedAt = fromMicros(micros(at)), fromMicros(micros(at))
	r.LeaseOwner, r.LeaseUntil = "", time.Time{}
	return c, true, nil
}

// appliedRuns lists the runs of changes.
func appliedRuns(changes []change) []store.Run {
	if len(changes) == 0 {
		return nil
	}
	runs := make([]store.Run, len(changes))
	for i := range changes {
		runs[i] = changes[i].run
	}
	return runs
}

// queueDelivery inserts a webhook delivery into the outbox. An empty ID is
// generated, an empty RunID is runID and a zero NextAt is at.
func (tx *wtx) queueDelivery(d store.Delivery, runID string, at time.Time) error {
	if d.ID == "" {
		var b [12]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("make delivery id: %w", err)
		}
		d.ID = "whevent_" + hex.EncodeToString(b[:])
	}
	if d.RunID == "" {
		d.RunID = runID
	}
	if d.NextAt.IsZero() {
		d.NextAt = at
	}
	_, err := tx.exec(`INSERT INTO deliveries (id, run_id, url, payload, attempts, next_at,
		last_error) VALUES (?, ?, ?, ?, ?, ?, ?)`, d.ID, d.RunID, d.URL, blob(d.Payload),
		d.Attempts, micros(d.NextAt), d.LastError)
	if err != nil {
		return fmt.Errorf("queue delivery %s: %w", d.ID, err)
	}
	return nil
}

// RetryRuns puts running runs still leased to their node (any node when
// Node is empty) back to queued with the given NotBefore and last error.
// Others are skipped. Retries change group counters but log no events.
func (s *Store) RetryRuns(ctx context.Context, rs []store.Retry) error {
	if len(rs) == 0 {
		return nil
	}
	now := time.Now().UTC()
	err := s.write(ctx, func(tx *wtx) error {
		changes := make([]change, 0, len(rs))
		for _, r := range rs {
			at := r.At
			if at.IsZero() {
				at = now
			}
			rows, err := tx.query(`UPDATE runs SET prev_status = status, status = 'queued',
				not_before = ?1, error = ?2, modified_at = ?3, lease_owner = '', lease_until = 0
				WHERE id = ?4 AND status = 'running' AND (?5 = '' OR lease_owner = ?5)
				RETURNING ord, prev_status, `+returningRunCols,
				micros(r.NotBefore), blob(r.Error), micros(at), r.RunID, r.Node)
			if err != nil {
				return fmt.Errorf("retry run %s: %w", r.RunID, err)
			}
			applied, err := scanChanges(rows, 1)
			if err != nil {
				return fmt.Errorf("retry run %s: %w", r.RunID, err)
			}
			changes = append(changes, applied...)
		}
		tx.forget(changes)
		_, err := tx.recordChanges(changes, false)
		return err
	})
	if err != nil {
		return fmt.Errorf("retry runs: %w", err)
	}
	return nil
}

// cancelSQL is the status change of CancelRuns; the WHERE clause follows.
const cancelSQL = `UPDATE runs SET prev_status = status,
	status = CASE status WHEN 'queued' THEN 'cancelled' ELSE 'cancelling' END,
	finished_at = CASE status WHEN 'queued' THEN ?1 ELSE finished_at END,
	modified_at = ?1
	WHERE status IN ('queued', 'running') AND `

// CancelRuns cancels the given runs, or every active run of groupID when
// runIDs is empty: queued runs become cancelled (logged as run states),
// running runs cancelling and keep their lease so that their node can
// stop them. With a groupID, runs of other groups are left alone; unknown
// and inactive runs are skipped. An unknown groupID is store.ErrNotFound.
// Each group touched logs one status event.
func (s *Store) CancelRuns(ctx context.Context, groupID string, runIDs []string,
	at time.Time) (store.FinishResult, error) {
	if groupID == "" && len(runIDs) == 0 {
		return store.FinishResult{}, nil
	}
	if at.IsZero() {
		at = time.Now().UTC()
	}
	var res store.FinishResult
	err := s.write(ctx, func(tx *wtx) error {
		res = store.FinishResult{}

		// Change the statuses: the whole group at once, or run by run.
		var changes []change
		if groupID != "" {
			if _, err := tx.updateGroup(groupID, counts{}, 0, 0, time.Time{}); err != nil {
				return err
			}
		}
		if len(runIDs) == 0 {
			rows, err := tx.query(cancelSQL+`group_id = ?2 RETURNING ord, prev_status, `+
				returningRunCols, micros(at), groupID)
			if err != nil {
				return err
			}
			if changes, err = scanChanges(rows, 1024); err != nil {
				return err
			}
		}
		seen := make(map[string]bool, len(runIDs))
		for _, id := range runIDs {
			if seen[id] {
				continue
			}
			seen[id] = true
			rows, err := tx.query(cancelSQL+`id = ?2 AND (?3 = '' OR group_id = ?3)
				RETURNING ord, prev_status, `+returningRunCols, micros(at), id, groupID)
			if err != nil {
				return fmt.Errorf("cancel run %s: %w", id, err)
			}
			applied, err := scanChanges(rows, 1)
			if err != nil {
				return fmt.Errorf("cancel run %s: %w", id, err)
			}
			changes = append(changes, applied...)
		}

		// Log the cancelled runs and the groups' new status.
		tx.forget(changes)
		events, err := tx.recordChanges(changes, true)
		if err != nil {
			return err
		}
		res.Events = events
		res.Applied = appliedRuns(changes)
		return nil
	})
	if err != nil {
		return store.FinishResult{}, fmt.Errorf("cancel runs: %w", err)
	}
	return res, nil
}

// Recover requeues the running runs leased to node (when node is not
// empty) or whose lease expired before now, and cancels the cancelling
// runs among those. Cancelled runs are logged as run states and each group
// touched logs one status event. It returns the number of runs changed.
func (s *Store) Recover(ctx context.Context, node string, now time.Time) (int64, []store.Event, error) {
	var (
		n      int64
		events []store.Event
	)
	err := s.write(ctx, func(tx *wtx) error {
		rows, err := tx.query(`UPDATE runs SET prev_status = status,
			status = CASE status WHEN 'running' THEN 'queued' ELSE 'cancelled' END,
			finished_at = CASE status WHEN 'running' THEN finished_at ELSE ?1 END,
			modified_at = ?1, lease_owner = '', lease_until = 0
			WHERE status IN ('running', 'cancelling')
				AND ((?2 <> '' AND lease_owner = ?2) OR lease_until < ?1)
			RETURNING ord, prev_status, `+returningRunCols, micros(now), node)
		if err != nil {
			return err
		}
		changes, err := scanChanges(rows, 64)
		if err != nil {
			return err
		}
		n = int64(len(changes))
		tx.forget(changes)
		events, err = tx.recordChanges(changes, true)
		return err
	})
	if err != nil {
		return 0, nil, fmt.Errorf("recover runs of node %q: %w", node, err)
	}
	return n, events, nil
}
