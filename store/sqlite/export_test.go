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
