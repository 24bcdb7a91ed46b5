package sqlite

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

// AddRuns stores runs, all or none, in status queued with Attempt 0 and no
// lease, whatever else they say about those, except that a run given as
// running with a LeaseOwner is stored already claimed: Attempt 1, leased
// until its LeaseUntil, which must be set. This store remembers the runs it
// claims that way, so that finishing them reads nothing back. A run's
// GroupID must be empty or groupID. A zero CreatedAt becomes the current
// time, a zero ModifiedAt becomes CreatedAt. Every SpecHash must be in specs
// or already stored.
func (s *Store) AddRuns(ctx context.Context, groupID string, runs []store.Run,
	specs map[string]json.RawMessage) (store.AddResult, error) {
	// Check the batch, settle its times and pick out each run's metadata
	// before taking the write slot.
	now := time.Now().UTC()
	var (
		latest  time.Time
		claimed int64
	)
	metas := make([]json.RawMessage, len(runs))
	for i := range runs {
		r := &runs[i]
		metas[i] = inputMetadata(r.Input)
		if r.ID == "" {
			return store.AddResult{}, fmt.Errorf("add runs: run %d has no id", i)
		}
		if r.GroupID != "" && r.GroupID != groupID {
			return store.AddResult{}, fmt.Errorf("add runs: run %s belongs to group %q, not %q",
				r.ID, r.GroupID, groupID)
		}
		if claimedAtInsert(r) && r.LeaseUntil.IsZero() {
			return store.AddResult{}, fmt.Errorf("add runs: run %s is claimed without a lease end",
				r.ID)
		}
		if claimedAtInsert(r) {
			claimed++
		}
		if r.CreatedAt.After(latest) {
			latest = r.CreatedAt
		}
	}
	if latest.IsZero() {
		latest = now
	}
	if len(runs) == 0 {
		return s.addNothing(ctx, groupID)
	}

	var res store.AddResult
	err := s.write(ctx, func(tx *wtx) error {
		res = store.AddResult{}

		// Advance the group's cursors and counters; this also checks it exists.
		n := int64(len(runs))
		var firstSeq int64
		if groupID != "" {
			var added counts
			added[0], added[2] = n-claimed, claimed
			g, err := tx.updateGroup(groupID, added, n, 1, latest)
			if err != nil {
				return err
			}
			res.Group = g
			res.PrevRunSeq = g.LastRunSeq - n
			res.PrevEventSeq = g.LastEventSeq - 1
			firstSeq = res.PrevRunSeq + 1

			// Charge the batch to the group's budget.
			var cost float64
			for i := range runs {
				cost += runs[i].Cost
			}
			if cost > 0 || g.MaxCost > 0 {
				if res.Group.Cost, err = tx.addCost(groupID, cost); err != nil {
					return err
				}
			}
		}

		// Store new specs and make sure every run's spec is there.
		if err := tx.storeSpecs(runs, specs); err != nil {
			return err
		}

		// Insert the runs in input order, several per statement, numbering
		// their rows here so that claimed ones can be remembered.
		firstOrd, err := tx.nextOrd()
		if err != nil {
			return err
		}
		for i := 0; i < len(runs); i += insertChunk {
			end := min(i+insertChunk, len(runs))
			if err := tx.insertRuns(runs[i:end], metas[i:end], groupID, firstSeq, firstOrd,
				int64(i), now); err != nil {
				return err
			}
		}

		// Log the group's new status.
		if groupID != "" {
			ev := statusEvent(res.Group, res.Group.LastEventSeq, latest)
			if err := tx.appendEvent(ev); err != nil {
				return err
			}
			res.Events = []store.Event{ev}
		}
		return nil
	})
	if err != nil {
		return store.AddResult{}, fmt.Errorf("add runs: %w", err)
	}
	for hash, spec := range specs {
		s.specs.put(hash, spec)
	}
	return res, nil
}

