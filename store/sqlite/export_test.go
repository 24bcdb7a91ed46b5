package sqlite

import "context"

// SchemaVersion is the version the migrations bring a file to.
var SchemaVersion = len(migrations)

// Pragmas reports the journal mode and the recorded schema version, read
// through the read pool.
func (s *Store) Pragmas(ctx context.Context) (mode string, version int, err error) {
	if err := s.rdb.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return "", 0, err
	}
	err = s.rdb.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&version)
	return mode, version, err
}

// Remembered returns how many claimed runs the store remembers.
func (s *Store) Remembered() int {
	s.writeSlot <- struct{}{}
	defer func() { <-s.writeSlot }()
	return len(s.active.m)
}

// Checkpoint runs a checkpoint cycle, then truncates the WAL, as the
// background loop does; it reports whether the truncation happened.
func (s *Store) Checkpoint() bool {
	s.ckpt.cycle()
	return s.ckpt.truncate()
}

// WALSize returns the size of the WAL file.
func (s *Store) WALSize() int64 { return s.ckpt.walSize() }

// Misremember makes the store believe a remembered run is leased to owner,
// without changing the database, as a bug or a missed write would.
func (s *Store) Misremember(runID, owner string) bool {
	s.writeSlot <- struct{}{}
	defer func() { <-s.writeSlot }()
	a, ok := s.active.m[runID]
	if ok {
		a.run.LeaseOwner = owner
		s.active.m[runID] = a
	}
	return ok
}

// Migrations are the schema migrations, oldest first.
var Migrations = migrations
