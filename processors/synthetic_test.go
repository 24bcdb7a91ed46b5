package processors

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
)

// synthSchemas are output schemas covering every keyword the synthetic
// processor plans for.
var synthSchemas = map[string]string{
	"flat": `{"type":"object","properties":{
		"name":{"type":"string"},"employees":{"type":"integer"},
		"revenue":{"type":"number"},"public":{"type":"boolean"}},
		"required":["name","employees","revenue","public"],"additionalProperties":false}`,
	"nested": `{"type":"object","properties":{
		"ceo":{"type":"object","properties":{
			"name":{"type":"string"},"since":{"type":"string","format":"date"}},
			"required":["name","since"],"additionalProperties":false},
		"key_executives":{"type":"array","items":{"type":"object","properties":{
			"name":{"type":"string"},"title":{"type":"string"}},"required":["name","title"]}},
		"tags":{"type":"array","items":{"type":"string"}}},
		"required":["ceo","key_executives","tags"]}`,
	"enum_nullable": `{"type":"object","properties":{
		"sector":{"type":"string","enum":["tech","energy","health"]},
		"rank":{"type":["integer","null"]},
		"note":{"anyOf":[{"type":"string"},{"type":"null"}]},
		"kind":{"const":"company"},
		"website":{"type":"string","format":"uri"},
		"score":{"type":"number","minimum":-1,"maximum":1},
		"code":{"type":"string","maxLength":4}},
		"required":["sector","rank","note","kind","website","score","code"]}`,
	"refs_optional": `{"type":"object","$defs":{"person":{"type":"object",
		"properties":{"name":{"type":"string"}},"required":["name"]}},
		"properties":{"founder":{"$ref":"#/$defs/person"},
		"board":{"type":"array","items":{"$ref":"#/$defs/person"},"minItems":2,"maxItems":2},
		"motto":{"type":"string"},"founded":{"type":"integer","minimum":1800,"maximum":2025}},
		"required":["founder","board"]}`,
}

