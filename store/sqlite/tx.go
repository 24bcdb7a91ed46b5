package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// errClosed is returned by methods called after Close.
var errClosed = errors.New("store closed")

// wtx is a write transaction on the store's single write connection. Only
// the goroutine holding the write slot uses it.
type wtx struct {
	ctx context.Context
	s   *Store
}

// write runs fn in one IMMEDIATE transaction and commits it when fn returns
// nil. Transactions queue in Go for the write slot, so they never meet
// SQLITE_BUSY from each other.
func (s *Store) write(ctx context.Context, fn func(tx *wtx) error) (err error) {
	// Take the write slot, unless the caller gives up or the store closes.
	select {
	case <-s.closed:
		return errClosed
	default:
	}
	select {
	case s.writeSlot <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closed:
		return errClosed
	}
	defer func() { <-s.writeSlot }()
	select {
	case <-s.closed:
		return errClosed
	default:
	}

	// Begin, run fn, then commit or roll back whatever happened. COMMIT and
	// ROLLBACK ignore cancellation so the connection never stays mid-way.
	quiet := context.WithoutCancel(ctx)
	if _, err := s.w.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	tx := &wtx{ctx: ctx, s: s}
	err = tx.checkVersion()
	if err == nil {
		err = fn(tx)
	}
	if err != nil {
		s.active.reset()
		if _, rerr := s.w.ExecContext(quiet, "ROLLBACK"); rerr != nil {
			return errors.Join(err, fmt.Errorf("roll back: %w", rerr))
		}
		return err
	}
	if _, err := s.w.ExecContext(quiet, "COMMIT"); err != nil {
		s.active.reset()
		_, _ = s.w.ExecContext(quiet, "ROLLBACK")
		return fmt.Errorf("commit: %w", err)
	}
	if s.ckpt != nil {
		s.ckpt.committed()
	}
	return nil
}

// stmt returns query prepared on the write connection, preparing it on
// first use.
func (tx *wtx) stmt(query string) (*sql.Stmt, error) {
	if st, ok := tx.s.wstmts[query]; ok {
		return st, nil
	}
	st, err := tx.s.w.PrepareContext(tx.ctx, query)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	tx.s.wstmts[query] = st
	return st, nil
}

// exec runs a prepared statement and returns the rows it changed.
func (tx *wtx) exec(query string, args ...any) (int64, error) {
	st, err := tx.stmt(query)
	if err != nil {
		return 0, err
	}
	res, err := st.ExecContext(tx.ctx, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// query runs a prepared statement that returns rows.
func (tx *wtx) query(query string, args ...any) (*sql.Rows, error) {
	st, err := tx.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(tx.ctx, args...)
}
