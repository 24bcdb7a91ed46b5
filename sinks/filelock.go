package sinks

import (
	"context"
	"database/sql"
	"strings"
	"time"
)

// Sharing a database file with other processes. DuckDB lets one process
// hold a file for writing, or any number hold it read-only, never both. A
// sink that owns its file releases it between writes (see
// DefaultReleaseIdle and DefaultMaxHold) and waits for readers to let go
// before it writes again; readers such as `taskpipe sql` wait for a
// moment the sink has released it.

// IsLockConflict reports whether err is DuckDB refusing to open a database
// file that another process holds.
func IsLockConflict(err error) bool {
	return err != nil && strings.Contains(err.Error(), "Could not set lock on file")
}

// lockPoll bounds the wait between two attempts to open a held file: well
// under DefaultReleaseGap, so a waiting reader does not miss a release.
const lockPoll = 40 * time.Millisecond

// OpenWhenFree opens a database file with open, trying again while another
// process holds it, until it opens, fails otherwise or ctx ends. waiting,
// unless nil, is told how long it has waited after the first second and
// every ten seconds after that.
func OpenWhenFree(ctx context.Context, open func() (*sql.DB, error),
	waiting func(time.Duration)) (*sql.DB, error) {
	start := time.Now()
	delay, tell := 5*time.Millisecond, time.Second
	for {
		db, err := open()
		if !IsLockConflict(err) {
			return db, err
		}
		if waited := time.Since(start); waiting != nil && waited >= tell {
			tell = waited + 10*time.Second
			waiting(waited)
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(delay):
		}
		delay = min(2*delay, lockPoll)
	}
}
