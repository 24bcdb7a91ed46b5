package processors

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
)

// enrichRequest is what the test service receives.
type enrichRequest struct {
	Calls []struct {
		RunID        string          `json:"run_id"`
		Input        json.RawMessage `json:"input"`
		OutputSchema api.Schema      `json:"output_schema"`
	} `json:"calls"`
}

// enrichService is a real HTTP enrichment service on 127.0.0.1: it answers
// each call with the length of the input's "name" as a field, fails inputs
// whose name is "bad", and can be told to fail whole requests first.
type enrichService struct {
	srv      *httptest.Server
	requests atomic.Int32
	mu       sync.Mutex
	batches  []int
	headers  http.Header
	// failFirst answers this many requests with failStatus first.
	failFirst  int32
	failStatus int
	retryAfter string
	// replies overrides the reply body when set.
	replies string
}

func newEnrichService(t *testing.T) *enrichService {
	s := &enrichService{}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *enrichService) serve(w http.ResponseWriter, r *http.Request) {
	n := s.requests.Add(1)
	if n <= s.failFirst {
		if s.retryAfter != "" {
			w.Header().Set("Retry-After", s.retryAfter)
		}
		http.Error(w, "try later", s.failStatus)
		return
	}
	var req enrichRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || r.Method != http.MethodPost {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.batches = append(s.batches, len(req.Calls))
	s.headers = r.Header.Clone()
	s.mu.Unlock()
	if s.replies != "" {
		fmt.Fprint(w, s.replies)
		return
	}
	replies := make([]map[string]any, len(req.Calls))
	for i, c := range req.Calls {
		var in struct{ Name string }
		_ = json.Unmarshal(c.Input, &in)
		switch {
		case in.Name == "bad":
			replies[i] = map[string]any{"error": "no such company"}
		case c.OutputSchema.Type == api.SchemaText:
			replies[i] = map[string]any{"output": "report on " + in.Name}
		default:
			replies[i] = map[string]any{"output": map[string]any{
				"run": c.RunID, "name_length": len(in.Name), "letters": strings.Split(in.Name, ""),
			}}
		}
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"replies": replies})
}

