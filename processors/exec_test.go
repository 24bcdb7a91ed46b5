package processors

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/engine"
)

// logBuffer collects log output from concurrent goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testdataProgram is the absolute path of a test program.
func testdataProgram(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newTestExec makes an exec processor that is closed with the test.
func newTestExec(t *testing.T, o ExecOptions, log *slog.Logger) *Exec {
	t.Helper()
	e, err := NewExec(o, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func TestExec_AnswersRequests(t *testing.T) {
	t.Parallel()
	prog := testdataProgram(t, "exec-good.sh")
	e := newTestExec(t, ExecOptions{Command: []string{prog}, MaxInFlight: 16}, nil)
	const n = 300
	jobs := make([]engine.Job, n)
	for i := range jobs {
		name := strings.Repeat("x", i%7+1)
		if i == 42 {
			name = "bad"
		}
		jobs[i] = jsonJob(fmt.Sprint("run_", i), fmt.Sprintf(`{"name":%q}`, name), `{"type":"object"}`)
	}
	r := newRecorder(n)
	// Two Execute calls, as the engine hands over batches.
	e.Execute(context.Background(), jobs[:100], r)
	e.Execute(context.Background(), jobs[100:], r)
	r.wait(t, 30*time.Second)
	for i := range n {
		o := r.get(t, fmt.Sprint("run_", i))
		if i == 42 {
			if o.Err == nil || !strings.Contains(o.Err.Error(), "no such company") {
				t.Errorf("bad input: %+v", o)
			}
			continue
		}
		if o.Err != nil {
			t.Fatalf("run %d: %v", i, o.Err)
		}
		var got struct {
			Name       string `json:"name"`
			NameLength int    `json:"name_length"`
		}
		if err := json.Unmarshal(o.Output.Content, &got); err != nil {
			t.Fatal(err)
		}
		if got.NameLength != i%7+1 || got.Name != strings.Repeat("x", i%7+1) {
			t.Errorf("run %d: output %s", i, o.Output.Content)
		}
		if want := "returned by exec program " + prog; o.Output.Basis[0].Reasoning != want {
			t.Errorf("basis reasoning %q, want %q", o.Output.Basis[0].Reasoning, want)
		}
	}
	if r.dups != 0 {
		t.Errorf("%d runs completed twice", r.dups)
	}
}

func TestExec_CrashFailsHeldRunsAndRestarts(t *testing.T) {
	t.Parallel()
	for _, failOnCrash := range []bool{false, true} {
		e := newTestExec(t, ExecOptions{
			Command:        []string{testdataProgram(t, "exec-crash.sh")},
			MaxInFlight:    10,
			RestartBackoff: 10 * time.Millisecond,
			FailOnCrash:    failOnCrash,
		}, nil)
		jobs := make([]engine.Job, 10)
		for i := range jobs {
			jobs[i] = jsonJob(fmt.Sprint("run_", i), "{}", "{}")
		}
		r := newRecorder(10)
		e.Execute(context.Background(), jobs, r)
		r.wait(t, 30*time.Second)
		ok := 0
		for i := range jobs {
			o := r.get(t, fmt.Sprint("run_", i))
			if o.Err == nil {
				ok++
				continue
			}
			msg := o.Err.Error()
			if !strings.Contains(msg, "exit status 3") ||
				!strings.Contains(msg, "fatal: simulated crash on request 4") {
				t.Errorf("crash error %q lacks the exit status or stderr", msg)
			}
			if transient, _ := engine.IsTransient(o.Err); transient == failOnCrash {
				t.Errorf("fail_on_crash %v: transient = %v", failOnCrash, transient)
			}
		}
		if ok != 3 {
			t.Errorf("%d runs completed before the crash, want 3", ok)
		}

		// The next run goes to a restarted program.
		r2 := newRecorder(1)
		e.Execute(context.Background(), []engine.Job{jsonJob("after", "{}", "{}")}, r2)
		r2.wait(t, 30*time.Second)
		if o := r2.get(t, "after"); o.Err != nil || string(o.Output.Content) != `{"n":1}` {
			t.Errorf("run after restart: %+v", o)
		}
	}
}

func TestExec_GarbageLinesAreLoggedAndSkipped(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	e := newTestExec(t, ExecOptions{Command: []string{testdataProgram(t, "exec-garbage.sh")}}, log)
	r := newRecorder(5)
	jobs := make([]engine.Job, 5)
	for i := range jobs {
		jobs[i] = jsonJob(fmt.Sprint("run_", i), "{}", "{}")
	}
	e.Execute(context.Background(), jobs, r)
	r.wait(t, 30*time.Second)
	for i := range jobs {
		if o := r.get(t, fmt.Sprint("run_", i)); o.Err != nil || string(o.Output.Content) != `{"ok":true}` {
			t.Errorf("run %d: %+v", i, o)
		}
	}
	out := logs.String()
	for _, want := range []string{
		`"exec program wrote a line that is not a reply" line="loading model weights... done"`,
		`"exec program replied to an unknown request id" id=no-such-request`,
		`{\"trunc`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}

func TestExec_DeadlineFreesInFlightSlot(t *testing.T) {
	t.Parallel()
	// A program that reads requests and never answers.
	e := newTestExec(t, ExecOptions{Command: []string{"sh", "-c", "cat >/dev/null"}, MaxInFlight: 1}, nil)
	r := newRecorder(2)
	jobs := []engine.Job{jsonJob("a", "{}", "{}"), jsonJob("b", "{}", "{}")}
	for i := range jobs {
		jobs[i].Deadline = time.Now().Add(50 * time.Millisecond)
	}
	e.Execute(context.Background(), jobs, r)
	r.wait(t, 30*time.Second)
	for _, id := range []string{"a", "b"} {
		o := r.get(t, id)
		if transient, _ := engine.IsTransient(o.Err); !transient ||
			!strings.Contains(o.Err.Error(), "no reply before the run's deadline") {
			t.Errorf("run %s: %v", id, o.Err)
		}
	}
}

func TestExec_CancelledRunsAreAbandoned(t *testing.T) {
	t.Parallel()
	e := newTestExec(t, ExecOptions{Command: []string{testdataProgram(t, "exec-good.sh")}}, nil)
	r := newRecorder(1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e.Execute(ctx, []engine.Job{jsonJob("cancelled", "{}", "{}")}, r)
	e.Execute(context.Background(), []engine.Job{jsonJob("live", "{}", "{}")}, r)
	r.wait(t, 30*time.Second)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.outcomes["cancelled"]; ok {
		t.Error("a cancelled run was completed")
	}
}

func TestExec_ConfigAndClose(t *testing.T) {
	t.Parallel()
	prog := testdataProgram(t, "exec-good.sh")
	backends, err := Parse([]byte(fmt.Sprintf(`version: 1
processors:
  local:
    kind: exec
    concurrency: 8
    options:
      command: [%q]
      max_in_flight: 4
      env: {GREETING: "hello $HOME"}
`, prog)), nil)
	if err != nil {
		t.Fatal(err)
	}
	e := backends["local"].Processor.(*Exec)
	r := newRecorder(1)
	e.Execute(context.Background(), []engine.Job{jsonJob("a", `{"name":"Acme"}`, "{}")}, r)
	r.wait(t, 30*time.Second)
	c := e.current()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if c == nil || c.cmd.ProcessState == nil {
		t.Fatal("program still running after Close")
	}
	after := newRecorder(1)
	e.Execute(context.Background(), []engine.Job{jsonJob("b", "{}", "{}")}, after)
	if o := after.get(t, "b"); o.Err == nil || !strings.Contains(o.Err.Error(), "closed") {
		t.Errorf("run after Close: %+v", o)
	}

	_, err = NewExec(ExecOptions{Command: []string{"/no/such/program"}, MaxInFlight: -1,
		Env: map[string]string{"X": "$TASKPIPE_TEST_UNSET_VARIABLE"}}, nil)
	for _, want := range []string{"command: exec: \"/no/such/program\"", "max_in_flight: must be > 0",
		"env.X: environment variable TASKPIPE_TEST_UNSET_VARIABLE is not set"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want %q", err, want)
		}
	}
}

func TestExec_StartFailureIsTransientAndRetried(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := newTestExec(t, ExecOptions{Command: []string{"./enrich.sh"}, Dir: dir,
		RestartBackoff: time.Millisecond}, nil)
	o := runOne(t, e, jsonJob("missing", "{}", "{}"))
	if ok, _ := engine.IsTransient(o.Err); !ok || !strings.Contains(o.Err.Error(), "start exec program") {
		t.Fatalf("outcome %v, want a transient start error", o.Err)
	}
	good, err := os.ReadFile(testdataProgram(t, "exec-good.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "enrich.sh"), good, 0o755); err != nil {
		t.Fatal(err)
	}
	if o := runOne(t, e, jsonJob("present", `{"name":"Acme"}`, "{}")); o.Err != nil {
		t.Errorf("run once the program exists: %v", o.Err)
	}
}
