package sqlite

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

// micros encodes a time as microseconds since the epoch, 0 for zero.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// fromMicros decodes micros; the result is in UTC.
func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

// blob turns JSON into a column value: NULL when empty.
func blob(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	return []byte(raw)
}

// rawJSON turns a BLOB column back into JSON, nil for NULL.
func rawJSON(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	return json.RawMessage(b)
}

// statusIndex maps a status to its counter column (see counterCols).
func statusIndex(s api.RunStatus) (int, error) {
	for i, v := range api.AllStatuses {
		if v == s {
			return i, nil
		}
	}
	return 0, fmt.Errorf("unknown run status %q", s)
}

// counts is a per-status change of a group's counters, indexed like
// api.AllStatuses.
type counts [7]int64

// move records one run going from status from to status to.
func (c *counts) move(from, to api.RunStatus) error {
	i, err := statusIndex(from)
	if err != nil {
		return err
	}
	j, err := statusIndex(to)
	if err != nil {
		return err
	}
	c[i]--
	c[j]++
	return nil
}

// countsMap returns the non-zero counters as the store reports them.
func countsMap(c counts) map[api.RunStatus]int64 {
	m := make(map[api.RunStatus]int64, 4)
	for i, n := range c {
		if n != 0 {
			m[api.AllStatuses[i]] = n
		}
	}
	return m
}

// runCols lists the columns scanRun reads, in order, for table alias r.
const runCols = `r.id, r.group_id, r.seq, r.owner, r.processor, r.status, r.input,
	r.spec_hash, r.warnings, r.error, r.output, r.usage, r.cached, r.attempt, r.checkpoint,
	r.created_at, r.modified_at, r.finished_at, r.not_before, r.lease_owner, r.lease_until`

// returningRunCols is runCols for RETURNING clauses, which take no alias.
const returningRunCols = `id, group_id, seq, owner, processor, status, input,
	spec_hash, warnings, error, output, usage, cached, attempt, checkpoint,
	created_at, modified_at, finished_at, not_before, lease_owner, lease_until`

// runRow receives the columns of runCols. Every field accepts NULL so that
// an outer join can leave a run out.
type runRow struct {
	id, groupID, owner, processor, status, specHash, leaseOwner  sql.NullString
	seq, cached, attempt, created, modified, finished, notBefore sql.NullInt64
	leaseUntil                                                   sql.NullInt64
	input, warnings, errJSON, output, usage, checkpoint          []byte
}

// dest returns the scan destinations in runCols order.
func (r *runRow) dest() []any {
	return []any{&r.id, &r.groupID, &r.seq, &r.owner, &r.processor, &r.status, &r.input,
		&r.specHash, &r.warnings, &r.errJSON, &r.output, &r.usage, &r.cached, &r.attempt,
		&r.checkpoint, &r.created, &r.modified, &r.finished, &r.notBefore, &r.leaseOwner,
		&r.leaseUntil}
}

// run converts the scanned row.
func (r *runRow) run() store.Run {
	return store.Run{
		ID:         r.id.String,
		GroupID:    r.groupID.String,
		Seq:        r.seq.Int64,
		Owner:      r.owner.String,
		Processor:  r.processor.String,
		Status:     api.RunStatus(r.status.String),
		Input:      rawJSON(r.input),
		SpecHash:   r.specHash.String,
		Warnings:   rawJSON(r.warnings),
		Error:      rawJSON(r.errJSON),
		Output:     rawJSON(r.output),
		Usage:      rawJSON(r.usage),
		Cached:     r.cached.Int64 != 0,
		Attempt:    int(r.attempt.Int64),
		Checkpoint: rawJSON(r.checkpoint),
		CreatedAt:  fromMicros(r.created.Int64),
		ModifiedAt: fromMicros(r.modified.Int64),
		FinishedAt: fromMicros(r.finished.Int64),
		NotBefore:  fromMicros(r.notBefore.Int64),
		LeaseOwner: r.leaseOwner.String,
		LeaseUntil: fromMicros(r.leaseUntil.Int64),
	}
}

// specCache keeps task specs by hash. A hash names its content, so entries
// never go stale; the cache only forgets everything when it grows too big.
// Entries are added after the transaction that stored them commits.
type specCache struct {
	mu  sync.RWMutex
	max int
	m   map[string]json.RawMessage
}

func (c *specCache) init(max int) {
	c.max = max
	c.m = make(map[string]json.RawMessage)
}

func (c *specCache) get(hash string) (json.RawMessage, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	spec, ok := c.m[hash]
	return spec, ok
}

func (c *specCache) put(hash string, spec json.RawMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[hash] = spec
}
