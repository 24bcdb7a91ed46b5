package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

// groupCols lists the columns scanGroup reads, in order.
const groupCols = `id, owner, metadata, created_at, modified_at, num_runs, last_run_seq,
	last_event_seq, n_queued, n_action_required, n_running, n_completed, n_failed,
	n_cancelling, n_cancelled, cost, max_cost`

// scanGroup reads one row of groupCols.
func scanGroup(row interface{ Scan(...any) error }) (store.Group, error) {
	var (
		g                 store.Group
		meta              []byte
		created, modified int64
		c                 counts
	)
	err := row.Scan(&g.ID, &g.Owner, &meta, &created, &modified, &g.NumRuns, &g.LastRunSeq,
		&g.LastEventSeq, &c[0], &c[1], &c[2], &c[3], &c[4], &c[5], &c[6], &g.Cost, &g.MaxCost)
	if err != nil {
		return store.Group{}, err
	}
	if len(meta) > 0 {
		if err := json.Unmarshal(meta, &g.Metadata); err != nil {
			return store.Group{}, fmt.Errorf("decode metadata of group %s: %w", g.ID, err)
		}
	}
	g.CreatedAt = fromMicros(created)
	g.ModifiedAt = fromMicros(modified)
	g.Counts = countsMap(c)
	return g, nil
}

// CreateGroup stores a new, empty group; its counters start at zero
// whatever g says. A zero ModifiedAt becomes CreatedAt.
func (s *Store) CreateGroup(ctx context.Context, g store.Group) error {
	var meta any
	if g.Metadata != nil {
		b, err := json.Marshal(g.Metadata)
		if err != nil {
			return fmt.Errorf("encode metadata of group %s: %w", g.ID, err)
		}
		meta = b
	}
	if g.ModifiedAt.IsZero() {
		g.ModifiedAt = g.CreatedAt
	}
	err := s.write(ctx, func(tx *wtx) error {
		_, err := tx.exec(`INSERT INTO groups (id, owner, metadata, created_at, modified_at, max_cost)
			VALUES (?, ?, ?, ?, ?, ?)`, g.ID, g.Owner, meta, micros(g.CreatedAt), micros(g.ModifiedAt),
			g.MaxCost)
		return err
	})
	if err != nil {
		return fmt.Errorf("create group %s: %w", g.ID, err)
	}
	return nil
}