// addNothing answers an empty AddRuns: the group as it is, nothing logged.
func (s *Store) addNothing(ctx context.Context, groupID string) (store.AddResult, error) {
	if groupID == "" {
		return store.AddResult{}, nil
	}
	g, err := s.GetGroup(ctx, groupID)
	if err != nil {
		return store.AddResult{}, fmt.Errorf("add runs: %w", err)
	}
	return store.AddResult{PrevRunSeq: g.LastRunSeq, PrevEventSeq: g.LastEventSeq, Group: g}, nil
}

// storeSpecs inserts the given specs and checks that the other spec hashes
// the runs name are stored already.
func (tx *wtx) storeSpecs(runs []store.Run, specs map[string]json.RawMessage) error {
	for hash, spec := range specs {
		if len(spec) == 0 {
			return fmt.Errorf("task spec %s is empty", hash)
		}
		if _, err := tx.exec(`INSERT INTO task_specs (hash, spec) VALUES (?, ?)
			ON CONFLICT (hash) DO NOTHING`, hash, []byte(spec)); err != nil {
			return fmt.Errorf("store task spec %s: %w", hash, err)
		}
	}
	checked := map[string]bool{}
	for i := range runs {
		hash := runs[i].SpecHash
		if hash == "" || checked[hash] {
			continue
		}
		checked[hash] = true
		if _, ok := specs[hash]; ok {
			continue
		}
		if _, err := tx.spec(hash); err != nil {
			return fmt.Errorf("run %s: %w", runs[i].ID, err)
		}
	}
	return nil
}

// spec returns a stored task spec, from the cache when it can.
func (tx *wtx) spec(hash string) (json.RawMessage, error) {
	if spec, ok := tx.s.specs.get(hash); ok {
		return spec, nil
	}
	rows, err := tx.query(`SELECT spec FROM task_specs WHERE hash = ?`, hash)
	if err != nil {
		return nil, fmt.Errorf("load task spec %s: %w", hash, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("load task spec %s: %w", hash, err)
		}
		return nil, fmt.Errorf("task spec %s is not stored", hash)
	}
	var spec []byte
	if err := rows.Scan(&spec); err != nil {
		return nil, fmt.Errorf("load task spec %s: %w", hash, err)
	}
	return spec, rows.Close()
}

// insertChunk is how many runs one INSERT statement stores; 18 values
// each stay well below SQLite's limit on parameters.
const insertChunk = 64

