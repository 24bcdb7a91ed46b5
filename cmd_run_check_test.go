package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/taskpipe/taskpipe/pipeline"
	"github.com/taskpipe/taskpipe/sources/sourcetest"
)

// checkFixture writes a pipeline p1m.yaml over Parquet files in/0/,
// in/1/, ..., one per SELECT of files, whose spec is spec with SOURCE
// replaced by the glob of the files.
func checkFixture(t *testing.T, spec string, files ...string) string {
	t.Helper()
	dir := t.TempDir()
	for i, q := range files {
		sub := filepath.Join(dir, "in", fmt.Sprint(i))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		sourcetest.WriteParquet(t, sub, q)
	}
	path := filepath.Join(dir, "p1m.yaml")
	write(t, path, strings.ReplaceAll(spec, "SOURCE", "in/*/data.parquet"))
	return path
}

const checkSpec = `version: 1
source: {parquet: ["SOURCE"]}
key: [k]
mapping: {name: name}
task:
  processor: synthetic
  output_schema: a short report
target: {state_dir: state}
sink:
  duckdb: {database: out/results.duckdb, table: results}
  parquet: {path: out/results.parquet}
`

// runExitCode runs cmd in-process and returns its error and exit code.
func runExitCode(cmd *runCmd) (error, int) {
	err := captureRun(cmd)
	var ec *exitCodeError
	switch {
	case err == nil:
		return nil, 0
	case errors.As(err, &ec):
		return err, ec.code
	}
	return err, exitError
}

// captureRun runs cmd with its standard output discarded.
func captureRun(cmd *runCmd) error {
	saved := os.Stdout
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devNull.Close()
	os.Stdout = devNull
	defer func() { os.Stdout = saved }()
	return cmd.Run(&CLI{}, quietLogger())
}

func TestRun_RefusedSpecCreatesNothing(t *testing.T) {
	two := []string{"SELECT 'a' AS k, 'alice' AS name", "SELECT 'b' AS k, 'bob' AS name"}
	cases := []struct {
		name    string
		from    string
		to      string
		files   []string
		wantErr string
	}{
		{"key column the source lacks", "key: [k]", "key: [nosuchcol]", two,
			`run: invalid pipeline: key: source has no column "nosuchcol" (it has k, name)`},
		{"mapped column the source lacks", "mapping: {name: name}", "mapping: {name: nosuchcol}", two,
			`run: invalid pipeline: mapping.name: source has no column "nosuchcol" (it has k, name)`},
		{"column typed differently in two files", "", "",
			[]string{"SELECT 'a' AS k, 'alice' AS name", "SELECT 'b' AS k, {'first': 'bob'} AS name"},
			`run: invalid pipeline: describe source: parquet source: column "name" is VARCHAR in`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := checkFixture(t, strings.Replace(checkSpec, tc.from, tc.to, 1), tc.files...)
			err, code := runExitCode(&runCmd{Pipeline: path, Progress: "none"})
			if code != exitUsage || !strings.HasPrefix(fmt.Sprint(err), tc.wantErr) {
				t.Errorf("run: exit %d, %v; want exit %d and an error starting %s", code, err, exitUsage, tc.wantErr)
			}
			for _, left := range []string{"state", "out"} {
				if _, err := os.Stat(filepath.Join(filepath.Dir(path), left)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s exists after a refused spec (%v)", left, err)
				}
			}
		})
	}
}

func TestRun_StateDirNotUsable(t *testing.T) {
	rows := []string{"SELECT 'a' AS k, 'alice' AS name"}

	// A file where the state directory should be: it cannot be created.
	path := checkFixture(t, strings.Replace(checkSpec, "state_dir: state", "state_dir: blocker/state", 1), rows...)
	write(t, filepath.Join(filepath.Dir(path), "blocker"), "a file, not a folder")
	err, code := runExitCode(&runCmd{Pipeline: path, Progress: "none"})
	if code != exitUsage || !strings.HasPrefix(fmt.Sprint(err), "run: target.state_dir: create state dir: ") {
		t.Errorf("state dir under a file: exit %d, %v; want exit %d naming target.state_dir", code, err, exitUsage)
	}

	// A state directory that may not be written to.
	if os.Geteuid() == 0 {
		t.Log("skipping the read-only state directory: root may write to it")
		return
	}
	path = checkFixture(t, checkSpec, rows...)
	state := filepath.Join(filepath.Dir(path), "state")
	if err := os.Mkdir(state, 0o555); err != nil {
		t.Fatal(err)
	}
	err, code = runExitCode(&runCmd{Pipeline: path, Progress: "none"})
	if code != exitUsage || !strings.Contains(fmt.Sprint(err), "target.state_dir") ||
		!errors.Is(err, fs.ErrPermission) {
		t.Errorf("read-only state dir: exit %d, %v; want exit %d naming target.state_dir", code, err, exitUsage)
	}
}

func TestStateDirError(t *testing.T) {
	cases := []struct {
		name     string
		err      error
		wantCode int
		want     string
	}{
		{"permission denied", fmt.Errorf("open state lock: %w",
			&fs.PathError{Op: "open", Path: "/s/lock", Err: syscall.EACCES}), exitUsage,
			"run: target.state_dir: open state lock: open /s/lock: permission denied"},
		{"read-only file system", fmt.Errorf("create state dir: %w",
			&fs.PathError{Op: "mkdir", Path: "/s", Err: syscall.EROFS}), exitUsage,
			"run: target.state_dir: create state dir: mkdir /s: read-only file system"},
		{"in use", fmt.Errorf("lock /s: %w", pipeline.ErrStateLocked), exitError,
			"run: lock /s: " + pipeline.ErrStateLocked.Error()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := stateDirError(tc.err)
			code := exitError
			var ec *exitCodeError
			if errors.As(err, &ec) {
				code = ec.code
			}
			if code != tc.wantCode || err.Error() != tc.want || !errors.Is(err, tc.err) {
				t.Errorf("stateDirError = exit %d, %q; want exit %d, %q", code, err, tc.wantCode, tc.want)
			}
		})
	}
}
