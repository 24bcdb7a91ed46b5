package processors

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
)

func TestCacheKey_CanonicalAndDiscriminating(t *testing.T) {
	t.Parallel()
	base := jsonJob("a", `{"name":"Acme","city":"Oslo"}`, synthSchemas["flat"]).Input
	same := jsonJob("b", "{ \"city\": \"Oslo\",\n \"name\": \"Acme\" }", synthSchemas["flat"]).Input
	same.Metadata = api.Metadata{"row": 7}
	if CacheKey("core", base) != CacheKey("core", same) {
		t.Error("layout or metadata changed the key")
	}
	other := jsonJob("c", `{"name":"Acme","city":"Bergen"}`, synthSchemas["flat"]).Input
	policy := base
	policy.SourcePolicy = &api.SourcePolicy{IncludeDomains: []string{"acme.com"}}
	schema := jsonJob("d", `{"name":"Acme","city":"Oslo"}`, synthSchemas["nested"]).Input
	keys := map[string]string{
		"base": CacheKey("core", base), "processor": CacheKey("base", base),
		"input": CacheKey("core", other), "policy": CacheKey("core", policy),
		"schema": CacheKey("core", schema),
	}
	seen := map[string]string{}
	for what, k := range keys {
		if prev, ok := seen[k]; ok {
			t.Errorf("%s and %s share key %s", what, prev, k)
		}
		seen[k] = what
	}
}

func TestMemoryCache_EvictsLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	c := NewMemoryCache(2)
	out := func(s string) *api.Output { return &api.Output{Type: api.OutputText, Content: json.RawMessage(s)} }
	c.Put("a", out(`"a"`))
	c.Put("b", out(`"b"`))
	c.Get("a")
	c.Put("c", out(`"c"`))
	if _, ok := c.Get("b"); ok {
		t.Error("b survived, though least recently used")
	}
	if o, ok := c.Get("a"); !ok || string(o.Content) != `"a"` {
		t.Errorf("a: %v %v", o, ok)
	}
	if c.Len() != 2 {
		t.Errorf("len %d", c.Len())
	}
}

func TestWithCache_ServesRepeatsFromCache(t *testing.T) {
	t.Parallel()
	s := newSynthetic(t, SyntheticOptions{FailureRate: 0.5})
	p := WithCache("synthetic", s, NewMemoryCache(100))
	jobs := make([]engine.Job, 20)
	for i := range jobs {
		jobs[i] = jsonJob(string(rune('a'+i)), string(rune('0'+i%10)), synthSchemas["flat"])
	}
	first := newRecorder(20)
	p.Execute(context.Background(), jobs, first)
	second := newRecorder(20)
	p.Execute(context.Background(), jobs, second)
	for _, j := range jobs {
		o1, o2 := first.get(t, j.RunID), second.get(t, j.RunID)
		if o1.Err != nil {
			// Failures are not cached: the second attempt ran again.
			if o2.Cached || o2.Err == nil {
				t.Errorf("%s: failure served from cache: %+v", j.RunID, o2)
			}
			continue
		}
		if !o2.Cached || string(o2.Output.Content) != string(o1.Output.Content) {
			t.Errorf("%s: second outcome %+v not the cached first", j.RunID, o2)
		}
	}
}