// GetGroup returns a group with its counts, or store.ErrNotFound.
func (s *Store) GetGroup(ctx context.Context, id string) (store.Group, error) {
	st, err := s.readStmt(ctx, `SELECT `+groupCols+` FROM groups WHERE id = ?`)
	if err != nil {
		return store.Group{}, fmt.Errorf("get group %s: %w", id, err)
	}
	g, err := scanGroup(st.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Group{}, fmt.Errorf("get group %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Group{}, fmt.Errorf("get group %s: %w", id, err)
	}
	return g, nil
}

// groupExists reports whether a group is stored, reading from the pool.
func (s *Store) groupExists(ctx context.Context, id string) error {
	st, err := s.readStmt(ctx, `SELECT 1 FROM groups WHERE id = ?`)
	if err != nil {
		return err
	}
	var one int
	err = st.QueryRowContext(ctx, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}

// updateGroup applies counter changes to a group, adds added runs to its
// run cursor, reserves events event sequence numbers and moves modified_at
// forward to at. It returns the group afterwards, or store.ErrNotFound.
func (tx *wtx) updateGroup(id string, delta counts, added, events int64,
	at time.Time) (store.Group, error) {
	rows, err := tx.query(`UPDATE groups SET
		n_queued = n_queued + ?, n_action_required = n_action_required + ?,
		n_running = n_running + ?, n_completed = n_completed + ?, n_failed = n_failed + ?,
		n_cancelling = n_cancelling + ?, n_cancelled = n_cancelled + ?,
		num_runs = num_runs + ?, last_run_seq = last_run_seq + ?,
		last_event_seq = last_event_seq + ?, modified_at = max(modified_at, ?)
		WHERE id = ? RETURNING `+groupCols,
		delta[0], delta[1], delta[2], delta[3], delta[4], delta[5], delta[6],
		added, added, events, micros(at), id)
	if err != nil {
		return store.Group{}, fmt.Errorf("update group %s: %w", id, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return store.Group{}, fmt.Errorf("update group %s: %w", id, err)
		}
		return store.Group{}, fmt.Errorf("update group %s: %w", id, store.ErrNotFound)
	}
	g, err := scanGroup(rows)
	if err != nil {
		return store.Group{}, fmt.Errorf("update group %s: %w", id, err)
	}
	if err := rows.Close(); err != nil {
		return store.Group{}, fmt.Errorf("update group %s: %w", id, err)
	}
	return g, nil
}

// addCost adds a batch's cost to a group within its budget, returning the
// group's new cost, or an error wrapping store.ErrBudget.
func (tx *wtx) addCost(id string, cost float64) (float64, error) {
	rows, err := tx.query(`UPDATE groups SET cost = cost + ?1
		WHERE id = ?2 AND (max_cost <= 0 OR cost + ?1 <= max_cost + 1e-9)
		RETURNING cost`, cost, id)
	if err != nil {
		return 0, fmt.Errorf("add cost to group %s: %w", id, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return 0, fmt.Errorf("add cost to group %s: %w", id, err)
		}
		return 0, fmt.Errorf("add $%.4f to group %s: %w", cost, id, store.ErrBudget)
	}
	var total float64
	if err := rows.Scan(&total); err != nil {
		return 0, fmt.Errorf("add cost to group %s: %w", id, err)
	}
	return total, rows.Close()
}

// statusEvent builds the group status event for g at sequence seq.
func statusEvent(g store.Group, seq int64, at time.Time) store.Event {
	return store.Event{
		GroupID: g.ID,
		Seq:     seq,
		Kind:    store.EventGroupStatus,
		Status: &store.GroupSnapshot{
			NumRuns:    g.NumRuns,
			Counts:     g.Counts,
			ModifiedAt: g.ModifiedAt,
		},
		At: at,
	}
}

// appendEvent inserts one group status event into its group's log.
func (tx *wtx) appendEvent(ev store.Event) error {
	return tx.appendEvents([]store.Event{ev}, nil)
}

// eventChunk is how many events one INSERT stores; 7 values each.
const eventChunk = 128

// appendEvents inserts events into their groups' logs, several per
// statement. ords holds the row number of each run state event's run
// (nil when there are none).
func (tx *wtx) appendEvents(events []store.Event, ords []int64) error {
	for first := 0; first < len(events); first += eventChunk {
		chunk := events[first:min(first+eventChunk, len(events))]
		args := make([]any, 0, 7*len(chunk))
		for k, ev := range chunk {
			var status any
			if ev.Status != nil {
				b, err := json.Marshal(ev.Status)
				if err != nil {
					return fmt.Errorf("encode group status: %w", err)
				}
				status = b
			}
			var runID, runOrd any
			if ev.RunID != "" {
				runID = ev.RunID
			}
			if first+k < len(ords) && ords[first+k] != 0 {
				runOrd = ords[first+k]
			}
			args = append(args, ev.GroupID, ev.Seq, string(ev.Kind), runID, runOrd, status,
				micros(ev.At))
		}
		if _, err := tx.exec(eventsSQL(len(chunk)), args...); err != nil {
			return fmt.Errorf("append events %d... of group %s: %w", chunk[0].Seq,
				chunk[0].GroupID, err)
		}
	}
	return nil
}

// eventsSQL returns the statement inserting n events.
func eventsSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO events (group_id, seq, kind, run_id, run_ord, status, at)
	VALUES `)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?, ?, ?)")
	}
	return b.String()
}

// change is one run whose status a transaction changed.
type change struct {
	ord  int64 // the run's position in the runs table
	run  store.Run
	prev api.RunStatus
}

// groupTouch gathers what a transaction did to one group.
type groupTouch struct {
	delta     counts
	runEvents []int // indexes into the changes that reached a terminal status
	at        time.Time
}

// recordChanges follows status changes with the group counters and the
// event log: one run state event per run of a group that became terminal,
// then one group status event per group touched. It returns the events in
// that order. Without logStatus the group status events are left out.
// Runs outside any group change no counters and log nothing.
func (tx *wtx) recordChanges(changes []change, logStatus bool) ([]store.Event, error) {
	// Gather the changes per group, in order of first touch.
	var order []string
	touched := map[string]*groupTouch{}
	for i := range changes {
		c := &changes[i]
		if c.run.GroupID == "" || c.prev == c.run.Status {
			continue
		}
		t := touched[c.run.GroupID]
		if t == nil {
			t = &groupTouch{}
			touched[c.run.GroupID] = t
			order = append(order, c.run.GroupID)
		}
		if err := t.delta.move(c.prev, c.run.Status); err != nil {
			return nil, err
		}
		if c.run.Status.Terminal() {
			t.runEvents = append(t.runEvents, i)
		}
		if c.run.ModifiedAt.After(t.at) {
			t.at = c.run.ModifiedAt
		}
	}

	// Update each group, reserving its event numbers, and build the events.
	runEvents := make([]store.Event, len(changes))
	var statusEvents []store.Event
	for _, id := range order {
		t := touched[id]
		n := int64(len(t.runEvents))
		reserve := n
		if logStatus {
			reserve++
		}
		g, err := tx.updateGroup(id, t.delta, 0, reserve, t.at)
		if err != nil {
			return nil, err
		}
		seq := g.LastEventSeq - reserve + 1
		for _, i := range t.runEvents {
			run := changes[i].run
			runEvents[i] = store.Event{GroupID: id, Seq: seq, Kind: store.EventRunState,
				RunID: run.ID, Run: &run, At: run.ModifiedAt}
			seq++
		}
		if logStatus {
			statusEvents = append(statusEvents, statusEvent(g, seq, t.at))
		}
	}

	// Append them in the order the caller reports them.
	var (
		events []store.Event
		ords   []int64
	)
	for i := range runEvents {
		if runEvents[i].Kind != "" {
			events = append(events, runEvents[i])
			ords = append(ords, changes[i].ord)
		}
	}
	events = append(events, statusEvents...)
	if err := tx.appendEvents(events, ords); err != nil {
		return nil, err
	}
	return events, nil
}
