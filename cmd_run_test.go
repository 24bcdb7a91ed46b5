package main

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/taskpipe/taskpipe/sinks"
	"github.com/taskpipe/taskpipe/specs"
)

var update = flag.Bool("update", false, "rewrite the expected results of the examples")

// TestExamples runs every pipeline under examples/ offline (in a copy of
// the folder) and compares its typed result table with the expectations
// committed beside it: expected/schema.txt (columns and types),
// expected/summary.json (row count, status counts, a digest of the stable
// columns) and expected/rows.jsonl (the first rows in full).
func TestExamples(t *testing.T) {
	work := t.TempDir()
	copyTree(t, "examples", work)
	specsFound := 0
	err := filepath.WalkDir("examples", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "pipeline.yaml" {
			return err
		}
		specsFound++
		rel := filepath.Dir(path)
		t.Run(filepath.Base(rel), func(t *testing.T) {
			testExample(t, rel, filepath.Join(work, strings.TrimPrefix(path, "examples")))
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if specsFound < 2 {
		t.Fatalf("found %d example pipelines, want at least 2", specsFound)
	}
}

// testExample runs one example pipeline twice (the second run must submit
// nothing) and checks its table.
func testExample(t *testing.T, repoDir, specPath string) {
	spec, err := specs.LoadPipeline(specPath)
	if err != nil {
		t.Fatalf("load %s: %v", specPath, err)
	}
	for i := range 2 {
		cmd := &runCmd{Pipeline: specPath, JSON: true, Progress: "none"}
		out := captureStdout(t, func() error { return cmd.Run(&CLI{}, quietLogger()) })
		var sum struct {
			Submitted, Skipped int64
		}
		if err := json.Unmarshal(out, &sum); err != nil {
			t.Fatalf("run %d: summary %q: %v", i+1, out, err)
		}
		if i == 1 && sum.Submitted != 0 {
			t.Errorf("second run submitted %d rows, want 0", sum.Submitted)
		}
	}

	// Read the table the example wrote.
	db, from := openResults(t, spec)
	defer db.Close()
	got := describeResults(t, db, from)
	expected := filepath.Join(repoDir, "expected")
	if *update {
		if err := os.MkdirAll(expected, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range got {
			if err := os.WriteFile(filepath.Join(expected, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	for name, data := range got {
		want, err := os.ReadFile(filepath.Join(expected, name))
		if err != nil {
			t.Fatalf("read expectation (run with -update to create it): %v", err)
		}
		if !bytes.Equal(data, want) {
			t.Errorf("%s differs from %s:\n got: %s\nwant: %s", name, filepath.Join(expected, name),
				firstLines(data, 12), firstLines(want, 12))
		}
	}
}

// openResults opens the example's result table for reading.
func openResults(t *testing.T, spec *specs.Pipeline) (*sql.DB, string) {
	if d := spec.Sink.DuckDB; d != nil {
		db, err := sinks.OpenDuckDB(spec.Resolve(d.Database))
		if err != nil {
			t.Fatal(err)
		}
		return db, specs.QuoteIdent(d.Table)
	}
	db, err := sinks.OpenDuckDB("")
	if err != nil {
		t.Fatal(err)
	}
	return db, "read_parquet(" + specs.QuoteLiteral(spec.Resolve(spec.Sink.Parquet.Path)) + ")"
}

// unstableColumns change from run to run: ids and times.
var unstableColumns = map[string]bool{"run_id": true, "created_at": true, "finished_at": true}

// describeResults renders the expectation files of a result table.
func describeResults(t *testing.T, db *sql.DB, from string) map[string][]byte {
	// Schema: every column and its type, in order.
	rows, err := db.Query("DESCRIBE SELECT * FROM " + from)
	if err != nil {
		t.Fatal(err)
	}
	var schema bytes.Buffer
	var stable []string
	for rows.Next() {
		var name, typ string
		var null, key, def, extra sql.NullString
		if err := rows.Scan(&name, &typ, &null, &key, &def, &extra); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&schema, "%s %s\n", name, typ)
		if !unstableColumns[name] {
			stable = append(stable, specs.QuoteIdent(name))
		}
	}
	rows.Close()

	// The stable projection, one JSON object per row in key order.
	proj := "SELECT to_json(t)::VARCHAR FROM (SELECT " + strings.Join(stable, ", ") + " FROM " + from +
		") t ORDER BY " + stable[0]
	rows, err = db.Query(proj)
	if err != nil {
		t.Fatal(err)
	}
	var all, head bytes.Buffer
	n := 0
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		all.WriteString(line + "\n")
		if n < 10 {
			head.WriteString(line + "\n")
		}
		n++
	}
	rows.Close()
	sum := sha256.Sum256(all.Bytes())

	var statuses string
	if err := db.QueryRow("SELECT string_agg(status || ' ' || n, ', ' ORDER BY status) FROM " +
		"(SELECT status, count(*) AS n FROM " + from + " GROUP BY status)").Scan(&statuses); err != nil {
		t.Fatal(err)
	}
	summary, _ := json.MarshalIndent(map[string]any{
		"rows": n, "statuses": statuses, "stable_projection_sha256": hex.EncodeToString(sum[:]),
	}, "", "  ")
	return map[string][]byte{
		"schema.txt": schema.Bytes(), "summary.json": append(summary, '\n'), "rows.jsonl": head.Bytes(),
	}
}

// copyTree copies the regular files under src into dst, leaving out what
// earlier runs of the examples left behind.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			if d.Name() == "out" || d.Name() == ".taskpipe" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// captureStdout runs fn with standard output captured.
func captureStdout(t *testing.T, fn func() error) []byte {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		done <- b
	}()
	runErr := fn()
	os.Stdout = saved
	w.Close()
	out := <-done
	if runErr != nil {
		t.Fatalf("run: %v (output %s)", runErr, out)
	}
	return out
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func firstLines(b []byte, n int) string {
	lines := strings.SplitN(string(b), "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