// newTestHTTP makes an http processor for the service.
func newTestHTTP(t *testing.T, o HTTPOptions) *HTTP {
	t.Helper()
	h, err := NewHTTP(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func ptr[T any](v T) *T { return &v }

func TestHTTP_BatchesAndOutputs(t *testing.T) {
	t.Parallel()
	svc := newEnrichService(t)
	h := newTestHTTP(t, HTTPOptions{URL: svc.srv.URL + "/enrich?token=secret", BatchSize: 3})
	names := []string{"Acme", "Initech", "bad", "Hooli", "Umbrella", "Wonka", "Stark"}
	jobs := make([]engine.Job, len(names))
	for i, n := range names {
		jobs[i] = jsonJob(fmt.Sprint("run_", i), fmt.Sprintf(`{"name":%q}`, n), `{"type":"object"}`)
	}
	text := "a profile"
	jobs[6].Input.TaskSpec = &api.TaskSpec{OutputSchema: api.Schema{Type: api.SchemaText, Description: &text}}
	r := newRecorder(len(jobs))
	h.Execute(context.Background(), jobs, r)
	r.wait(t, 10*time.Second)

	svc.mu.Lock()
	total := 0
	for _, b := range svc.batches {
		if b > 3 {
			t.Errorf("batch of %d calls, want at most 3", b)
		}
		total += b
	}
	svc.mu.Unlock()
	if len(svc.batches) != 3 || total != 7 {
		t.Errorf("batches %v, want 3 batches of 7 calls", svc.batches)
	}

	acme := r.get(t, "run_0")
	if acme.Err != nil {
		t.Fatal(acme.Err)
	}
	var content struct {
		Run        string   `json:"run"`
		NameLength int      `json:"name_length"`
		Letters    []string `json:"letters"`
	}
	if err := json.Unmarshal(acme.Output.Content, &content); err != nil {
		t.Fatal(err)
	}
	if content.Run != "run_0" || content.NameLength != 4 {
		t.Errorf("content %s", acme.Output.Content)
	}
	fields := []string{}
	for _, b := range acme.Output.Basis {
		fields = append(fields, b.Field)
		want := "returned by " + svc.srv.URL + "/enrich"
		if b.Reasoning != want || b.Confidence != nil || b.Citations == nil {
			t.Errorf("basis %+v, want reasoning %q, no confidence", b, want)
		}
	}
	if got := strings.Join(fields, ","); got != "letters,letters.0,letters.1,letters.2,letters.3,name_length,run" {
		t.Errorf("basis fields %s", got)
	}
	if bad := r.get(t, "run_2"); bad.Err == nil || !strings.Contains(bad.Err.Error(), "no such company") {
		t.Errorf("bad input outcome %+v", bad)
	}
	if o := r.get(t, "run_3"); o.Err != nil {
		t.Errorf("a failed input failed its neighbour: %v", o.Err)
	}
	if o := r.get(t, "run_6"); o.Err != nil || o.Output.Type != api.OutputText ||
		string(o.Output.Content) != `"report on Stark"` {
		t.Errorf("text outcome %+v", o)
	}
}

func TestHTTP_RetriesHonourRetryAfter(t *testing.T) {
	t.Parallel()
	svc := newEnrichService(t)
	svc.failFirst, svc.failStatus, svc.retryAfter = 2, http.StatusTooManyRequests, "1"
	h := newTestHTTP(t, HTTPOptions{URL: svc.srv.URL, Backoff: time.Millisecond})
	r := newRecorder(1)
	start := time.Now()
	h.Execute(context.Background(), []engine.Job{jsonJob("a", `{"name":"Acme"}`, `{}`)}, r)
	r.wait(t, 20*time.Second)
	if o := r.get(t, "a"); o.Err != nil {
		t.Fatalf("run failed after retries: %v", o.Err)
	}
	if n := svc.requests.Load(); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
	if el := time.Since(start); el < 2*time.Second {
		t.Errorf("done after %s, before two Retry-After waits of 1s", el)
	}
}

func TestHTTP_ErrorsByStatus(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		status    int
		retries   int
		transient bool
		requests  int32
	}{
		{"server error exhausts retries", http.StatusBadGateway, 2, true, 3},
		{"client error is permanent", http.StatusBadRequest, 2, false, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			svc := newEnrichService(t)
			svc.failFirst, svc.failStatus = 100, c.status
			h := newTestHTTP(t, HTTPOptions{URL: svc.srv.URL, Retries: ptr(c.retries),
				Backoff: time.Millisecond})
			r := newRecorder(2)
			h.Execute(context.Background(), []engine.Job{
				jsonJob("a", `{}`, `{}`), jsonJob("b", `{}`, `{}`)}, r)
			r.wait(t, 10*time.Second)
			o := r.get(t, "b")
			if o.Err == nil || !strings.Contains(o.Err.Error(), fmt.Sprintf("status %d", c.status)) {
				t.Fatalf("error %v", o.Err)
			}
			if ok, _ := engine.IsTransient(o.Err); ok != c.transient {
				t.Errorf("transient = %v, want %v", ok, c.transient)
			}
			if n := svc.requests.Load(); n != c.requests {
				t.Errorf("%d requests, want %d", n, c.requests)
			}
		})
	}
}

func TestHTTP_ConnectionRefusedIsTransient(t *testing.T) {
	t.Parallel()
	svc := newEnrichService(t)
	url := svc.srv.URL
	svc.srv.Close()
	h := newTestHTTP(t, HTTPOptions{URL: url, Retries: ptr(1), Backoff: time.Millisecond})
	r := newRecorder(1)
	h.Execute(context.Background(), []engine.Job{jsonJob("a", `{}`, `{}`)}, r)
	r.wait(t, 10*time.Second)
	o := r.get(t, "a")
	if ok, _ := engine.IsTransient(o.Err); !ok || !strings.Contains(o.Err.Error(), "connect") {
		t.Errorf("outcome %v, want a transient connection error", o.Err)
	}
}

