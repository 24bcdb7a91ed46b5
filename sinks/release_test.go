package sinks_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
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

// readerModeEnv tells the child how to read: "" opens the file once,
// "wait" waits for it to be free, "hold" keeps it open until its standard
// input ends.
const readerModeEnv = "TASKPIPE_TEST_READER_MODE"

// TestCountRowsChild is run in a child process by the release tests: it
// opens the database read-only, as another program querying partial
// results would, and prints the row count.
func TestCountRowsChild(t *testing.T) {
	path := os.Getenv(readerEnv)
	if path == "" {
		t.Skip("runs only as the child of the release tests")
	}
	open := func() (*sql.DB, error) { return sinks.OpenDuckDBReadOnly(path) }
	var db *sql.DB
	var err error
	if os.Getenv(readerModeEnv) == "wait" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		db, err = sinks.OpenWhenFree(ctx, open, nil)
	} else {
		db, err = open()
	}
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
	if os.Getenv(readerModeEnv) == "hold" {
		_, _ = io.Copy(io.Discard, os.Stdin)
	}
}

// readerCmd is a child process that reads the table's row count.
func readerCmd(path, mode string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestCountRowsChild$", "-test.v")
	cmd.Env = append(os.Environ(), readerEnv+"="+path, readerModeEnv+"="+mode)
	return cmd
}

// countFromOtherProcess asks a child process for the table's row count.
func countFromOtherProcess(t *testing.T, path string) string {
	t.Helper()
	return countLine(readerCmd(path, ""))
}

// countLine runs a reader child and returns its result line.
func countLine(cmd *exec.Cmd) string {
	out, _ := cmd.CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "rows=") || strings.HasPrefix(line, "open:") || strings.HasPrefix(line, "query:") {
			return line
		}
	}
	return string(out)
}

// openLiveSink opens a sink on its own file and returns a function that
// writes rows with the given ids.
func openLiveSink(t *testing.T, path string) (*sinks.DuckDB, func(ids ...string) error) {
	t.Helper()
	ctx := context.Background()
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
	return sink, func(ids ...string) error {
		rows := make([]sinks.Row, len(ids))
		for i, id := range ids {
			rows[i] = sinks.Row{Key: []any{id}, RunID: "run-" + id, Status: "completed", Output: json.RawMessage(`{"n":1}`)}
		}
		return sink.Write(ctx, rows)
	}
}

func TestDuckDB_ReleasesIdleFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "live.duckdb")
	sink, writeRows := openLiveSink(t, path)
	write := func(ids ...string) {
		t.Helper()
		if err := writeRows(ids...); err != nil {
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

func TestDuckDB_ReleasesAFileItKeepsWritingTo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "busy.duckdb")
	sink, write := openLiveSink(t, path)
	// Never idle: only the hold limit lets a reader in.
	sink.SetRelease(time.Hour, 200*time.Millisecond, 200*time.Millisecond)
	if err := write("first"); err != nil {
		t.Fatal(err)
	}

	// Keep writing while a reader waits for its turn.
	read := make(chan string, 1)
	go func() { read <- countLine(readerCmd(path, "wait")) }()
	deadline := time.After(time.Minute)
	for i := 0; ; i++ {
		select {
		case got := <-read:
			if !strings.HasPrefix(got, "rows=") || got == "rows=0" {
				t.Fatalf("a reader during the writes got %q, want the rows written so far", got)
			}
			return
		case <-deadline:
			t.Fatal("a reader found no moment the busy sink let go of its file within a minute")
		default:
		}
		if err := write(fmt.Sprint("row", i)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		time.Sleep(10 * time.Millisecond) // results arriving one by one
	}
}

func TestDuckDB_WaitsForAReaderToLetGo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.duckdb")
	sink, write := openLiveSink(t, path)
	sink.SetRelease(time.Millisecond, 0, 0)
	if err := write("a"); err != nil {
		t.Fatal(err)
	}

	// A reader opens the released file and keeps it open.
	reader := readerCmd(path, "wait")
	stdin, err := reader.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := reader.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	reader.Env = append(reader.Env, readerModeEnv+"=hold")
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	for lines.Scan() && !strings.HasPrefix(lines.Text(), "rows=") {
	}
	if got := lines.Text(); got != "rows=1" {
		t.Fatalf("reader got %q, want rows=1", got)
	}

	// The next write waits for the reader instead of failing.
	done := make(chan error, 1)
	go func() { done <- write("b") }()
	select {
	case err := <-done:
		t.Fatalf("write returned (%v) while a reader held the file", err)
	case <-time.After(300 * time.Millisecond):
	}
	stdin.Close()
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	if err := <-done; err != nil {
		t.Fatalf("write after the reader let go: %v", err)
	}
	if err := reader.Wait(); err != nil {
		t.Fatalf("reader: %v", err)
	}
	if err := sink.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := countFromOtherProcess(t, path); got != "rows=2" {
		t.Fatalf("after close another process read %q, want rows=2", got)
	}
}