// compileSchema compiles a JSON schema with format assertions on.
func compileSchema(t testing.TB, schema string) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(schema))
	if err != nil {
		t.Fatalf("parse schema: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("schema.json")
	if err != nil {
		t.Fatalf("compile schema: %v", err)
	}
	return s
}

// newSynthetic makes a synthetic processor or fails the test.
func newSynthetic(t testing.TB, o SyntheticOptions) *Synthetic {
	t.Helper()
	s, err := NewSynthetic(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkSyntheticBasis asserts that out has one low-confidence, uncited,
// synthetic basis entry per top-level field and per top-level list element.
func checkSyntheticBasis(t *testing.T, out *api.Output) {
	t.Helper()
	var content map[string]any
	if err := json.Unmarshal(out.Content, &content); err != nil {
		t.Fatalf("content is not an object: %v", err)
	}
	want := map[string]bool{}
	for k, v := range content {
		want[k] = true
		if list, ok := v.([]any); ok {
			for i := range list {
				want[fmt.Sprintf("%s.%d", k, i)] = true
			}
		}
	}
	got := map[string]bool{}
	for _, b := range out.Basis {
		got[b.Field] = true
		if b.Confidence == nil || *b.Confidence != "low" {
			t.Errorf("basis %s: confidence %v, want low", b.Field, b.Confidence)
		}
		if b.Citations == nil || len(b.Citations) != 0 {
			t.Errorf("basis %s: citations %v, want an empty list", b.Field, b.Citations)
		}
		if !strings.Contains(b.Reasoning, "not research") ||
			!strings.Contains(b.Reasoning, "taskpipe") {
			t.Errorf("basis %s: reasoning %q does not say it is synthetic", b.Field, b.Reasoning)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("basis fields %v, want %v", got, want)
	}
	enc, err := json.Marshal(out.Basis)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(enc, []byte(`"citations":null`)) {
		t.Errorf("basis marshals citations as null: %s", enc)
	}
}

func TestSynthetic_OutputsValidateAgainstSchema(t *testing.T) {
	t.Parallel()
	s := newSynthetic(t, SyntheticOptions{})
	for name, schema := range synthSchemas {
		t.Run(name, func(t *testing.T) {
			compiled := compileSchema(t, schema)
			for i := range 200 {
				input := fmt.Sprintf(`{"company":"Company %d"}`, i)
				out, err := s.Generate(json.RawMessage(input),
					api.Schema{Type: api.SchemaJSON, JSONSchema: json.RawMessage(schema)})
				if err != nil {
					t.Fatal(err)
				}
				if out.Type != api.OutputJSON {
					t.Fatalf("type %q", out.Type)
				}
				v, err := jsonschema.UnmarshalJSON(bytes.NewReader(out.Content))
				if err != nil {
					t.Fatalf("content %s is not JSON: %v", out.Content, err)
				}
				if err := compiled.Validate(v); err != nil {
					t.Fatalf("content %s invalid: %v", out.Content, err)
				}
				checkSyntheticBasis(t, out)
			}
		})
	}
}

func TestSynthetic_Deterministic(t *testing.T) {
	t.Parallel()
	a := newSynthetic(t, SyntheticOptions{})
	b := newSynthetic(t, SyntheticOptions{})
	schema := api.Schema{Type: api.SchemaJSON, JSONSchema: json.RawMessage(synthSchemas["nested"])}
	x1, _ := a.Generate(json.RawMessage(`{"company":"Acme"}`), schema)
	x2, _ := b.Generate(json.RawMessage(`{"company":"Acme"}`), schema)
	y, _ := a.Generate(json.RawMessage(`{"company":"Initech"}`), schema)
	if !bytes.Equal(x1.Content, x2.Content) {
		t.Errorf("same input gave %s and %s", x1.Content, x2.Content)
	}
	if bytes.Equal(x1.Content, y.Content) {
		t.Errorf("different inputs gave the same output %s", y.Content)
	}
}

func TestSynthetic_RequiredAndOptionalFields(t *testing.T) {
	t.Parallel()
	s := newSynthetic(t, SyntheticOptions{})
	schema := api.Schema{Type: api.SchemaJSON,
		JSONSchema: json.RawMessage(synthSchemas["refs_optional"])}
	present := map[string]int{}
	nulls, enumSeen := 0, map[string]bool{}
	for i := range 300 {
		out, err := s.Generate(json.RawMessage(fmt.Sprint(i)), schema)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(out.Content, &m); err != nil {
			t.Fatal(err)
		}
		for k := range m {
			present[k]++
		}
		out, _ = s.Generate(json.RawMessage(fmt.Sprint(i)),
			api.Schema{Type: api.SchemaJSON, JSONSchema: json.RawMessage(synthSchemas["enum_nullable"])})
		if err := json.Unmarshal(out.Content, &m); err != nil {
			t.Fatal(err)
		}
		if m["rank"] == nil {
			nulls++
		}
		enumSeen[m["sector"].(string)] = true
	}
	if present["founder"] != 300 || present["board"] != 300 {
		t.Errorf("required fields present %d and %d times of 300", present["founder"], present["board"])
	}
	for _, k := range []string{"motto", "founded"} {
		if present[k] == 0 || present[k] == 300 {
			t.Errorf("optional field %s present %d times of 300, want sometimes", k, present[k])
		}
	}
	if nulls == 0 || nulls == 300 {
		t.Errorf("nullable rank was null %d times of 300, want sometimes", nulls)
	}
	if len(enumSeen) != 3 {
		t.Errorf("enum values seen %v, want all three", enumSeen)
	}
}

func TestSynthetic_TextAndAuto(t *testing.T) {
	t.Parallel()
	s := newSynthetic(t, SyntheticOptions{})
	desc := "A short profile of the company"
	out, err := s.Generate(json.RawMessage(`"Acme"`), api.Schema{Type: api.SchemaText, Description: &desc})
	if err != nil {
		t.Fatal(err)
	}
	var text string
	if err := json.Unmarshal(out.Content, &text); err != nil {
		t.Fatalf("text content %s is not a JSON string: %v", out.Content, err)
	}
	if out.Type != api.OutputText || !strings.HasPrefix(text, "# Synthetic output") ||
		!strings.Contains(text, desc) || !strings.Contains(text, "not research") {
		t.Errorf("text output %q", text)
	}
	if len(out.Basis) != 1 || out.Basis[0].Field != "output" || *out.Basis[0].Confidence != "low" {
		t.Errorf("text basis %+v", out.Basis)
	}

	auto, err := s.Generate(json.RawMessage(`"Acme"`), api.Schema{Type: api.SchemaAuto})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := jsonschema.UnmarshalJSON(bytes.NewReader(auto.Content))
	if err := compileSchema(t, string(auto.OutputSchema)).Validate(v); err != nil {
		t.Errorf("auto content %s does not match its output_schema: %v", auto.Content, err)
	}
	checkSyntheticBasis(t, auto)
}

func TestSynthetic_InvalidSchema(t *testing.T) {
	t.Parallel()
	s := newSynthetic(t, SyntheticOptions{})
	r := newRecorder(3)
	s.Execute(context.Background(), []engine.Job{
		jsonJob("a", `1`, `{"type":"string"}`),
		jsonJob("b", `1`, `{"type":"object","properties":{"x":{"$ref":"http://elsewhere/x"}}}`),
		jsonJob("c", `1`, `{not json`),
	}, r)
	r.wait(t, 5*time.Second)
	for id, want := range map[string]string{
		"a": "root must be an object", "b": "only local references", "c": "parse output json_schema",
	} {
		o := r.get(t, id)
		if o.Err == nil || !strings.Contains(o.Err.Error(), want) {
			t.Errorf("run %s: error %v, want it to mention %q", id, o.Err, want)
		}
		if ok, _ := engine.IsTransient(o.Err); ok {
			t.Errorf("run %s: schema error marked transient", id)
		}
	}
}

func TestSynthetic_FailureRates(t *testing.T) {
	t.Parallel()
	s := newSynthetic(t, SyntheticOptions{FailureRate: 0.3, TransientFailureRate: 0.2})
	count := func(attempt int) (permanent, transient map[int]bool) {
		permanent, transient = map[int]bool{}, map[int]bool{}
		for i := range 1000 {
			j := jsonJob("r", fmt.Sprint(i), synthSchemas["flat"])
			j.Attempt = attempt
			o := s.Outcome(&j)
			if o.Err == nil {
				continue
			}
			if ok, _ := engine.IsTransient(o.Err); ok {
				transient[i] = true
			} else {
				permanent[i] = true
			}
		}
		return permanent, transient
	}
	p1, t1 := count(1)
	p2, t2 := count(2)
	if len(p1) < 250 || len(p1) > 350 {
		t.Errorf("%d of 1000 failed permanently, want about 300", len(p1))
	}
	if fmt.Sprint(p1) != fmt.Sprint(p2) {
		t.Errorf("permanent failures differ between attempts")
	}
	// Transient failures hit about 20% of the attempts that survive.
	if len(t1) < 90 || len(t1) > 190 {
		t.Errorf("%d of 1000 failed transiently, want about 140", len(t1))
	}
	if fmt.Sprint(t1) == fmt.Sprint(t2) {
		t.Errorf("transient failures are the same on every attempt")
	}
}

func TestSynthetic_LatencyDraws(t *testing.T) {
	t.Parallel()
	cases := []struct {
		l        LatencyOptions
		mean     time.Duration
		min, max time.Duration
	}{
		{LatencyOptions{Distribution: LatencyFixed, Mean: time.Second}, time.Second, time.Second, time.Second},
		{LatencyOptions{Distribution: LatencyUniform, Min: time.Second, Max: 3 * time.Second},
			2 * time.Second, time.Second, 3 * time.Second},
		{LatencyOptions{Distribution: LatencyNormal, Mean: 2 * time.Second, Max: 4 * time.Second},
			2 * time.Second, 0, 4 * time.Second},
		{LatencyOptions{Distribution: LatencyExponential, Mean: time.Second, Max: 20 * time.Second},
			time.Second, 0, 20 * time.Second},
	}
	for _, c := range cases {
		s := newSynthetic(t, SyntheticOptions{Latency: c.l})
		var sum time.Duration
		const n = 20000
		for i := range n {
			j := jsonJob("r", fmt.Sprint(i), "{}")
			d := s.latency(&j)
			if d < c.min || d > c.max {
				t.Fatalf("%s: draw %s outside [%s, %s]", c.l.Distribution, d, c.min, c.max)
			}
			sum += d
		}
		mean := sum / n
		if math.Abs(float64(mean-c.mean)) > 0.05*float64(c.mean) {
			t.Errorf("%s: mean %s, want about %s", c.l.Distribution, mean, c.mean)
		}
	}
}

func TestSynthetic_LatencyCompletesFromTimers(t *testing.T) {
	t.Parallel()
	const n = 2000
	for _, l := range []LatencyOptions{
		{Distribution: LatencyFixed, Mean: 50 * time.Millisecond},
		{Distribution: LatencyUniform, Min: 50 * time.Millisecond, Max: 80 * time.Millisecond},
	} {
		s := newSynthetic(t, SyntheticOptions{Latency: l})
		r := newRecorder(n)
		jobs := make([]engine.Job, n)
		for i := range jobs {
			jobs[i] = jsonJob(fmt.Sprint("run_", i), fmt.Sprint(i), synthSchemas["flat"])
		}
		start := time.Now()
		s.Execute(context.Background(), jobs, r)
		r.mu.Lock()
		early := len(r.outcomes)
		r.mu.Unlock()
		r.wait(t, 30*time.Second)
		if early != 0 {
			t.Errorf("%s: %d runs completed inside Execute", l.Distribution, early)
		}
		if el := time.Since(start); el < 50*time.Millisecond {
			t.Errorf("%s: all runs done after %s, before the minimum latency", l.Distribution, el)
		}
		for i := range n {
			if o := r.get(t, fmt.Sprint("run_", i)); o.Err != nil || o.Output == nil {
				t.Fatalf("run %d: %+v", i, o)
			}
		}
	}
}

func TestSynthetic_CancelledRunsAreAbandoned(t *testing.T) {
	t.Parallel()
	s := newSynthetic(t, SyntheticOptions{Latency: LatencyOptions{
		Distribution: LatencyFixed, Mean: 20 * time.Millisecond}})
	later := newSynthetic(t, SyntheticOptions{Latency: LatencyOptions{
		Distribution: LatencyFixed, Mean: 60 * time.Millisecond}})
	r := newRecorder(1)
	ctx, cancel := context.WithCancel(context.Background())
	s.Execute(ctx, []engine.Job{jsonJob("cancelled", "1", "{}")}, r)
	cancel()
	// The later run's timer fires after the cancelled one's.
	later.Execute(context.Background(), []engine.Job{jsonJob("later", "2", "{}")}, r)
	r.wait(t, 10*time.Second)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.outcomes["cancelled"]; ok {
		t.Error("a cancelled run was completed")
	}
}

func TestSyntheticOptions_Validate(t *testing.T) {
	t.Parallel()
	err := SyntheticOptions{
		Latency:     LatencyOptions{Distribution: "poisson", Mean: -1, Min: 2, Max: 1},
		FailureRate: 2,
	}.Validate()
	for _, want := range []string{
		`latency.distribution: must be fixed, uniform, normal or exponential, not "poisson"`,
		"latency.mean: must be >= 0", "latency.max: must be >= latency.min",
		"failure_rate: must be between 0 and 1",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not contain %q", err, want)
		}
	}
}

// nopReporter discards outcomes, for benchmarks.
type nopReporter struct{}

func (nopReporter) Complete(string, engine.Outcome)                           {}
func (nopReporter) Progress(string, string, string)                           {}
func (nopReporter) Checkpoint(context.Context, string, json.RawMessage) error { return nil }

func BenchmarkSynthetic_Execute(b *testing.B) {
	s := newSynthetic(b, SyntheticOptions{})
	jobs := make([]engine.Job, 1000)
	for i := range jobs {
		jobs[i] = jsonJob(fmt.Sprint("run_", i), fmt.Sprintf(`{"company":"Company %d"}`, i),
			synthSchemas["nested"])
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s.Execute(context.Background(), jobs, nopReporter{})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(jobs)), "ns/run")
}

// BenchmarkSynthetic_SlowRuns runs 10,000 concurrent runs of 2 s each.
func BenchmarkSynthetic_SlowRuns(b *testing.B) {
	s := newSynthetic(b, SyntheticOptions{Latency: LatencyOptions{
		Distribution: LatencyUniform, Min: 1900 * time.Millisecond, Max: 2 * time.Second}})
	jobs := make([]engine.Job, 10000)
	for i := range jobs {
		jobs[i] = jsonJob(fmt.Sprint("run_", i), fmt.Sprint(i), synthSchemas["flat"])
	}
	for b.Loop() {
		r := newRecorder(len(jobs))
		for i := 0; i < len(jobs); i += 100 {
			s.Execute(context.Background(), jobs[i:i+100], r)
		}
		<-r.done
	}
}
