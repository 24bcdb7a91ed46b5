package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/sinks"
	"github.com/taskpipe/taskpipe/sources/sourcetest"
	"github.com/taskpipe/taskpipe/store/sqlite"
)

// buildOnce builds the taskpipe binary once for the tests that run it as a
// process.
var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "taskpipe-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "taskpipe")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping tests that build and run the binary in -short mode")
	}
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// resumeFixture is a pipeline over rows keyed k00000.. with a synthetic
// latency spread, so that a run takes seconds and can be killed mid-way.
type resumeFixture struct {
	dir, spec, processors, state, db string
}

func newResumeFixture(t *testing.T, rows int, latency string, failureRate float64) resumeFixture {
	t.Helper()
	dir := t.TempDir()
	sourcetest.WriteParquet(t, dir, fmt.Sprintf(
		"SELECT 'k' || lpad(i::VARCHAR, 5, '0') AS key, 'company ' || i AS name FROM range(%d) t(i)", rows))
	f := resumeFixture{dir: dir, spec: filepath.Join(dir, "pipeline.yaml"),
		processors: filepath.Join(dir, "processors.yaml"), state: filepath.Join(dir, "state"),
		db: filepath.Join(dir, "out", "results.duckdb")}
	write(t, f.processors, fmt.Sprintf(`version: 1
processors:
  synthetic:
    kind: synthetic
    concurrency: 400
    options:
      failure_rate: %v
      latency: {%s}
`, failureRate, latency))
	write(t, f.spec, `version: 1
name: resume
source:
  parquet: [data.parquet]
key: [key]
mapping:
  name: name
task:
  processor: synthetic
  output_schema:
    type: json
    json_schema:
      type: object
      properties:
        headcount: {type: integer}
        summary: {type: string}
      required: [headcount, summary]
      additionalProperties: false
target:
  state_dir: state
sink:
  duckdb: {database: out/results.duckdb, table: results}
`)
	return f
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// command makes a taskpipe command in the fixture.
func (f resumeFixture) command(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "TASKPIPE_PROCESSORS="+f.processors, "TASKPIPE_LOG_LEVEL=warn")
	return cmd
}

// stateCounts reads the pipeline's state store (as another process would):
// rows by status, and the run id of every completed row.
func (f resumeFixture) stateCounts(t *testing.T) (map[string]int64, map[string]string) {
	t.Helper()
	db := sqlite.OpenDB(filepath.Join(f.state, "pipeline.db"), "query_only = 1", "busy_timeout = 5000")
	defer db.Close()
	counts := map[string]int64{}
	done := map[string]string{}
	rows, err := db.Query(`SELECT key, status, run_id FROM rows`)
	if err != nil {
		return counts, done // not created yet
	}
	defer rows.Close()
	for rows.Next() {
		var key, status, runID string
		if err := rows.Scan(&key, &status, &runID); err != nil {
			t.Fatal(err)
		}
		counts[status]++
		if status == "completed" {
			done[key] = runID
		}
	}
	return counts, done
}

