package processors

import (
	"container/list"
	"context"
	"encoding/hex"
	"encoding/json"
	"sync"

	"github.com/zeebo/xxh3"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
)

// CacheKey identifies what a run asks for: the processor, the input, the
// output schema and the source policy. JSON is put in canonical form first
// (keys sorted, no spaces), so that inputs differing only in layout share
// a key. Metadata, webhooks and other settings that do not change the
// answer are left out.
func CacheKey(processor string, in api.TaskRunInput) string {
	h := xxh3.New()
	write := func(b []byte) {
		_, _ = h.Write(b)
		_, _ = h.Write([]byte{0})
	}
	write([]byte(processor))
	write(canonicalJSON(in.Input))
	if in.TaskSpec != nil {
		write(canonicalJSON(mustJSON(in.TaskSpec.OutputSchema)))
	}
	if in.SourcePolicy != nil {
		write(mustJSON(in.SourcePolicy))
	}
	sum := h.Sum128().Bytes()
	return hex.EncodeToString(sum[:])
}

// canonicalJSON re-encodes JSON with sorted keys; invalid JSON is returned
// as it is.
func canonicalJSON(b json.RawMessage) []byte {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return b
	}
	return mustJSON(v)
}

// Cache stores completed outputs by CacheKey. Implementations are safe for
// concurrent use.
type Cache interface {
	Get(key string) (*api.Output, bool)
	Put(key string, out *api.Output)
}

// MemoryCache is a Cache in memory that keeps the most recently used
// outputs.
type MemoryCache struct {
	mu    sync.Mutex
	max   int
	order *list.List // front: most recent; values are *memoryEntry
	byKey map[string]*list.Element
}

// memoryEntry is one cached output.
type memoryEntry struct {
	key string
	out *api.Output
}

// NewMemoryCache makes a cache of at most size outputs (at least 1).
func NewMemoryCache(size int) *MemoryCache {
	return &MemoryCache{max: max(1, size), order: list.New(), byKey: map[string]*list.Element{}}
}

// Get returns the output cached under key.
func (c *MemoryCache) Get(key string) (*api.Output, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[key]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*memoryEntry).out, true
}

// Put caches out under key, evicting the least recently used output when
// full.
func (c *MemoryCache) Put(key string, out *api.Output) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok {
		e.Value.(*memoryEntry).out = out
		c.order.MoveToFront(e)
		return
	}
	c.byKey[key] = c.order.PushFront(&memoryEntry{key: key, out: out})
	if c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.byKey, last.Value.(*memoryEntry).key)
	}
}

// Len is the number of cached outputs.
func (c *MemoryCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// CachedProcessor serves runs from a Cache and hands the misses to the
// processor it wraps, caching their outputs. Hits complete at once with
// Outcome.Cached set. Closing it closes the wrapped processor.
type CachedProcessor struct {
	name  string
	inner engine.Processor
	cache Cache
}

var (
	_ engine.Processor = (*CachedProcessor)(nil)
	_ engine.Closer    = (*CachedProcessor)(nil)
)

// WithCache wraps p, named name in the processor file, with a result cache.
func WithCache(name string, p engine.Processor, c Cache) *CachedProcessor {
	return &CachedProcessor{name: name, inner: p, cache: c}
}

// Execute completes cached runs and passes the others on.
func (c *CachedProcessor) Execute(ctx context.Context, jobs []engine.Job, r engine.Reporter) {
	misses := make([]engine.Job, 0, len(jobs))
	keys := make(map[string]string, len(jobs))
	for _, j := range jobs {
		key := CacheKey(c.name, j.Input)
		if out, ok := c.cache.Get(key); ok {
			r.Complete(j.RunID, engine.Outcome{Output: out, Cached: true})
			continue
		}
		keys[j.RunID] = key
		misses = append(misses, j)
	}
	if len(misses) > 0 {
		c.inner.Execute(ctx, misses, &cachingReporter{Reporter: r, cache: c.cache, keys: keys})
	}
}

// Close closes the wrapped processor when it holds resources.
func (c *CachedProcessor) Close() error {
	if cl, ok := c.inner.(engine.Closer); ok {
		return cl.Close()
	}
	return nil
}

// cachingReporter stores successful outputs on their way to the engine.
type cachingReporter struct {
	engine.Reporter
	cache Cache
	keys  map[string]string // run id -> cache key; read only
}

// Complete implements engine.Reporter.
func (r *cachingReporter) Complete(runID string, o engine.Outcome) {
	if o.Err == nil && o.Output != nil {
		if key, ok := r.keys[runID]; ok {
			r.cache.Put(key, o.Output)
		}
	}
	r.Reporter.Complete(runID, o)
}