// insertSQL returns the INSERT statement for n runs.
func insertSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO runs (ord, id, group_id, seq, owner, processor, status, input,
		spec_hash, warnings, checkpoint, created_at, modified_at, not_before, attempt,
		lease_owner, lease_until, metadata, cache_key) VALUES `)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
	}
	return b.String()
}

// inputMetadata returns the metadata object of a run's input JSON, nil
// when it has none (or the input is not a JSON object).
func inputMetadata(input json.RawMessage) json.RawMessage {
	if len(input) == 0 || !bytes.Contains(input, []byte(`"metadata"`)) {
		return nil
	}
	var in struct {
		Metadata json.RawMessage `json:"metadata"`
	}
	if gojson.Unmarshal(input, &in) != nil || len(in.Metadata) == 0 || in.Metadata[0] != '{' {
		return nil
	}
	return in.Metadata
}

// claimedAtInsert reports whether AddRuns stores r already claimed.
func claimedAtInsert(r *store.Run) bool {
	return r.Status == api.StatusRunning && r.LeaseOwner != ""
}

// nextOrd returns the row number the next inserted run gets.
func (tx *wtx) nextOrd() (int64, error) {
	rows, err := tx.query(`SELECT coalesce(max(ord), 0) + 1 FROM runs`)
	if err != nil {
		return 0, fmt.Errorf("read next run number: %w", err)
	}
	defer rows.Close()
	var ord int64
	if !rows.Next() {
		return 0, fmt.Errorf("read next run number: %w", rows.Err())
	}
	if err := rows.Scan(&ord); err != nil {
		return 0, fmt.Errorf("read next run number: %w", err)
	}
	return ord, rows.Close()
}

// insertRuns inserts runs, the first being the first-th run of the batch,
// whose row number is firstOrd. Runs claimed at insert are remembered.
func (tx *wtx) insertRuns(runs []store.Run, metas []json.RawMessage, groupID string,
	firstSeq, firstOrd, first int64, now time.Time) error {
	args := make([]any, 0, 19*len(runs))
	for i := range runs {
		r := &runs[i]
		created := r.CreatedAt
		if created.IsZero() {
			created = now
		}
		modified := r.ModifiedAt
		if modified.IsZero() {
			modified = created
		}
		seq := int64(0)
		if groupID != "" {
			seq = firstSeq + first + int64(i)
		}
		ord := firstOrd + first + int64(i)
		status, attempt, owner, until := api.StatusQueued, 0, "", int64(0)
		if claimedAtInsert(r) {
			status, attempt, owner, until = api.StatusRunning, 1, r.LeaseOwner, micros(r.LeaseUntil)
			tx.s.active.remember(ord, store.Run{ID: r.ID, GroupID: groupID, Seq: seq,
				Owner: r.Owner, Processor: r.Processor, Status: status, Input: rawJSON(r.Input),
				SpecHash: r.SpecHash, Warnings: rawJSON(r.Warnings), Attempt: attempt,
				Checkpoint: rawJSON(r.Checkpoint), CreatedAt: fromMicros(micros(created)),
				ModifiedAt: fromMicros(micros(modified)),
				NotBefore:  fromMicros(micros(r.NotBefore)),
				LeaseOwner: owner, LeaseUntil: fromMicros(until)})
		}
		args = append(args, ord, r.ID, groupID, seq, r.Owner, r.Processor, string(status),
			blob(r.Input), r.SpecHash, blob(r.Warnings), blob(r.Checkpoint), micros(created),
			micros(modified), micros(r.NotBefore), attempt, owner, until, blob(metas[i]), r.CacheKey)
	}
	if _, err := tx.exec(insertSQL(len(runs)), args...); err != nil {
		return fmt.Errorf("insert runs %s...: %w", runs[0].ID, err)
	}
	return nil
}

// QueueDepth counts queued runs by processor.
func (s *Store) QueueDepth(ctx context.Context) (map[string]int64, error) {
	st, err := s.readStmt(ctx, `SELECT processor, count(*) FROM runs WHERE status = 'queued'
		GROUP BY processor`)
	if err != nil {
		return nil, fmt.Errorf("count queued runs: %w", err)
	}
	rows, err := st.QueryContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("count queued runs: %w", err)
	}
	defer rows.Close()
	depth := make(map[string]int64)
	for rows.Next() {
		var p string
		var n int64
		if err := rows.Scan(&p, &n); err != nil {
			return nil, fmt.Errorf("count queued runs: %w", err)
		}
		depth[p] = n
	}
	return depth, rows.Err()
}

// CachedOutput returns the output of the newest run of processor with
// cacheKey that completed at or after since.
func (s *Store) CachedOutput(ctx context.Context, processor, cacheKey string,
	since time.Time) (json.RawMessage, bool, error) {
	if cacheKey == "" {
		return nil, false, nil
	}
	st, err := s.readStmt(ctx, `SELECT o.output FROM runs r JOIN run_outputs o ON o.ord = r.ord
		WHERE r.processor = ?1 AND r.cache_key = ?2 AND r.cache_key <> ''
			AND r.status = 'completed' AND r.finished_at >= ?3
		ORDER BY r.finished_at DESC LIMIT 1`)
	if err != nil {
		return nil, false, fmt.Errorf("read cached output: %w", err)
	}
	var out []byte
	err = st.QueryRowContext(ctx, processor, cacheKey, micros(since)).Scan(&out)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && len(out) == 0) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read cached output: %w", err)
	}
	return unpackOutput(out), true, nil
}

// GetRun returns a run with its spec, or store.ErrNotFound.
func (s *Store) GetRun(ctx context.Context, id string) (store.Run, error) {
	st, err := s.readStmt(ctx, `SELECT `+runCols+`, s.spec FROM `+runFrom+`
		LEFT JOIN task_specs s ON s.hash = r.spec_hash WHERE r.id = ?`)
	if err != nil {
		return store.Run{}, fmt.Errorf("get run %s: %w", id, err)
	}
	var (
		row  runRow
		spec []byte
	)
	err = st.QueryRowContext(ctx, id).Scan(append(row.dest(), &spec)...)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Run{}, fmt.Errorf("get run %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Run{}, fmt.Errorf("get run %s: %w", id, err)
	}
	r := row.run()
	r.Spec = rawJSON(spec)
	return r, nil
}

// ListRuns returns up to limit runs of a group after afterSeq in Seq order,
// only those in status unless it is empty, without their specs. It returns
// store.ErrNotFound for an unknown group.
func (s *Store) ListRuns(ctx context.Context, groupID string, afterSeq int64,
	status api.RunStatus, limit int) ([]store.Run, error) {
	if err := s.groupExists(ctx, groupID); err != nil {
		return nil, fmt.Errorf("list runs of group %s: %w", groupID, err)
	}
	if limit <= 0 {
		return nil, nil
	}
	var (
		st  *sql.Stmt
		err error
	)
	if status == "" {
		st, err = s.readStmt(ctx, `SELECT `+runCols+` FROM `+runFrom+`
			WHERE r.group_id = ?1 AND r.group_id <> '' AND r.seq > ?2 AND ?3 = '' ORDER BY r.seq LIMIT ?4`)
	} else {
		st, err = s.readStmt(ctx, `SELECT `+runCols+` FROM `+runFrom+`
			WHERE r.group_id = ?1 AND r.group_id <> '' AND r.seq > ?2 AND r.status = ?3 ORDER BY r.seq LIMIT ?4`)
	}
	if err != nil {
		return nil, fmt.Errorf("list runs of group %s: %w", groupID, err)
	}
	rows, err := st.QueryContext(ctx, groupID, afterSeq, string(status), limit)
	if err != nil {
		return nil, fmt.Errorf("list runs of group %s: %w", groupID, err)
	}
	defer rows.Close()
	runs := make([]store.Run, 0, min(limit, 1024))
	for rows.Next() {
		var row runRow
		if err := rows.Scan(row.dest()...); err != nil {
			return nil, fmt.Errorf("list runs of group %s: %w", groupID, err)
		}
		runs = append(runs, row.run())
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list runs of group %s: %w", groupID, err)
	}
	return runs, nil
}

// ClaimRuns leases up to c.Limit queued runs of c.Processor whose NotBefore
// is not after c.Now to c.Node, oldest first, and returns them with their
// specs. Claims change group counters but log no events.
func (s *Store) ClaimRuns(ctx context.Context, c store.Claim) ([]store.Run, error) {
	if c.Limit <= 0 {
		return nil, nil
	}
	var claimed []store.Run
	err := s.write(ctx, func(tx *wtx) error {
		// Take the oldest eligible runs in one statement, reading back only
		// the columns a claim does not set.
		rows, err := tx.query(`UPDATE runs SET prev_status = status, status = 'running',
			attempt = attempt + 1, lease_owner = ?1, lease_until = ?2, modified_at = ?3
			WHERE ord IN (SELECT ord FROM runs WHERE status = 'queued' AND processor = ?4
				AND not_before <= ?3 ORDER BY ord LIMIT ?5)
			RETURNING ord, id, group_id, seq, owner, input, spec_hash, warnings, error, attempt,
				checkpoint, created_at, not_before, cached`,
			c.Node, micros(c.LeaseUntil), micros(c.Now), c.Processor, c.Limit)
		if err != nil {
			return err
		}
		changes, err := scanClaimed(rows, c)
		if err != nil {
			return err
		}

		// Follow with the counters, then attach the specs.
		if _, err := tx.recordChanges(changes, false); err != nil {
			return err
		}
		claimed = make([]store.Run, len(changes))
		for i := range changes {
			tx.s.active.remember(changes[i].ord, changes[i].run)
			claimed[i] = changes[i].run
			if claimed[i].SpecHash == "" {
				continue
			}
			if claimed[i].Spec, err = tx.spec(claimed[i].SpecHash); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim runs of %s: %w", c.Processor, err)
	}
	for i := range claimed {
		if claimed[i].Spec != nil {
			s.specs.put(claimed[i].SpecHash, claimed[i].Spec)
		}
	}
	return claimed, nil
}

// scanClaimed reads the rows of ClaimRuns' UPDATE ... RETURNING and
// returns them in ord order, filling in what the claim set.
func scanClaimed(rows *sql.Rows, c store.Claim) ([]change, error) {
	defer rows.Close()
	changes := make([]change, 0, min(c.Limit, 1024))
	var v [14]any
	dest := make([]any, len(v))
	for i := range v {
		dest[i] = &v[i]
	}
	modified, until := fromMicros(micros(c.Now)), fromMicros(micros(c.LeaseUntil))
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		changes = append(changes, change{ord: integer(v[0]), prev: api.StatusQueued,
			run: store.Run{
				ID: text(v[1]), GroupID: text(v[2]), Seq: integer(v[3]), Owner: text(v[4]),
				Processor: c.Processor, Status: api.StatusRunning, Input: jsonValue(v[5]),
				SpecHash: text(v[6]), Warnings: jsonValue(v[7]), Error: jsonValue(v[8]),
				Attempt: int(integer(v[9])), Checkpoint: jsonValue(v[10]),
				CreatedAt: fromMicros(integer(v[11])), ModifiedAt: modified,
				NotBefore: fromMicros(integer(v[12])), Cached: integer(v[13]) != 0,
				LeaseOwner: c.Node, LeaseUntil: until,
			}})
	}
	return closeChanges(rows, changes)
}

// scanChanges reads the rows of an UPDATE ... RETURNING ord, prev_status,
// returningRunCols and returns them in ord order, the order runs were added.
func scanChanges(rows *sql.Rows, capHint int) ([]change, error) {
	defer rows.Close()
	changes := make([]change, 0, min(capHint, 1024))
	var (
		row  runRow
		prev string
	)
	dest := append([]any{nil, &prev}, row.dest()...)
	for rows.Next() {
		var c change
		dest[0] = &c.ord
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		c.run = row.run()
		c.prev = api.RunStatus(prev)
		changes = append(changes, c)
	}
	return closeChanges(rows, changes)
}

// closeChanges ends the read of rows and returns the changes read in ord
// order, the order runs were added.
func closeChanges(rows *sql.Rows, changes []change) ([]change, error) {
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	slices.SortFunc(changes, func(a, b change) int { return cmp.Compare(a.ord, b.ord) })
	return changes, nil
}

// ExtendLeases moves the lease of the runs still active and held by node to
// until; others are left alone.
func (s *Store) ExtendLeases(ctx context.Context, node string, runIDs []string, until time.Time) error {
	if len(runIDs) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *wtx) error {
		for _, id := range runIDs {
			n, err := tx.exec(`UPDATE runs SET lease_until = ? WHERE id = ? AND lease_owner = ?
				AND status IN ('running', 'cancelling')`, micros(until), id, node)
			if err != nil {
				return err
			}
			if a, ok := tx.s.active.m[id]; ok && n == 1 {
				a.run.LeaseUntil = fromMicros(micros(until))
				tx.s.active.m[id] = a
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("extend leases of %s: %w", node, err)
	}
	return nil
}

// SaveCheckpoint stores processor state for a run (nil clears it), or
// returns store.ErrNotFound.
func (s *Store) SaveCheckpoint(ctx context.Context, runID string, state json.RawMessage) error {
	err := s.write(ctx, func(tx *wtx) error {
		n, err := tx.exec(`UPDATE runs SET checkpoint = ? WHERE id = ?`, blob(state), runID)
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrNotFound
		}
		if a, ok := tx.s.active.m[runID]; ok {
			a.run.Checkpoint = rawJSON(state)
			tx.s.active.m[runID] = a
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("save checkpoint of run %s: %w", runID, err)
	}
	return nil
}
