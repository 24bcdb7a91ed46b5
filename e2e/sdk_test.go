package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sdkFiles are the files of sdk-tests/ the workflow needs; node_modules is
// installed from the lock file into a temp copy, never into the tree.
var sdkFiles = []string{"package.json", "package-lock.json", "workflow.mjs"}

// registryTrouble matches npm failures that mean the registry could not be
// reached, as opposed to a broken lock file or package.
var registryTrouble = regexp.MustCompile(
	`ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|` +
		`network request|socket hang up|request to https?://\S+ failed`)

// sdkSummary is the last line of the workflow script.
var sdkSummary = regexp.MustCompile(`(?m)^sdk workflow: (\d+) passed, (\d+) failed$`)

// TestSDK_Workflow runs Parallel's official TypeScript SDK (npm
// parallel-web, pinned in sdk-tests/package-lock.json) through the Task
// Group workflow of Parallel's documentation against the real binary,
// started with an API keys file.
func TestSDK_Workflow(t *testing.T) {
	t.Parallel()
	node, errNode := exec.LookPath("node")
	npm, errNpm := exec.LookPath("npm")
	if errNode != nil || errNpm != nil {
		t.Skip("skipping: node and npm are needed to run Parallel's TypeScript SDK")
	}
	bin := taskpipeBinary(t)

	// Install the pinned SDK into a copy of sdk-tests.
	src, err := filepath.Abs(filepath.Join("..", "sdk-tests"))
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	for _, name := range sdkFiles {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(work, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, npm, "ci", "--prefer-offline", "--no-audit", "--no-fund",
		"--ignore-scripts")
	install.Dir = work
	if out, err := install.CombinedOutput(); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) || registryTrouble.Match(out) {
			t.Skipf("skipping: npm ci could not reach the registry (%v):\n%s", err, tail(out, 2048))
		}
		t.Fatalf("npm ci: %v\n%s", err, out)
	}

	// Start the server with one key and run the workflow against it.
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	key := "sdk-" + hex.EncodeToString(raw[:])
	keys := filepath.Join(work, "keys.yaml")
	sum := sha256.Sum256([]byte(key))
	keysFile := "keys:\n  - name: sdk\n    key_sha256: " + hex.EncodeToString(sum[:]) + "\n"
	if err := os.WriteFile(keys, []byte(keysFile), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, bin, work, "--db", filepath.Join(work, "taskpipe.db"), "--keys", keys)
	run := exec.CommandContext(ctx, node, "workflow.mjs")
	run.Dir = work
	run.Env = append(os.Environ(), "PARALLEL_BASE_URL="+srv.URL, "PARALLEL_API_KEY="+key,
		"PARALLEL_CUSTOM_HEADERS=")
	out, err := run.CombinedOutput()
	t.Logf("node workflow.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("node workflow.mjs: %v", err)
	}
	m := sdkSummary.FindSubmatch(out)
	if m == nil {
		t.Fatal("the workflow printed no summary line")
	}
	passed, _ := strconv.Atoi(string(m[1]))
	if string(m[2]) != "0" || passed < 14 {
		t.Fatalf("workflow summary %q: want at least 14 passed, 0 failed", m[0])
	}
	if strings.Contains(string(out), "FAIL ") {
		t.Fatal("a check failed")
	}
	srv.stop(t)
}
