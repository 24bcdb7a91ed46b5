package sqlite_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

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
