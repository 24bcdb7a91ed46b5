package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/taskpipe/taskpipe/api"
)

// resultCacheKey identifies what a run asks for: the processor, the task
// spec (by hash), the input and the source policy. Metadata, webhooks and
// other settings that do not change the answer are left out. The input is
// hashed without insignificant spaces; inputs that differ in key order are
// different requests to the cache.
func resultCacheKey(in api.TaskRunInput, specHash string) string {
	var input bytes.Buffer
	if json.Compact(&input, in.Input) != nil {
		input.Reset()
		input.Write(in.Input)
	}
	h := sha256.New()
	for _, part := range [][]byte{[]byte(in.Processor), []byte(specHash), input.Bytes()} {
		h.Write(part)
		h.Write([]byte{0})
	}
	if in.SourcePolicy != nil {
		b, _ := json.Marshal(in.SourcePolicy)
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fromCache completes the jobs whose result an identical run produced
// within the backend's cache age and returns the others.
func (d *dispatcher) fromCache(ctx context.Context, jobs []Job) []Job {
	age := d.backend.CacheMaxAge
	if age <= 0 {
		return jobs
	}
	since := d.e.now().Add(-age)
	misses := jobs[:0]
	for _, j := range jobs {
		key := resultCacheKey(j.Input, j.SpecHash)
		raw, ok, err := d.e.store.CachedOutput(ctx, d.name, key, since)
		if err != nil {
			d.e.log.Warn("read result cache", "processor", d.name, "error", err)
		}
		var out api.Output
		if ok && json.Unmarshal(raw, &out) == nil {
			d.e.recorder.complete(d, j.RunID, Outcome{Output: &out, Cached: true})
			continue
		}
		misses = append(misses, j)
	}
	return misses
}
