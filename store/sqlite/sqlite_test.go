package sqlite_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
	"github.com/taskpipe/taskpipe/store/sqlite"
	"github.com/taskpipe/taskpipe/store/storetest"
)

// TestStore runs the shared suite, each case on its own database file named
// after the subtest, so that a case can close its store and open it again.
func TestStore(t *testing.T) {
	dir := t.TempDir()
	storetest.Run(t, func(t *testing.T) store.Store {
		name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()) + ".db"
		s, err := sqlite.Open(context.Background(), filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("open store: %v", err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("close store: %v", err)
			}
		})
		return s
	})
}

// TestOpen_RejectsNonFilePaths checks that Open refuses paths the read pool
// could not share.
func TestOpen_RejectsNonFilePaths(t *testing.T) {
	for _, path := range []string{"", ":memory:", filepath.Join(t.TempDir(), "a?b.db")} {
		if s, err := sqlite.Open(context.Background(), path); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", path)
		}
	}
}

// TestOpen_WALAndSchemaVersion checks the file is in WAL mode and that
// reopening an up-to-date file keeps the schema version.
func TestOpen_WALAndSchemaVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "taskpipe.db")
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		s, err := sqlite.Open(ctx, path)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		mode, version, err := s.Pragmas(ctx)
		if err != nil {
			t.Fatalf("pragmas: %v", err)
		}
		if mode != "wal" || version != sqlite.SchemaVersion {
			t.Errorf("open %d: journal_mode %q schema version %d, want wal %d", i, mode,
				version, sqlite.SchemaVersion)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second close: %v", err)
		}
		if _, err := s.GetGroup(ctx, "g"); err == nil {
			t.Error("GetGroup after Close succeeded")
		}
		if err := s.CreateGroup(ctx, store.Group{ID: "g"}); err == nil {
			t.Error("CreateGroup after Close succeeded")
		}
	}
}

// TestStore_SecondWriterInvalidatesClaimedRuns checks that a change made
// through another handle on the same file (another process, say) is seen
// by a store finishing runs it claimed: the counters must follow the run's
// real previous status.
func TestStore_SecondWriterInvalidatesClaimedRuns(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "taskpipe.db")
	a, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.CreateGroup(ctx, store.Group{ID: "g"}); err != nil {
		t.Fatal(err)
	}
	runs := []store.Run{{ID: "r1", Processor: "lite"}, {ID: "r2", Processor: "lite"}}
	if _, err := a.AddRuns(ctx, "g", runs, nil); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := a.ClaimRuns(ctx, store.Claim{Processor: "lite", Node: "n1", Limit: 2, Now: now,
		LeaseUntil: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}

	// Another handle cancels r1 while a still remembers it as running.
	b, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.CancelRuns(ctx, "g", []string{"r1"}, now); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	res, err := a.FinishRuns(ctx, []store.Finish{
		{RunID: "r1", Node: "n1", Status: api.StatusCancelled, At: now},
		{RunID: "r2", Node: "n1", Status: api.StatusCompleted, At: now}})
	if err != nil || len(res.Applied) != 2 {
		t.Fatalf("FinishRuns = %d applied, %v; want 2", len(res.Applied), err)
	}
	g, err := a.GetGroup(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	want := map[api.RunStatus]int64{api.StatusCancelled: 1, api.StatusCompleted: 1}
	if len(g.Counts) != 2 || g.Counts[api.StatusCancelled] != 1 || g.Counts[api.StatusCompleted] != 1 {
		t.Errorf("counts = %v, want %v", g.Counts, want)
	}
}

// TestFinishRuns_DatabaseOverridesMemory checks that a batch of remembered
// runs whose update changes fewer rows than expected is undone and applied
// run by run, so that the database, not the claimed-run cache, decides.
func TestFinishRuns_DatabaseOverridesMemory(t *testing.T) {
	ctx := context.Background()
	s := openGroup(t, filepath.Join(t.TempDir(), "taskpipe.db"), 3)
	now := time.Now()
	if _, err := s.ClaimRuns(ctx, store.Claim{Processor: "lite", Node: "n1", Limit: 3, Now: now,
		LeaseUntil: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if !s.Misremember("r1", "n2") {
		t.Fatal("r1 is not remembered after its claim")
	}
	res, err := s.FinishRuns(ctx, []store.Finish{
		{RunID: "r0", Node: "n1", Status: api.StatusCompleted, At: now},
		{RunID: "r1", Node: "n2", Status: api.StatusCompleted, At: now},
		{RunID: "r2", Node: "n1", Status: api.StatusFailed, At: now}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Applied) != 2 || res.Applied[0].ID != "r0" || res.Applied[1].ID != "r2" {
		t.Fatalf("applied = %+v, want r0 and r2", res.Applied)
	}
	if r, err := s.GetRun(ctx, "r1"); err != nil || r.Status != api.StatusRunning ||
		r.LeaseOwner != "n1" {
		t.Errorf("r1 = %s leased to %q, %v; want running for n1", r.Status, r.LeaseOwner, err)
	}
	g, err := s.GetGroup(ctx, "g1")
	if err != nil {
		t.Fatal(err)
	}
	if g.Counts[api.StatusRunning] != 1 || g.Counts[api.StatusCompleted] != 1 ||
		g.Counts[api.StatusFailed] != 1 || g.LastEventSeq != 4 {
		t.Errorf("group = counts %v, last event %d; want 1 running, completed, failed; 4",
			g.Counts, g.LastEventSeq)
	}
}

// TestOpen_MigratesVersion1 opens a file written by schema version 1 and
// checks that its runs' metadata and run state events read as before.
func TestOpen_MigratesVersion1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "taskpipe.db")
	db := sqlite.OpenDB(path)
	for _, q := range []string{
		sqlite.Migrations[0],
		`CREATE TABLE schema_version (version INTEGER NOT NULL)`,
		`INSERT INTO schema_version VALUES (1)`,
		`INSERT INTO groups (id, owner, created_at, modified_at, num_runs, last_run_seq,
			last_event_seq, n_completed) VALUES ('g1', '', 1, 1, 2, 2, 2, 2)`,
		`INSERT INTO runs (id, group_id, seq, owner, processor, status, input, spec_hash,
			created_at, modified_at) VALUES
			('r1', 'g1', 1, '', 'lite', 'completed',
				CAST('{"input":"a","metadata":{"row":1}}' AS BLOB), '', 1, 2),
			('r2', 'g1', 2, '', 'lite', 'completed', CAST('{"input":"b"}' AS BLOB), '', 1, 3)`,
		`INSERT INTO events (group_id, seq, kind, run_id, at) VALUES
			('g1', 1, 'task_run.state', 'r1', 2), ('g1', 2, 'task_run.state', 'r2', 3)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("build version 1 file: %v", err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs, err := s.ListEvents(ctx, "g1", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Run == nil || evs[1].Run == nil {
		t.Fatalf("events after migration = %+v, want two with runs", evs)
	}
	if evs[0].Run.ID != "r1" || string(evs[0].Run.Input) != `{"metadata":{"row":1}}` {
		t.Errorf("r1 in its event = %s input %s", evs[0].Run.ID, evs[0].Run.Input)
	}
	if evs[1].Run.ID != "r2" || evs[1].Run.Input != nil {
		t.Errorf("r2 in its event = %s input %s", evs[1].Run.ID, evs[1].Run.Input)
	}
}