// TestRun_ResumeAfterKill kills `taskpipe run` with SIGKILL at three moments
// (while adding runs, about a third and two thirds through the results),
// runs it again to the end, and checks that the table holds exactly one
// completed row per key, that every row completed before a kill kept its
// run id (no completed run was executed again), and that the group holds
// exactly one run per row (nothing was added twice).
func TestRun_ResumeAfterKill(t *testing.T) {
	bin := binary(t)
	const rows = 3000
	f := newResumeFixture(t, rows, "distribution: uniform, min: 20ms, max: 1500ms", 0)
	killAt := []struct {
		name string
		when func(counts map[string]int64) bool
	}{
		{"while adding runs", func(c map[string]int64) bool { return c["submitted"] > 0 }},
		{"a third through", func(c map[string]int64) bool { return c["completed"] >= rows/3 }},
		{"two thirds through", func(c map[string]int64) bool { return c["completed"] >= 2*rows/3 }},
	}
	completedBefore := map[string]string{}
	for _, k := range killAt {
		cmd := f.command(bin, "run", f.spec, "--progress", "none")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()

		// Poll the state until the moment comes, then kill -9.
		deadline := time.Now().Add(2 * time.Minute)
		killed := false
		for !killed {
			select {
			case err := <-exited:
				t.Fatalf("%s: the run ended (%v) before the kill point; stderr:\n%s", k.name, err, stderr.String())
			case <-time.After(5 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: kill point not reached", k.name)
			}
			counts, _ := f.stateCounts(t)
			if k.when(counts) {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
		<-exited
		counts, done := f.stateCounts(t)
		t.Logf("killed %s: state %v", k.name, counts)
		for key, runID := range completedBefore {
			if done[key] != runID {
				t.Errorf("after kill %q: row %s completed by run %s now has run %q", k.name, key, runID, done[key])
			}
		}
		for key, runID := range done {
			completedBefore[key] = runID
		}
	}

	// Run to the end.
	cmd := f.command(bin, "run", f.spec, "--json", "--progress", "none")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("final run: %v\n%s", err, stderr.String())
	}
	var sum struct {
		GroupID   string           `json:"group_id"`
		Submitted int64            `json:"submitted"`
		Skipped   int64            `json:"skipped"`
		Statuses  map[string]int64 `json:"statuses"`
	}
	if err := json.Unmarshal(out, &sum); err != nil {
		t.Fatalf("summary %q: %v", out, err)
	}
	t.Logf("final run: %s", out)
	if sum.Statuses["completed"] != rows || sum.Skipped < int64(len(completedBefore)) {
		t.Errorf("final summary %+v; %d rows had completed before", sum, len(completedBefore))
	}

	// One completed row per key; rows completed before a kill kept their run.
	db, err := sinks.OpenDuckDB(f.db)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var total, keys, completed, runs int64
	if err := db.QueryRow(`SELECT count(*), count(DISTINCT key), count(*) FILTER (status = 'completed'),
		count(DISTINCT run_id) FROM results`).Scan(&total, &keys, &completed, &runs); err != nil {
		t.Fatal(err)
	}
	if total != rows || keys != rows || completed != rows || runs != rows {
		t.Errorf("table: %d rows, %d keys, %d completed, %d run ids; want %d each", total, keys, completed, runs, rows)
	}
	changed := 0
	for key, runID := range completedBefore {
		var now string
		if err := db.QueryRow(`SELECT run_id FROM results WHERE key = ?`, key).Scan(&now); err != nil || now != runID {
			changed++
		}
	}
	if changed > 0 {
		t.Errorf("%d of %d rows completed before a kill were run again", changed, len(completedBefore))
	}

	// The group holds one run per row, every one completed once.
	st := f.command(bin, "status", sum.GroupID, "--json", "--state-dir", f.state)
	out, err = st.Output()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	var g struct {
		Status struct {
			NumTaskRuns int64            `json:"num_task_runs"`
			Counts      map[string]int64 `json:"task_run_status_counts"`
		} `json:"status"`
	}
	if err := json.Unmarshal(out, &g); err != nil {
		t.Fatal(err)
	}
	if g.Status.NumTaskRuns != rows || g.Status.Counts["completed"] != rows {
		t.Errorf("group has %d runs, %v; want %d completed", g.Status.NumTaskRuns, g.Status.Counts, rows)
	}
}

// TestRun_StateDirFlag runs a finished pipeline again with its own state
// directory, as the same pipeline pointed at another target would be: every
// row is submitted again there, and the first state is left alone.
func TestRun_StateDirFlag(t *testing.T) {
	bin := binary(t)
	f := newResumeFixture(t, 5, "", 0)
	submitted := func(args ...string) int64 {
		t.Helper()
		out, err := f.command(bin, append([]string{"run", f.spec, "--json"}, args...)...).Output()
		if err != nil {
			t.Fatalf("run %v: %v", args, err)
		}
		var sum struct {
			Submitted int64 `json:"submitted"`
		}
		if err := json.Unmarshal(out, &sum); err != nil {
			t.Fatalf("summary %q: %v", out, err)
		}
		return sum.Submitted
	}
	other := filepath.Join(t.TempDir(), "other-state")
	if got := submitted(); got != 5 {
		t.Fatalf("first run submitted %d rows, want 5", got)
	}
	if got := submitted("--state-dir", other); got != 5 {
		t.Errorf("run with a new --state-dir submitted %d rows, want 5", got)
	}
	if _, err := os.Stat(filepath.Join(other, "pipeline.db")); err != nil {
		t.Errorf("--state-dir holds no state: %v", err)
	}
	if got := submitted(); got != 0 {
		t.Errorf("run on the first state submitted %d rows, want 0", got)
	}
}

// TestRun_ExitCodes checks the exit codes of run and wait.
func TestRun_ExitCodes(t *testing.T) {
	bin := binary(t)
	exitCode := func(cmd *exec.Cmd) int {
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	}

	t.Run("bad spec is a usage error", func(t *testing.T) {
		f := newResumeFixture(t, 5, "", 0)
		write(t, f.spec, "version: 1\nsource: {parquet: [data.parquet]}\nkey: [key]\nbogus: 1\n")
		if code := exitCode(f.command(bin, "run", f.spec)); code != exitUsage {
			t.Errorf("exit code %d, want %d", code, exitUsage)
		}
	})
	t.Run("a key column the source lacks is a usage error", func(t *testing.T) {
		f := newResumeFixture(t, 5, "", 0)
		spec, _ := os.ReadFile(f.spec)
		write(t, f.spec, string(bytes.Replace(spec, []byte("key: [key]"), []byte("key: [nope]"), 1)))
		if code := exitCode(f.command(bin, "run", f.spec, "--dry-run")); code != exitUsage {
			t.Errorf("exit code %d, want %d", code, exitUsage)
		}
	})
	t.Run("a sink with other columns is a usage error and keeps its rows", func(t *testing.T) {
		f := newResumeFixture(t, 5, "", 0)
		spec, _ := os.ReadFile(f.spec)
		parquetSink := bytes.Replace(spec, []byte("duckdb: {database: out/results.duckdb, table: results}"),
			[]byte("parquet: {path: out/results.parquet}"), 1)
		write(t, f.spec, string(parquetSink))
		if code := exitCode(f.command(bin, "run", f.spec)); code != 0 {
			t.Fatalf("first run: exit code %d", code)
		}
		write(t, f.spec, string(bytes.Replace(parquetSink, []byte("headcount: {type: integer}"),
			[]byte("headcount: {type: string}"), 1)))
		for attempt := 1; attempt <= 2; attempt++ {
			if code := exitCode(f.command(bin, "run", f.spec)); code != exitUsage {
				t.Errorf("changed output schema, attempt %d: exit code %d, want %d", attempt, code, exitUsage)
			}
		}
		out, err := f.command(bin, "sql", ":memory:",
			"SELECT count(*) AS n FROM read_parquet('"+filepath.Join(f.dir, "out", "results.parquet")+"')").Output()
		if err != nil {
			t.Fatalf("sql: %v", err)
		}
		if !bytes.Contains(out, []byte("\n5\n")) {
			t.Errorf("published file after the refused runs:\n%s\nwant 5 rows", out)
		}
	})
	t.Run("failed rows beyond --max-failed", func(t *testing.T) {
		f := newResumeFixture(t, 200, "", 0.2)
		if code := exitCode(f.command(bin, "run", f.spec)); code != exitFailedRows {
			t.Errorf("exit code %d, want %d", code, exitFailedRows)
		}
		if code := exitCode(f.command(bin, "run", f.spec, "--max-failed", "200")); code != 0 {
			t.Errorf("with --max-failed 200: exit code %d, want 0", code)
		}
	})
	t.Run("unreachable server", func(t *testing.T) {
		f := newResumeFixture(t, 5, "", 0)
		spec, _ := os.ReadFile(f.spec)
		write(t, f.spec, string(bytes.Replace(spec, []byte("  state_dir: state"),
			[]byte("  state_dir: state\n  engine: server\n  url: http://127.0.0.1:1"), 1)))
		if code := exitCode(f.command(bin, "run", f.spec)); code != exitUnreachable {
			t.Errorf("exit code %d, want %d", code, exitUnreachable)
		}
	})
	t.Run("wait times out on an active group", func(t *testing.T) {
		f := newResumeFixture(t, 50, "distribution: fixed, mean: 1h", 0)
		out, err := f.command(bin, "run", f.spec, "--no-wait").Output()
		if err != nil {
			t.Fatalf("run --no-wait: %v", err)
		}
		group := string(bytes.TrimSpace(out))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := f.command(bin, "wait", group, "--state-dir", f.state, "--timeout", "300ms")
		cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
		cmd.Env = append(os.Environ(), "TASKPIPE_PROCESSORS="+f.processors)
		if code := exitCode(cmd); code != exitTimeout {
			t.Errorf("exit code %d, want %d", code, exitTimeout)
		}
	})
}

// TestRun_NoWaitThenWait is the scheduler flow: `run --no-wait` submits and
// prints the group, `wait` (an embedded engine) drives the group to the end,
// and a second `run` writes the results without submitting anything again.
func TestRun_NoWaitThenWait(t *testing.T) {
	bin := binary(t)
	f := newResumeFixture(t, 100, "distribution: fixed, mean: 50ms", 0)
	out, err := f.command(bin, "run", f.spec, "--no-wait").Output()
	if err != nil {
		t.Fatalf("run --no-wait: %v", err)
	}
	group := string(bytes.TrimSpace(out))
	out, err = f.command(bin, "wait", group, "--state-dir", f.state, "--timeout", "2m").Output()
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	if want := "group " + group + ": done, 100 runs (completed 100)\n"; string(out) != want {
		t.Errorf("wait printed %q, want %q", out, want)
	}
	out, err = f.command(bin, "run", f.spec, "--json").Output()
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	var sum struct {
		GroupID    string           `json:"group_id"`
		Submitted  int64            `json:"submitted"`
		Reattached int64            `json:"reattached"`
		Statuses   map[string]int64 `json:"statuses"`
	}
	if err := json.Unmarshal(out, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.GroupID != group || sum.Submitted != 0 || sum.Reattached != 100 || sum.Statuses["completed"] != 100 {
		t.Errorf("second run summary %s", out)
	}
}
