package processors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/taskpipe/taskpipe/engine"
)

func TestLoad_BuildsBackends(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "processors.yaml")
	err := os.WriteFile(path, []byte(`version: 1
processors:
  synthetic-slow:
    kind: synthetic
    concurrency: 500
    rate_per_minute: 120
    timeout: 45s
    max_attempts: 5
    price_per_run: 0.01
    options:
      latency: {distribution: uniform, min: 1s, max: 2s}
      failure_rate: 0.1
  plain:
    kind: synthetic
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	backends, err := Load(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	slow := backends["synthetic-slow"]
	if slow.Concurrency != 500 || slow.RatePerMinute != 120 || slow.Timeout != 45*time.Second ||
		slow.MaxAttempts != 5 || slow.PricePerRun != 0.01 {
		t.Errorf("synthetic-slow backend %+v", slow)
	}
	s, ok := slow.Processor.(*Synthetic)
	if !ok {
		t.Fatalf("processor is %T", slow.Processor)
	}
	if s.opts.Latency.Max != 2*time.Second || s.opts.FailureRate != 0.1 {
		t.Errorf("options decoded as %+v", s.opts)
	}
	plain := backends["plain"]
	if plain.Concurrency != DefaultConcurrency || plain.Timeout != DefaultTimeout ||
		plain.MaxAttempts != DefaultMaxAttempts || plain.RatePerMinute != 0 {
		t.Errorf("defaults not applied: %+v", plain)
	}
}

func TestParse_ReportsEveryProblemByField(t *testing.T) {
	t.Parallel()
	_, err := Parse([]byte(`version: 2
processors:
  fast:
    kind: synthetic
    concurrency: 0
    timeout: -1s
    max_attempts: 0
    rate_per_minute: -1
    price_per_run: -2
  other:
    kind: telepathy
`), nil)
	want := []string{
		"version: must be 1, not 2",
		"processors.fast.concurrency: must be > 0",
		"processors.fast.timeout: must be > 0",
		"processors.fast.max_attempts: must be > 0",
		"processors.fast.rate_per_minute: must be >= 0",
		"processors.fast.price_per_run: must be >= 0",
		`processors.other.kind: unknown kind "telepathy"`,
	}
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v\ndoes not contain %q", err, w)
		}
	}
}

func TestParse_StrictKeys(t *testing.T) {
	t.Parallel()
	cases := map[string]struct{ file, want string }{
		"top level": {"version: 1\nprocesors: {}\n", "procesors: unknown key (line 2"},
		"entry": {"version: 1\nprocessors:\n  a:\n    kind: synthetic\n    concurency: 3\n",
			"processors.a.concurency: unknown key (line 5"},
		"options": {"version: 1\nprocessors:\n  a:\n    kind: synthetic\n    options:\n" +
			"      latancy: {mean: 1s}\n", "processors.a.options: line 6: field latancy not found"},
		"option value": {"version: 1\nprocessors:\n  a:\n    kind: synthetic\n    options:\n" +
			"      latency: {distribution: fixed, mean: -1s}\n",
			"processors.a.options.latency.mean: must be >= 0"},
		"duration type": {"version: 1\nprocessors:\n  a:\n    kind: synthetic\n    timeout: 30\n",
			"processors.a.timeout: cannot unmarshal !!int `30` into time.Duration (line 5)"},
		"empty":         {"", "processor config is empty"},
		"no processors": {"version: 1\n", "processors: must name at least one processor"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(c.file), nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestDefault_IsZeroLatencySynthetic(t *testing.T) {
	t.Parallel()
	backends := Default(nil)
	if len(backends) != 1 {
		t.Fatalf("default backends %v", backends)
	}
	b := backends["synthetic"]
	if _, ok := b.Processor.(*Synthetic); !ok || b.Concurrency != 20000 || b.PricePerRun != 0 {
		t.Errorf("default synthetic backend %+v", b)
	}
	r := newRecorder(1)
	b.Processor.Execute(context.Background(), []engine.Job{jsonJob("a", `"x"`, synthSchemas["flat"])}, r)
	if o := r.get(t, "a"); o.Output == nil {
		t.Errorf("default synthetic did not complete at once: %+v", o)
	}
}

// closingProcessor counts Close calls.
type closingProcessor struct{ closed *atomic.Int32 }

func (closingProcessor) Execute(context.Context, []engine.Job, engine.Reporter) {}
func (p closingProcessor) Close() error                                         { p.closed.Add(1); return nil }

// registrations numbers the kinds tests register, as a kind can be
// registered once per process.
var registrations atomic.Int32

func TestRegister_CustomKindAndCloseOnError(t *testing.T) {
	t.Parallel()
	var closed atomic.Int32
	kind := fmt.Sprintf("test-closing-%d", registrations.Add(1))
	Register(kind, func(options yaml.Node, _ *slog.Logger) (engine.Processor, error) {
		var o struct {
			Fail bool `yaml:"fail"`
		}
		if err := DecodeOptions(options, &o); err != nil {
			return nil, err
		}
		if o.Fail {
			return nil, errors.Join(errors.New("fail: asked to fail"), errors.New("other: too"))
		}
		return closingProcessor{&closed}, nil
	})
	defer func() {
		if recover() == nil {
			t.Error("registering a kind twice did not panic")
		}
	}()
	_, err := Parse([]byte(fmt.Sprintf(`version: 1
processors:
  a: {kind: %s}
  b: {kind: %[1]s, options: {fail: true}}
`, kind)), nil)
	for _, w := range []string{"processors.b.options.fail: asked to fail", "processors.b.options.other: too"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v, want it to contain %q", err, w)
		}
	}
	if closed.Load() != 1 {
		t.Errorf("built processor closed %d times, want 1", closed.Load())
	}
	Register(kind, nil)
}

func TestParse_CacheMaxAge(t *testing.T) {
	backends, err := Parse([]byte(`version: 1
processors:
  free: {kind: synthetic}
  paid: {kind: http, options: {url: "http://127.0.0.1:9/enrich"}}
  off: {kind: http, cache_max_age: 0s, options: {url: "http://127.0.0.1:9/enrich"}}
  week: {kind: synthetic, cache_max_age: 168h}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeAll(backends, nil) })
	want := map[string]time.Duration{"free": 0, "paid": DefaultCacheMaxAge, "off": 0, "week": 168 * time.Hour}
	for name, age := range want {
		if got := backends[name].CacheMaxAge; got != age {
			t.Errorf("%s: cache_max_age = %s, want %s", name, got, age)
		}
	}
	if _, err := Parse([]byte("version: 1\nprocessors:\n  x: {kind: synthetic, cache_max_age: -1s}\n"), nil); err == nil ||
		!strings.Contains(err.Error(), "processors.x.cache_max_age") {
		t.Fatalf("negative cache_max_age: err = %v, want it named", err)
	}
}
