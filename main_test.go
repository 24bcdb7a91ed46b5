package main

import (
	"bytes"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestJoinNegativeValues(t *testing.T) {
	got := joinNegativeValues([]string{"run", "p.yaml", "--max-failed", "-3", "--limit", "5",
		"--max-cost", "-0.5", "--timeout", "-1s", "--json", "--url=-1", "-"})
	want := []string{"run", "p.yaml", "--max-failed=-3", "--limit", "5", "--max-cost=-0.5",
		"--timeout=-1s", "--json", "--url=-1", "-"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestMain_UsageErrorsGoToStderr checks that a parse error leaves standard
// output empty and that a negative value meets the command's own check.
func TestMain_UsageErrorsGoToStderr(t *testing.T) {
	bin := binary(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "p.yaml", "--bogus"}, "Usage: taskpipe run"},
		{[]string{"run", "p.yaml", "--bogus"}, "taskpipe: unknown flag --bogus"},
		{[]string{"run", "p.yaml", "--max-failed", "-3"},
			"taskpipe: run: --limit, --max-failed and --max-cost must not be negative"},
	} {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(bin, tc.args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitUsage {
			t.Errorf("%q: %v, want exit code %d", tc.args, err, exitUsage)
		}
		if stdout.Len() != 0 {
			t.Errorf("%q: standard output %q, want it empty", tc.args, stdout.String())
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%q: standard error %q, want %q", tc.args, stderr.String(), tc.want)
		}
	}
}
