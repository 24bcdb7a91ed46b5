package sqlite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/taskpipe/taskpipe/store"
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

		// Settle each finish's time and drop repeats.
		pending := make([]pendingFinish, 0, len(fs))
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
			pending = append(pending, pendingFinish{f: f, at: micros(at)})
		}

		// Apply them: remembered runs together, the others one by one.
		if err := tx.finishRemembered(pending); err != nil {
			return err
		}
		for i := range pending {
			if pending[i].done {
				continue
			}
			if err := tx.finishOne(&pending[i]); err != nil {
				return fmt.Errorf("finish run %s: %w", pending[i].f.RunID, err)
			}
		}

		// Store the outputs and webhooks of the applied ones.
		changes := make([]change, 0, len(pending))
		for i := range pending {
			if pending[i].applied {
				changes = append(changes, pending[i].change)
			}
		}
		if err := tx.storeOutputs(pending); err != nil {
			return err
		}
		for i := range pending {
			p := &pending[i]
			if p.applied && p.f.Webhook != nil {
				if err := tx.queueDelivery(*p.f.Webhook, p.f.RunID, fromMicros(p.at)); err != nil {
					return err
				}
			}
		}

		// Log the run states and the groups' new status.
		var err error
		res, err = tx.finishResult(changes)
		return err
	})
	if err != nil {
		return store.FinishResult{}, fmt.Errorf("finish runs: %w", err)
	}
	return res, nil
}

// pendingFinish is one finish of a FinishRuns call on its way.
type pendingFinish struct {
	f       *store.Finish
	at      int64 // micros
	done    bool  // decided: applied or skipped
	applied bool
	change  change
}

// apply records that p was applied to the run c describes, as it was
// before, and makes c.run what it is now.
func (p *pendingFinish) apply(c change) {
	f := p.f
	r := &c.run
	r.Status, r.Error, r.Output, r.Usage, r.Cached = f.Status, rawJSON(f.Error), rawJSON(f.Output),
		rawJSON(f.Usage), f.Cached
	r.ModifiedAt, r.FinishedAt = fromMicros(p.at), fromMicros(p.at)
	r.LeaseOwner, r.LeaseUntil = "", time.Time{}
	p.done, p.applied, p.change = true, true, c
}

// finishChunk is how many remembered runs one UPDATE finishes; 6 values
// each. One UPDATE ... FROM (VALUES ...) per chunk measured ~7% cheaper
// than a prepared single-row UPDATE per run.
//
// TODO(perf): finishing a remembered run still costs ~5 µs in this UPDATE
// (row rewrite, runs_leased and runs_claim maintenance) plus ~3 µs for its
// event and ~2 µs for its output row; adding one costs ~7 µs with ordered
// run ids and ~7 µs more with the engine's random ones, whose UNIQUE index
// dirties most of its leaf pages on every batch (more WAL to write and
// checkpoint). Time-ordered run ids would remove the latter.
const finishChunk = 128

// finishRemembered applies, without reading their rows, the finishes of
// runs this store claimed and still remembers, several per statement.
// Finishes whose node does not hold the remembered lease are skipped. The
// database stays the authority: should a statement change fewer rows than
// expected, it is undone and its finishes are left to finishOne.
func (tx *wtx) finishRemembered(pending []pendingFinish) error {
	// Pick the remembered runs, skipping finishes by the wrong node.
	batch := make([]int, 0, len(pending))
	for i := range pending {
		p := &pending[i]
		a, ok := tx.s.active.m[p.f.RunID]
		if !ok {
			continue
		}
		if p.f.Node != "" && a.run.LeaseOwner != p.f.Node {
			p.done = true
			continue
		}
		batch = append(batch, i)
	}

	// Update them a chunk at a time, inside a savepoint.
	for len(batch) > 0 {
		chunk := batch[:min(finishChunk, len(batch))]
		batch = batch[len(chunk):]
		args := make([]any, 0, 6*len(chunk))
		for _, i := range chunk {
			p := &pending[i]
			args = append(args, tx.s.active.m[p.f.RunID].ord, string(p.f.Status), blob(p.f.Error),
				p.f.Cached, p.at, p.f.Node)
		}
		if _, err := tx.exec(`SAVEPOINT finish`); err != nil {
			return err
		}
		n, err := tx.exec(finishBatchSQL(len(chunk)), args...)
		if err != nil {
			return err
		}
		if n != int64(len(chunk)) {
			if _, err := tx.exec(`ROLLBACK TO finish`); err != nil {
				return err
			}
			for _, i := range chunk {
				delete(tx.s.active.m, pending[i].f.RunID)
			}
		} else {
			for _, i := range chunk {
				p := &pending[i]
				a := tx.s.active.m[p.f.RunID]
				delete(tx.s.active.m, p.f.RunID)
				p.apply(change{ord: a.ord, run: a.run, prev: a.run.Status})
			}
		}
		if _, err := tx.exec(`RELEASE finish`); err != nil {
			return err
		}
	}
	return nil
}