func TestHTTP_MalformedReplies(t *testing.T) {
	t.Parallel()
	cases := map[string]struct{ body, want string }{
		"count":     {`{"replies":[{"output":{}}]}`, "has 1 replies for 2 calls"},
		"not json":  {`<html>oops</html>`, "decode reply"},
		"no output": {`{"replies":[{},{}]}`, "neither output nor error"},
		"not object": {`{"replies":[{"output":[1]},{"output":"x"}]}`,
			"output must be a JSON object"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			svc := newEnrichService(t)
			svc.replies = c.body
			h := newTestHTTP(t, HTTPOptions{URL: svc.srv.URL})
			r := newRecorder(2)
			h.Execute(context.Background(), []engine.Job{
				jsonJob("a", `{}`, `{}`), jsonJob("b", `{}`, `{}`)}, r)
			r.wait(t, 10*time.Second)
			if o := r.get(t, "b"); o.Err == nil || !strings.Contains(o.Err.Error(), c.want) {
				t.Errorf("error %v, want %q", o.Err, c.want)
			}
		})
	}
}

func TestHTTP_ReplyBasisAndUsage(t *testing.T) {
	t.Parallel()
	svc := newEnrichService(t)
	svc.replies = `{"replies":[{"output":{"ceo":"Jane"},"usage":{"lookups":2},` +
		`"basis":[{"field":"ceo","reasoning":"from the registry","confidence":"high",` +
		`"citations":[{"url":"https://registry.example/acme","title":null,"excerpts":["CEO: Jane"]}]}]}]}`
	h := newTestHTTP(t, HTTPOptions{URL: svc.srv.URL})
	r := newRecorder(1)
	h.Execute(context.Background(), []engine.Job{jsonJob("a", `{}`, `{}`)}, r)
	r.wait(t, 10*time.Second)
	o := r.get(t, "a")
	if o.Err != nil {
		t.Fatal(o.Err)
	}
	b := o.Output.Basis
	if len(b) != 1 || *b[0].Confidence != "high" || b[0].Citations[0].URL != "https://registry.example/acme" {
		t.Errorf("basis %+v", b)
	}
	if o.Usage["lookups"] != float64(2) {
		t.Errorf("usage %v", o.Usage)
	}
}

func TestHTTP_HeadersFromEnvironment(t *testing.T) {
	t.Setenv("TASKPIPE_TEST_ENRICH_TOKEN", "s3cret")
	svc := newEnrichService(t)
	h := newTestHTTP(t, HTTPOptions{URL: svc.srv.URL, Headers: map[string]string{
		"Authorization": "Bearer ${TASKPIPE_TEST_ENRICH_TOKEN}", "X-Team": "data"}})
	r := newRecorder(1)
	h.Execute(context.Background(), []engine.Job{jsonJob("a", `{}`, `{}`)}, r)
	r.wait(t, 10*time.Second)
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if got := svc.headers.Get("Authorization"); got != "Bearer s3cret" {
		t.Errorf("Authorization %q", got)
	}
	if got := svc.headers.Get("X-Team"); got != "data" {
		t.Errorf("X-Team %q", got)
	}

	_, err := NewHTTP(HTTPOptions{URL: "ftp://x", BatchSize: -1,
		Headers: map[string]string{"Authorization": "$TASKPIPE_TEST_UNSET_VARIABLE"}}, nil)
	for _, want := range []string{
		`url: must be an absolute http or https URL`, "batch_size: must be > 0",
		"headers.Authorization: environment variable TASKPIPE_TEST_UNSET_VARIABLE is not set",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want %q", err, want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := map[string]time.Duration{
		"": 0, "3": 3 * time.Second, "0.5": 500 * time.Millisecond, "junk": 0, "-1": 0,
		now.Add(7 * time.Second).Format(http.TimeFormat): 7 * time.Second,
	}
	for v, want := range cases {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", v, got, want)
		}
	}
}
