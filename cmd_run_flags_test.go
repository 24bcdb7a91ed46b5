package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// TestRun_NoWaitIgnoresEarlierFailures runs a pipeline whose rows partly
// fail (exit 3), then submits again with --no-wait: the submission went
// well, so it exits 0 and prints the group id; --max-failed is wait's job.
func TestRun_NoWaitIgnoresEarlierFailures(t *testing.T) {
	f := newResumeFixture(t, 100, "", 0.3)
	run := func(c runCmd) error {
		c.Pipeline, c.Processors, c.Progress = f.spec, f.processors, "none"
		return c.Run(&CLI{}, quietLogger())
	}
	var ec *exitCodeError
	var failedRun error
	out := captureStdout(t, func() error { failedRun = run(runCmd{JSON: true}); return nil })
	if !errors.As(failedRun, &ec) || ec.code != exitFailedRows {
		t.Fatalf("first run: %v (output %s), want exit code %d", failedRun, out, exitFailedRows)
	}
	out = captureStdout(t, func() error { return run(runCmd{NoWait: true}) })
	if group := strings.TrimSpace(string(out)); !strings.HasPrefix(group, "tgrp_") {
		t.Errorf("--no-wait printed %q, want the group id", out)
	}
}

// TestRun_HelpNamesWhatRetryFailedRetries checks the --retry-failed help
// against the statuses a retry submits again (pipeline keepState).
func TestRun_HelpNamesWhatRetryFailedRetries(t *testing.T) {
	var cli CLI
	var help bytes.Buffer
	parser, err := kong.New(&cli, kong.Name("taskpipe"), kong.Writers(&help, &help),
		kong.Exit(func(int) {}))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = parser.Parse([]string{"run", "--help"})
	text := strings.Join(strings.Fields(help.String()), " ")
	want := "--retry-failed Submit again the rows whose runs failed, were cancelled or gave an invalid output."
	if !strings.Contains(text, want) {
		t.Errorf("run --help:\n%s\nwant %q", help.String(), want)
	}
}
