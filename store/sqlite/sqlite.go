// Package sqlite is the embedded store.Store: one SQLite file in WAL mode,
// written through a single connection that Go serialises and read through a
// small pool of read-only connections.
//
// Every write method is one IMMEDIATE transaction on the write connection,
// built from reused prepared statements, so that counters, cursors, events
// and outbox entries change together with the runs they describe. Commits
// do not checkpoint the WAL: a background checkpointer does (checkpoint.go).
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/taskpipe/taskpipe/store"
)

var _ store.Store = (*Store)(nil)

// Store is a store.Store kept in one SQLite database file.
type Store struct {
	path string
	// wdb holds the only write connection, w; writeSlot (capacity one)
	// grants it to one transaction at a time, honouring contexts.
	wdb       *sql.DB
	w         *sql.Conn
	writeSlot chan struct{}
	closed    chan struct{}        // closed by Close: no new transactions
	wstmts    map[string]*sql.Stmt // prepared on w, guarded by writeSlot
	// rdb is the pool of read-only connections.
	rdb    *sql.DB
	rstmts sync.Map // query -> *sql.Stmt prepared on rdb

	specs  specCache
	active activeRuns // guarded by writeSlot

	ckpt        *checkpointer
	busyTimeout time.Duration

	closeOnce sync.Once
	closeErr  error
}

// Option adjusts how Open sets up the store.
type Option func(*config)

type config struct {
	readConns       int
	busyTimeout     time.Duration
	cacheKiB        int
	checkpointEvery time.Duration
	log             *slog.Logger
}

// WithReadConns sets how many read connections the pool keeps (default 4).
func WithReadConns(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.readConns = n
		}
	}
}

// WithBusyTimeout sets how long a connection waits for a lock held by
// another process before it reports SQLITE_BUSY (default 5 s). Writers of
// this process never wait on each other's locks: they queue in Go.
func WithBusyTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.busyTimeout = d
		}
	}
}

// WithCacheSize sets the page cache of the write connection in KiB
// (default 64 MiB); each read connection gets a quarter of it.
func WithCacheSize(kib int) Option {
	return func(c *config) {
		if kib > 0 {
			c.cacheKiB = kib
		}
	}
}

// WithCheckpointInterval sets how often the WAL is copied back into the
// database file in the background while the store is written (default
// 500 ms); after a whole interval without writes the WAL is truncated.
func WithCheckpointInterval(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.checkpointEvery = d
		}
	}
}

// WithLogger sets where the store reports background trouble, such as a
// failed checkpoint (default: nowhere).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}

// Open opens (creating if needed) the store in the SQLite file at path,
// switches it to WAL mode and brings its schema up to date. Close releases
// it; the file can be opened again afterwards, by this or another process.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	cfg := config{readConns: 4, busyTimeout: 5 * time.Second, cacheKiB: 64 << 10,
		checkpointEvery: 500 * time.Millisecond,
		log:             slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(&cfg)
	}
	if path == "" || strings.HasPrefix(path, ":memory:") || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("open store: path %q must name a file (no ? or #)", path)
	}

	// Open the write connection first: it sets WAL mode and the schema.
	s := &Store{path: path, writeSlot: make(chan struct{}, 1),
		closed: make(chan struct{}), wstmts: map[string]*sql.Stmt{},
		busyTimeout: cfg.busyTimeout}
	s.specs.init(4096)
	s.active.reset()
	var err error
	s.wdb = OpenDB(path, pragmas(cfg, false)...)
	s.wdb.SetMaxOpenConns(1)
	s.wdb.SetMaxIdleConns(1)
	s.wdb.SetConnMaxLifetime(0)
	s.w, err = s.wdb.Conn(ctx)
	if err != nil {
		s.wdb.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := s.migrate(ctx); err != nil {
		s.w.Close()
		s.wdb.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}

	// Then the read pool, which only ever sees committed data.
	s.rdb = OpenDB(path, pragmas(cfg, true)...)
	s.rdb.SetMaxOpenConns(cfg.readConns)
	s.rdb.SetMaxIdleConns(cfg.readConns)
	if err := s.rdb.PingContext(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}

	// Last, the background checkpoints that keep the WAL short.
	if err := s.startCheckpointer(ctx, cfg); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

// pragmas are the settings of one kind of connection.
func pragmas(cfg config, readOnly bool) []string {
	p := []string{
		fmt.Sprintf("busy_timeout = %d", cfg.busyTimeout.Milliseconds()),
		"foreign_keys = 0",
		"temp_store = MEMORY",
	}
	if readOnly {
		return append(p, fmt.Sprintf("cache_size = -%d", cfg.cacheKiB/4), "query_only = 1")
	}
	// WAL mode with synchronous NORMAL keeps every committed transaction
	// across a crash of the process (not of the machine). The
	// checkpointer, not each commit, copies the WAL back.
	return append(p, fmt.Sprintf("cache_size = -%d", cfg.cacheKiB),
		"journal_mode = WAL", "synchronous = NORMAL", "wal_autocheckpoint = 0",
		fmt.Sprintf("journal_size_limit = %d", walSizeLimit))
}

// Path returns the database file the store was opened on.
func (s *Store) Path() string { return s.path }

// Close stops the background checkpoints, waits for the running write
// transaction, truncates the WAL when no one else uses it, then closes
// every connection. Calling it again returns the first result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		var errs []error
		if s.ckpt != nil {
			errs = append(errs, s.ckpt.close())
		}
		s.writeSlot <- struct{}{}
		if s.ckpt != nil {
			// Another process may still read the WAL; it is then left for
			// the last connection to close.
			if err := s.checkpointWrite(context.Background(), "TRUNCATE", truncateWait); err != nil {
				s.ckpt.log.Debug("checkpoint wal on close", "error", err)
			}
		}
		for _, st := range s.wstmts {
			errs = append(errs, st.Close())
		}
		s.rstmts.Range(func(_, v any) bool {
			errs = append(errs, v.(*sql.Stmt).Close())
			return true
		})
		if s.rdb != nil {
			errs = append(errs, s.rdb.Close())
		}
		errs = append(errs, s.w.Close(), s.wdb.Close())
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// readStmt returns query prepared on the read pool.
func (s *Store) readStmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := s.rstmts.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.rdb.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := s.rstmts.LoadOrStore(query, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}