// finishBatchSQL returns the UPDATE finishing n remembered runs, each given
// as (ord, status, error, cached, at, node).
func finishBatchSQL(n int) string {
	var b strings.Builder
	b.WriteString(`UPDATE runs SET prev_status = status, status = v.column2, error = v.column3,
	cached = v.column4, modified_at = v.column5, finished_at = v.column5, lease_owner = '',
	lease_until = 0 FROM (VALUES `)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?, ?)")
	}
	b.WriteString(`) AS v WHERE runs.ord = v.column1 AND runs.status IN ('running', 'cancelling')
	AND (v.column6 = '' OR runs.lease_owner = v.column6)`)
	return b.String()
}

// finishOne applies one finish of a run this store does not remember,
// reading the run back from the update.
func (tx *wtx) finishOne(p *pendingFinish) error {
	f := p.f
	p.done = true
	rows, err := tx.query(`UPDATE runs SET prev_status = status, status = ?1, error = ?2,
		cached = ?3, modified_at = ?4, finished_at = ?4, lease_owner = '', lease_until = 0
		WHERE id = ?5 AND status IN ('queued', 'running', 'cancelling')
		AND (?6 = '' OR lease_owner = ?6) RETURNING ord, prev_status, `+returningRunCols,
		string(f.Status), blob(f.Error), f.Cached, p.at, f.RunID, f.Node)
	if err != nil {
		return err
	}
	applied, err := scanChanges(rows, 1)
	if err != nil || len(applied) == 0 {
		return err
	}
	p.apply(applied[0])
	return nil
}

// storeOutputs stores the outputs of the applied finishes, apart from their
// runs, several per statement.
func (tx *wtx) storeOutputs(pending []pendingFinish) error {
	args := make([]any, 0, 3*insertChunk)
	flush := func() error {
		if len(args) == 0 {
			return nil
		}
		_, err := tx.exec(outputsSQL(len(args)/3), args...)
		args = args[:0]
		if err != nil {
			return fmt.Errorf("store outputs: %w", err)
		}
		return nil
	}
	for i := range pending {
		p := &pending[i]
		if !p.applied || (len(p.f.Output) == 0 && len(p.f.Usage) == 0) {
			continue
		}
		args = append(args, p.change.ord, packOutput(p.f.Output), blob(p.f.Usage))
		if len(args) == 3*insertChunk {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// outputsSQL returns the statement storing n outputs.
func outputsSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT OR REPLACE INTO run_outputs (ord, output, usage) VALUES `)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?)")
	}
	return b.String()
}

// finishResult logs the run states of changes and their groups' new status,
// and reports them.
func (tx *wtx) finishResult(changes []change) (store.FinishResult, error) {
	events, err := tx.recordChanges(changes, true)
	if err != nil {
		return store.FinishResult{}, err
	}
	return store.FinishResult{Events: events, Applied: appliedRuns(changes)}, nil
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
		var err error
		res, err = tx.finishResult(changes)
		return err
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
