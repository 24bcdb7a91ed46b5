package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Checkpoint thresholds. A checkpoint runs early once the WAL file grows
// past walSoftLimit; a reset WAL file larger than walSizeLimit is cut back
// to it; a checkpoint that finds more than walHardLimit in the WAL waits
// longer for readers so that it can reset it.
const (
	walSoftLimit = 32 << 20
	walSizeLimit = 64 << 20
	walHardLimit = 128 << 20
)

// How long a checkpoint holding the write slot waits for readers of the
// WAL: resetWait in the usual cycle, truncateWait when idle, closing or
// over walHardLimit.
const (
	resetWait    = 20 * time.Millisecond
	truncateWait = 200 * time.Millisecond
)

// checkpointer copies the WAL back into the database file in the background,
// so that commits on the write connection (where SQLite's auto-checkpoint
// would run them) never wait for most page copies and fsyncs. Every
// interval in which something was committed, or sooner once the WAL file
// grows past walSoftLimit, it runs a cycle:
//
//  1. A passive checkpoint on its own connection copies what was committed
//     so far, fsyncs and never blocks the writer.
//  2. Then, holding the write slot, a restarting checkpoint on the write
//     connection copies the few pages committed meanwhile and resets the
//     WAL, so that the next commits overwrite its start instead of growing
//     the file. A passive checkpoint alone cannot reset it while commits
//     keep coming. Running it on the write connection keeps the writer's
//     page cache and claimed-run cache valid, which a reset made through
//     another connection would not.
//
// After a whole interval without commits it truncates the WAL file.
type checkpointer struct {
	s        *Store
	db       *sql.DB // one connection, for passive checkpoints
	walPath  string
	every    time.Duration
	pageSize int64
	log      *slog.Logger

	kick chan struct{} // a commit happened; capacity one
	stop chan struct{}
	done chan struct{}
}

// startCheckpointer opens the checkpoint connection and starts the loop.
func (s *Store) startCheckpointer(ctx context.Context, cfg config) error {
	db := OpenDB(s.path, fmt.Sprintf("busy_timeout = %d", truncateWait.Milliseconds()))
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	var pageSize int64
	if err := db.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&pageSize); err != nil {
		db.Close()
		return fmt.Errorf("read page size: %w", err)
	}
	s.ckpt = &checkpointer{s: s, db: db, walPath: s.path + "-wal", every: cfg.checkpointEvery,
		pageSize: pageSize, log: cfg.log, kick: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go s.ckpt.run()
	return nil
}

// committed tells the checkpointer that the writer committed; it never
// blocks.
func (c *checkpointer) committed() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// close stops the loop and closes the checkpoint connection.
func (c *checkpointer) close() error {
	close(c.stop)
	<-c.done
	return c.db.Close()
}

// run is the checkpointer's loop, until stop is closed.
func (c *checkpointer) run() {
	defer close(c.done)
	tick := time.NewTicker(c.every)
	defer tick.Stop()
	var (
		dirty     bool      // commits since the last passive checkpoint
		idle      bool      // nothing committed for a whole interval
		truncated bool      // the WAL was truncated since the last commit
		lastLook  time.Time // when the WAL size was last read
		lastSize  int64     // the WAL size then
	)
	for {
		select {
		case <-c.stop:
			return
		case <-c.kick:
			// A commit: checkpoint early if the WAL grew past the soft
			// limit, looking at its size at most ten times an interval.
			dirty, idle, truncated = true, false, false
			if time.Since(lastLook) < c.every/10 {
				continue
			}
			lastLook = time.Now()
			size := c.walSize()
			if size >= walSoftLimit && size > lastSize {
				c.cycle()
				dirty = false
			}
			lastSize = size
		case <-tick.C:
			// Every interval: checkpoint what was committed, or truncate
			// the WAL once nothing was committed for a whole interval.
			switch {
			case dirty:
				c.cycle()
				dirty = false
			case !idle:
				idle = true
			case !truncated:
				truncated = c.truncate()
				lastSize = 0
			}
		}
	}
}

// resetResidual is how much of the WAL may be left to copy, while holding
// the write slot, when the WAL is reset; passive passes run until less
// than that was committed during the previous one.
const (
	resetResidual = 1 << 20
	maxPasses     = 4
)

// cycle checkpoints the WAL in two steps, as the type's comment says.
func (c *checkpointer) cycle() {
	ctx := context.Background()

	// Copy passively until what was committed meanwhile is small.
	var prev, frames int64
	for pass := 0; pass < maxPasses; pass++ {
		var busy, copied int64
		err := c.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).
			Scan(&busy, &frames, &copied)
		if err != nil {
			c.log.Warn("checkpoint wal", "mode", "passive", "error", err)
			return
		}
		if frames == 0 {
			return
		}
		if copied < frames {
			// A reader holds an older snapshot: the reset would wait for it.
			return
		}
		if frames > prev && (frames-prev)*c.pageSize < resetResidual {
			break
		}
		prev = frames
	}

	// Then reset it in the write slot, copying what is left.
	wait := resetWait
	if frames*c.pageSize >= walHardLimit {
		wait = truncateWait
	}
	select {
	case c.s.writeSlot <- struct{}{}:
	case <-c.stop:
		return
	}
	defer func() { <-c.s.writeSlot }()
	if err := c.s.checkpointWrite(ctx, "RESTART", wait); err != nil {
		c.log.Debug("checkpoint wal", "mode", "restart", "frames", frames, "error", err)
	}
}

// truncate empties the WAL file if the writer is free, reporting whether
// it did. Readers still using the WAL make it give up after truncateWait.
func (c *checkpointer) truncate() bool {
	select {
	case c.s.writeSlot <- struct{}{}:
	default:
		return false
	}
	defer func() { <-c.s.writeSlot }()
	err := c.s.checkpointWrite(context.Background(), "TRUNCATE", truncateWait)
	if err != nil {
		c.log.Debug("checkpoint wal", "mode", "truncate", "error", err)
		return false
	}
	return true
}

// walSize returns the size of the WAL file, 0 when it is missing.
func (c *checkpointer) walSize() int64 {
	fi, err := os.Stat(c.walPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// checkpointWrite runs a checkpoint in mode (RESTART or TRUNCATE) on the
// write connection; the caller holds the write slot. It waits for readers
// at most wait and fails when the checkpoint could not finish.
func (s *Store) checkpointWrite(ctx context.Context, mode string, wait time.Duration) error {
	if _, err := s.w.ExecContext(ctx, fmt.Sprintf(`PRAGMA busy_timeout = %d`,
		wait.Milliseconds())); err != nil {
		return fmt.Errorf("shorten busy timeout: %w", err)
	}
	var busy, frames, copied int64
	err := s.w.QueryRowContext(ctx, `PRAGMA wal_checkpoint(`+mode+`)`).Scan(&busy, &frames, &copied)
	if _, rerr := s.w.ExecContext(ctx, fmt.Sprintf(`PRAGMA busy_timeout = %d`,
		s.busyTimeout.Milliseconds())); rerr != nil && err == nil {
		err = fmt.Errorf("restore busy timeout: %w", rerr)
	}
	if err != nil {
		return err
	}
	if busy != 0 {
		return fmt.Errorf("wal in use: %d of %d frames copied", copied, frames)
	}
	return nil
}
