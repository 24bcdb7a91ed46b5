package sinks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/sinks"
	"github.com/taskpipe/taskpipe/specs"
)

// readerEnv names the database a child test process counts rows of.
const readerEnv = "TASKPIPE_TEST_COUNT_ROWS_OF"

// TestCountRowsChild is run in a child process by
// TestDuckDB_ReleasesIdleFile: it opens the database read-only, as another
// program querying partial results would, and prints the row count.
func TestCountRowsChild(t *testing.T) {
	path := os.Getenv(readerEnv)
	if path == "" {
		t.Skip("runs only as the child of TestDuckDB_ReleasesIdleFile")
	}
	db, err := sinks.OpenDuckDBReadOnly(path)
	if err != nil {
		fmt.Println("open:", err)
		return
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM results`).Scan(&n); err != nil {
		fmt.Println("query:", err)
		return
	}
	fmt.Printf("rows=%d\n", n)
}

// countFromOtherProcess asks a child process for the table's row count.
func countFromOtherProcess(t *testing.T, path string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCountRowsChild$", "-test.v")
	cmd.Env = append(os.Environ(), readerEnv+"="+path)
	out, _ := cmd.CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "rows=") || strings.HasPrefix(line, "open:") || strings.HasPrefix(line, "query:") {
			return line
		}
	}
	return string(out)
}

func TestDuckDB_ReleasesIdleFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "live.duckdb")
	tbl, err := specs.NewTable([]specs.Column{{Name: "id", Type: specs.Varchar}},
		api.Schema{Type: api.SchemaJSON, JSONSchema: json.RawMessage(
			`{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"],"additionalProperties":false}`)})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := sinks.NewDuckDBFile(path, "results")
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Open(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close(ctx) })
	write := func(ids ...string) {
		t.Helper()
		rows := make([]sinks.Row, len(ids))
		for i, id := range ids {
			rows[i] = sinks.Row{Key: []any{id}, RunID: "run-" + id, Status: "completed", Output: json.RawMessage(`{"n":1}`)}
		}
		if err := sink.Write(ctx, rows); err != nil {
			t.Fatal(err)
		}
	}

	// Another process reads the rows once the sink has been idle, and the
	// sink takes the file back for the next batch.
	write("a", "b")
	deadline := time.Now().Add(30 * time.Second)
	got := countFromOtherProcess(t, path)
	for got != "rows=2" && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond) // poll the file lock with a deadline
		got = countFromOtherProcess(t, path)
	}
	if got != "rows=2" {
		t.Fatalf("another process read %q while the sink was idle, want rows=2", got)
	}
	write("c", "a") // a replaces its earlier row
	if err := sink.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := countFromOtherProcess(t, path); got != "rows=3" {
		t.Fatalf("after close another process read %q, want rows=3", got)
	}
}
