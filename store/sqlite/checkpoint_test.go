package sqlite_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
	"github.com/taskpipe/taskpipe/store/sqlite"
)

// openGroup opens a store at path with one group g1 holding n queued runs.
func openGroup(t *testing.T, path string, n int, opts ...sqlite.Option) *sqlite.Store {
	t.Helper()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.CreateGroup(ctx, store.Group{ID: "g1"}); err != nil {
		t.Fatal(err)
	}
	runs := make([]store.Run, n)
	for i := range runs {
		runs[i] = store.Run{ID: fmt.Sprintf("r%d", i), Processor: "lite"}
	}
	if _, err := s.AddRuns(ctx, "g1", runs, nil); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCheckpoint_KeepsClaimedRunsRemembered checks that checkpoints, which
// the store runs in the background, do not make the writer forget the runs
// it claimed (as a commit by another connection would).
func TestCheckpoint_KeepsClaimedRunsRemembered(t *testing.T) {
	ctx := context.Background()
	s := openGroup(t, filepath.Join(t.TempDir(), "taskpipe.db"), 10,
		sqlite.WithCheckpointInterval(time.Hour))
	now := time.Now()
	runs, err := s.ClaimRuns(ctx, store.Claim{Processor: "lite", Node: "n1", Limit: 10, Now: now,
		LeaseUntil: now.Add(time.Minute)})
	if err != nil || len(runs) != 10 {
		t.Fatalf("ClaimRuns = %d runs, %v", len(runs), err)
	}
	if s.WALSize() == 0 {
		t.Fatal("WAL is empty after writes")
	}
	if !s.Checkpoint() {
		t.Fatal("truncating checkpoint of an idle store failed")
	}
	if n := s.WALSize(); n != 0 {
		t.Errorf("WAL size after truncation = %d, want 0", n)
	}

	// The next write transaction still knows the claimed runs.
	if err := s.ExtendLeases(ctx, "n1", []string{"r0"}, now.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if n := s.Remembered(); n != 10 {
		t.Errorf("remembered runs after checkpoints = %d, want 10", n)
	}
	res, err := s.FinishRuns(ctx, []store.Finish{{RunID: "r0", Node: "n1",
		Status: api.StatusCompleted, At: now}})
	if err != nil || len(res.Applied) != 1 {
		t.Fatalf("FinishRuns = %d applied, %v", len(res.Applied), err)
	}
}

// TestCheckpoint_TruncatesWhenIdle checks that the background loop empties
// the WAL once the store is left alone, and that Close leaves no WAL.
func TestCheckpoint_TruncatesWhenIdle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "taskpipe.db")
	s := openGroup(t, path, 500, sqlite.WithCheckpointInterval(10*time.Millisecond))
	for deadline := time.Now().Add(10 * time.Second); s.WALSize() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("WAL still holds %d bytes after 10 s idle", s.WALSize())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() != 0 {
		t.Errorf("WAL after Close = %d bytes, want none", fi.Size())
	}
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if g, err := s.GetGroup(context.Background(), "g1"); err != nil || g.NumRuns != 500 {
		t.Errorf("reopened group = %d runs, %v; want 500", g.NumRuns, err)
	}
}

// crashChildEnv names the database a child process of
// TestStore_KeepsCommitsAcrossKill writes to.
const crashChildEnv = "TASKPIPE_SQLITE_CRASH_CHILD"

// TestStore_KeepsCommitsAcrossKill kills a process right after its store
// committed (with no checkpoint since) and checks that every committed
// transaction is there when the file is opened again.
func TestStore_KeepsCommitsAcrossKill(t *testing.T) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		return
	}
	path := filepath.Join(t.TempDir(), "taskpipe.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestStore_KeepsCommitsAcrossKill$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	// Wait for the child to report its commits, then kill it.
	sc := bufio.NewScanner(out)
	committed := false
	for sc.Scan() {
		if sc.Text() == "committed" {
			committed = true
			break
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if !committed {
		t.Fatal("child did not report its commits")
	}

	// The reopened file holds all 20 batches and the finished runs.
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	g, err := s.GetGroup(ctx, "g1")
	if err != nil {
		t.Fatal(err)
	}
	if g.NumRuns != 2000 || g.Counts[api.StatusCompleted] != 100 {
		t.Errorf("group after kill = %d runs, counts %v; want 2000 with 100 completed",
			g.NumRuns, g.Counts)
	}
	if r, err := s.GetRun(ctx, "b19-99"); err != nil || r.Status != api.StatusCompleted {
		t.Errorf("last finished run = %s, %v; want completed", r.Status, err)
	}
}

// crashChild commits 20 batches of 100 runs, finishing the last batch,
// with background checkpoints held off, says so and waits to be killed.
func crashChild(path string) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path, sqlite.WithCheckpointInterval(time.Hour))
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	fail := func(err error) {
		fmt.Println("write:", err)
		os.Exit(2)
	}
	if err := s.CreateGroup(ctx, store.Group{ID: "g1"}); err != nil {
		fail(err)
	}
	var last []store.Finish
	for b := 0; b < 20; b++ {
		runs := make([]store.Run, 100)
		last = last[:0]
		for i := range runs {
			runs[i] = store.Run{ID: fmt.Sprintf("b%d-%d", b, i), Processor: "lite",
				Status: api.StatusRunning, LeaseOwner: "n1", LeaseUntil: time.Now().Add(time.Hour)}
			last = append(last, store.Finish{RunID: runs[i].ID, Node: "n1",
				Status: api.StatusCompleted})
		}
		if _, err := s.AddRuns(ctx, "g1", runs, nil); err != nil {
			fail(err)
		}
	}
	if _, err := s.FinishRuns(ctx, last); err != nil {
		fail(err)
	}
	fmt.Println("committed")
	time.Sleep(time.Minute) // the parent kills the process long before
	os.Exit(3)
}
