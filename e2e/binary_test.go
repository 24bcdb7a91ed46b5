package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir holds the binary built for this test process.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "taskpipe-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// taskpipeBinary builds the taskpipe binary from the module root once per
// test process and returns its path. It skips the test when the go
// command is not on PATH.
func taskpipeBinary(t *testing.T) string {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("skipping: go is not on PATH, so the taskpipe binary cannot be built")
	}
	buildOnce.Do(func() {
		var out []byte
		out, buildErr = exec.Command(goCmd, "env", "GOMOD").Output()
		gomod := strings.TrimSpace(string(out))
		if buildErr != nil || gomod == "" || gomod == os.DevNull {
			buildErr = fmt.Errorf("find the module root: %q, %v", gomod, buildErr)
			return
		}
		binPath = filepath.Join(binDir, "taskpipe")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command(goCmd, append(args, ".")...)
		cmd.Dir = filepath.Dir(gomod)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// serverProcess is a running `taskpipe serve`.
type serverProcess struct {
	cmd     *exec.Cmd
	URL     string
	logPath string
	exited  chan struct{}
	waitErr error
}

// startServer starts `taskpipe serve` on a free port of 127.0.0.1 with the
// extra arguments and waits until it is ready. The process is killed at
// the end of the test if it still runs. Its log goes to a file in dir.
func startServer(t *testing.T, bin, dir string, args ...string) *serverProcess {
	t.Helper()
	logFile, err := os.CreateTemp(dir, "serve-*.log")
	if err != nil {
		t.Fatal(err)
	}
	all := append([]string{"--log-format", "json", "serve", "--addr", "127.0.0.1:0"}, args...)
	cmd := exec.Command(bin, all...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), "TASKPIPE_API_KEYS=") // only what args configure
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProcess{cmd: cmd, logPath: logFile.Name(), exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.logPath)
			t.Logf("server log %s (last 4 KiB):\n%s", p.logPath, tail(b, 4096))
		}
	})

	// Wait for the listening line, then for readiness.
	deadline := time.Now().Add(60 * time.Second)
	for p.URL == "" {
		if time.Now().After(deadline) {
			t.Fatalf("taskpipe serve did not log its address within a minute")
		}
		select {
		case <-p.exited:
			b, _ := os.ReadFile(p.logPath)
			t.Fatalf("taskpipe serve exited at start (%v):\n%s", p.waitErr, b)
		case <-time.After(10 * time.Millisecond):
		}
		p.URL = listeningURL(p.logPath)
	}
	for {
		resp, err := http.Get(p.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("taskpipe serve at %s not ready within a minute: %v", p.URL, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// listeningURL returns the URL from the server's "listening" log line, or
// "" when it is not logged yet.
func listeningURL(logPath string) string {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return ""
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		var rec struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(line, &rec) == nil && rec.Msg == "listening" && rec.Addr != "" {
			return "http://" + rec.Addr
		}
	}
	return ""
}

// kill ends the server with SIGKILL, as a crash would, and waits for it.
func (p *serverProcess) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exited
}

// stop ends the server with SIGTERM and checks that it exits cleanly.
func (p *serverProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(60 * time.Second):
		t.Fatal("taskpipe serve did not stop within a minute of SIGTERM")
	}
	if p.waitErr != nil {
		t.Fatalf("taskpipe serve exited with %v after SIGTERM", p.waitErr)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// sseEvent is one event of a stream as it came over the wire.
type sseEvent struct {
	Name string // the event: line
	Data string // the data: line, verbatim
	// Decoded parts of Data.
	Type    string `json:"type"`
	EventID string `json:"event_id"`
	Run     struct {
		RunID      string `json:"run_id"`
		Status     string `json:"status"`
		ModifiedAt string `json:"modified_at"`
	} `json:"run"`
	Status struct {
		NumTaskRuns int64            `json:"num_task_runs"`
		Counts      map[string]int64 `json:"task_run_status_counts"`
		IsActive    bool             `json:"is_active"`
	} `json:"status"`
}

// readStream GETs an SSE endpoint and calls fn with each complete event,
// in order, until the stream ends, fn returns false or ctx is done. A
// frame cut short by a dropped connection is not delivered. It returns the
// error that ended the stream (nil for a normal end).
func readStream(ctx context.Context, url string, fn func(ev sseEvent) bool) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b.String())
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	var cur sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event: "):
			cur.Name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.Data = strings.TrimPrefix(line, "data: ")
		case line == "" && cur.Data != "":
			ev := cur
			cur = sseEvent{}
			if err := json.Unmarshal([]byte(ev.Data), &ev); err != nil {
				return fmt.Errorf("decode event %q: %w", ev.Data, err)
			}
			if !fn(ev) {
				return nil
			}
		case line == "":
		default:
			return fmt.Errorf("unexpected stream line %q", line)
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
