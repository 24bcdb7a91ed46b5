package sqlite

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/klauspost/compress/s2"

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

// Outputs are the bulk of a store (a research answer with its basis is
// often kilobytes) and compress well: a synthetic output of 1,761 bytes
// takes 438 with S2, which encodes in about 1 µs and decodes in 0.5 µs.
// A compressed output blob starts with a zero byte, which no JSON text
// does, so blobs written before compression read as they are.
const (
	compressedOutput = 0x00
	// minCompressed is the shortest output worth compressing.
	minCompressed = 256
)

// packOutput is the stored form of an output: S2-compressed behind a zero
// byte when that saves a tenth or more, else the JSON itself.
func packOutput(raw json.RawMessage) any {
	if len(raw) < minCompressed {
		return blob(raw)
	}
	dst := make([]byte, 1+s2.MaxEncodedLen(len(raw)))
	dst[0] = compressedOutput
	enc := s2.Encode(dst[1:], raw)
	if len(enc) > len(raw)*9/10 {
		return []byte(raw)
	}
	return dst[:1+len(enc)]
}

// unpackOutput reverses packOutput. A blob that does not decode is
// returned as it is, so that decoding it as JSON reports the damage.
func unpackOutput(b []byte) json.RawMessage {
	if len(b) == 0 || b[0] != compressedOutput {
		return rawJSON(b)
	}
	out, err := s2.Decode(nil, b[1:])
	if err != nil {
		return json.RawMessage(b)
	}
	return out
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

// runFrom joins a run to its output; runCols reads from it.
const runFrom = `runs r LEFT JOIN run_outputs o ON o.ord = r.ord`

// runCols lists the columns runRow reads, in order.
const runCols = `r.id, r.group_id, r.seq, r.owner, r.processor, r.status, r.input,
	r.spec_hash, r.warnings, r.error, o.output, o.usage, r.cached, r.attempt, r.checkpoint,
	r.created_at, r.modified_at, r.finished_at, r.not_before, r.lease_owner, r.lease_until`

// returningRunCols is runCols for the RETURNING clause of a status change
// of an active run, which has no output yet.
const returningRunCols = `id, group_id, seq, owner, processor, status, input,
	spec_hash, warnings, error, NULL, NULL, cached, attempt, checkpoint,
	created_at, modified_at, finished_at, not_before, lease_owner, lease_until`

// runRow receives the columns of runCols as the driver delivers them,
// which is cheaper than converting each through database/sql. A run left
// out by an outer join reads as all NULL.
type runRow struct {
	vals [21]any
	ptrs [21]any
}

// dest returns the scan destinations in runCols order.
func (r *runRow) dest() []any {
	for i := range r.vals {
		r.ptrs[i] = &r.vals[i]
	}
	return r.ptrs[:]
}

// valid reports whether a run was read (not a NULL row of an outer join).
func (r *runRow) valid() bool { return r.vals[0] != nil }

// run converts the scanned row.
func (r *runRow) run() store.Run {
	v := &r.vals
	return store.Run{
		ID:         text(v[0]),
		GroupID:    text(v[1]),
		Seq:        integer(v[2]),
		Owner:      text(v[3]),
		Processor:  text(v[4]),
		Status:     api.RunStatus(text(v[5])),
		Input:      jsonValue(v[6]),
		SpecHash:   text(v[7]),
		Warnings:   jsonValue(v[8]),
		Error:      jsonValue(v[9]),
		Output:     unpackOutput(jsonValue(v[10])),
		Usage:      jsonValue(v[11]),
		Cached:     integer(v[12]) != 0,
		Attempt:    int(integer(v[13])),
		Checkpoint: jsonValue(v[14]),
		CreatedAt:  fromMicros(integer(v[15])),
		ModifiedAt: fromMicros(integer(v[16])),
		FinishedAt: fromMicros(integer(v[17])),
		NotBefore:  fromMicros(integer(v[18])),
		LeaseOwner: text(v[19]),
		LeaseUntil: fromMicros(integer(v[20])),
	}
}

// text reads a TEXT value scanned into an any.
func text(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	}
	return ""
}

// integer reads an INTEGER value scanned into an any.
func integer(v any) int64 {
	n, _ := v.(int64)
	return n
}

// jsonValue reads a JSON BLOB scanned into an any, nil for NULL.
func jsonValue(v any) json.RawMessage {
	switch x := v.(type) {
	case []byte:
		if len(x) > 0 {
			return x
		}
	case string:
		if x != "" {
			return json.RawMessage(x)
		}
	}
	return nil
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
