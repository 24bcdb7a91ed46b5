package pipeline

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// Row states are read and written set-based: a batch of rows travels as
// multi-row VALUES lists or IN lists of bound parameters, up to stmtRows
// rows per statement, all statements of a call in one transaction. The
// statements for a full part are prepared once and reused; only a call's
// last, shorter part prepares its own.

// stmtRows is the most rows bound to one statement (9 parameters each stay
// far below SQLite's limit of 32,766).
const stmtRows = 250

// prepared returns the statement for query, preparing it on first use.
func (s *stateStore) prepared(ctx context.Context, query string) (*sql.Stmt, error) {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if st, ok := s.stmts[query]; ok {
		return st, nil
	}
	st, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	s.stmts[query] = st
	return st, nil
}

// batched runs a statement over n rows in parts of up to stmtRows, in one
// transaction: query(m) is the statement for m rows, run executes it for
// rows lo to hi. The statement of a full part is prepared once, before the
// transaction (the store has one connection, which the transaction holds).
func (s *stateStore) batched(ctx context.Context, n int, query func(m int) string,
	run func(st *sql.Stmt, lo, hi int) error) error {
	var full *sql.Stmt
	if n >= stmtRows {
		var err error
		if full, err = s.prepared(ctx, query(stmtRows)); err != nil {
			return err
		}
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		return parts(n, func(lo, hi int) error {
			var st *sql.Stmt
			var err error
			if hi-lo == stmtRows {
				st = tx.StmtContext(ctx, full)
			} else if st, err = tx.PrepareContext(ctx, query(hi-lo)); err != nil {
				return err
			}
			defer st.Close()
			return run(st, lo, hi)
		})
	})
}

// inTx runs fn in one write transaction.
func (s *stateStore) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// tuples returns n copies of tuple joined by commas: "(?, ?), (?, ?)".
func tuples(tuple string, n int) string {
	return strings.TrimSuffix(strings.Repeat(tuple+", ", n), ", ")
}

// placeholders returns "?, ?, ..." with n marks.
func placeholders(n int) string { return tuples("?", n) }

// parts calls fn for each consecutive part of up to stmtRows of n items.
func parts(n int, fn func(lo, hi int) error) error {
	for lo := 0; lo < n; lo += stmtRows {
		if err := fn(lo, min(lo+stmtRows, n)); err != nil {
			return err
		}
	}
	return nil
}

// lookup returns the rows whose column (key or run_id) is one of values.
func (s *stateStore) lookup(ctx context.Context, column string, values []string) ([]rowState, error) {
	out := make([]rowState, 0, len(values))
	err := parts(len(values), func(lo, hi int) error {
		q := `SELECT ` + rowColumns + ` FROM rows WHERE ` + column + ` IN (` + placeholders(hi-lo) + `)`
		st, err := s.prepared(ctx, q)
		if err != nil {
			return err
		}
		args := make([]any, hi-lo)
		for i, v := range values[lo:hi] {
			args[i] = v
		}
		rs, err := st.QueryContext(ctx, args...)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			r, err := scanRow(rs)
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return rs.Err()
	})
	return out, err
}

// byRunIDs returns the rows served by the given runs, keyed by run id.
func (s *stateStore) byRunIDs(ctx context.Context, ids []string) (map[string]rowState, error) {
	out, err := s.lookup(ctx, "run_id", ids)
	if err != nil {
		return nil, fmt.Errorf("load rows by run: %w", err)
	}
	byRun := make(map[string]rowState, len(out))
	for _, r := range out {
		byRun[r.RunID] = r
	}
	return byRun, nil
}

// upsertRows is the head of an upsert of m rows, each bound by
// appendRowArgs; the caller adds its ON CONFLICT clause.
func upsertRows(m int) string {
	return `INSERT INTO rows (key, key_values, fingerprint, spec_hash, group_id, run_id,
		status, pass, updated_at) VALUES ` + tuples("(?, ?, ?, ?, ?, ?, ?, ?, ?)", m)
}

// appendRowArgs appends the bound values of one row of upsertRows.
func appendRowArgs(args []any, r rowState, runID, status, at string) []any {
	return append(args, r.Key, r.KeyValues, r.Fingerprint, r.SpecHash, r.GroupID,
		runID, status, r.Pass, at)
}

// putRows stores row states (an upsert per key) in one transaction.
func (s *stateStore) putRows(ctx context.Context, rows []rowState) error {
	if len(rows) == 0 {
		return nil
	}
	at := now()
	err := s.batched(ctx, len(rows), func(m int) string {
		return upsertRows(m) + `
			ON CONFLICT (key) DO UPDATE SET key_values = excluded.key_values,
			fingerprint = excluded.fingerprint, spec_hash = excluded.spec_hash,
			group_id = excluded.group_id, run_id = excluded.run_id, status = excluded.status,
			pass = excluded.pass, updated_at = excluded.updated_at`
	}, func(st *sql.Stmt, lo, hi int) error {
		args := make([]any, 0, 9*(hi-lo))
		for _, r := range rows[lo:hi] {
			args = appendRowArgs(args, r, r.RunID, r.Status, at)
		}
		_, err := st.ExecContext(ctx, args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("store %d row states: %w", len(rows), err)
	}
	return nil
}

// setSubmitted records the run ids of rows recorded as submitting, in one
// transaction. The rows exist: the upsert only changes run_id, status and
// updated_at, through the key's primary index, and binds only those (the
// other columns' values would be thrown away by the conflict).
func (s *stateStore) setSubmitted(ctx context.Context, rows []rowState, runIDs []string) error {
	if len(rows) == 0 {
		return nil
	}
	at := now()
	err := s.batched(ctx, len(rows), func(m int) string {
		return `INSERT INTO rows (key, fingerprint, spec_hash, run_id, status, updated_at)
			VALUES ` + tuples("(?, '', '', ?, '"+stateSubmitted+"', ?)", m) + `
			ON CONFLICT (key) DO UPDATE SET run_id = excluded.run_id, status = excluded.status,
			updated_at = excluded.updated_at`
	}, func(st *sql.Stmt, lo, hi int) error {
		args := make([]any, 0, 3*(hi-lo))
		for i, r := range rows[lo:hi] {
			args = append(args, r.Key, runIDs[lo+i], at)
		}
		_, err := st.ExecContext(ctx, args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("record %d run ids: %w", len(rows), err)
	}
	return nil
}

// settled counts the rows of one pass settled by a call, by status.
type settled map[string]int64

// total is the number of rows settled.
func (c settled) total() int64 {
	var n int64
	for _, v := range c {
		n += v
	}
	return n
}

// settle records the final status of rows whose results the sinks hold,
// but only while the row is still served by that run (a newer run of the
// same key is never overwritten by an older one). It counts, by status,
// the settled rows read by pass.
func (s *stateStore) settle(ctx context.Context, runs map[string]string, pass int64) (settled, error) {
	inPass := settled{}
	if len(runs) == 0 {
		return inPass, nil
	}
	// One IN list per status, found through the run_id index (the unary
	// plus keeps SQLite from preferring the status index, which holds
	// every waiting row).
	byStatus := map[string][]string{}
	for runID, status := range runs {
		byStatus[status] = append(byStatus[status], runID)
	}
	at := now()
	var err error
	for status, ids := range byStatus {
		err = s.batched(ctx, len(ids), func(m int) string {
			return `UPDATE rows SET status = ?, updated_at = ? WHERE run_id IN (` +
				placeholders(m) + `) AND +status = '` + stateSubmitted + `' RETURNING pass`
		}, func(st *sql.Stmt, lo, hi int) error {
			args := make([]any, 0, 2+hi-lo)
			args = append(args, status, at)
			for _, id := range ids[lo:hi] {
				args = append(args, id)
			}
			rs, err := st.QueryContext(ctx, args...)
			if err != nil {
				return err
			}
			defer rs.Close()
			for rs.Next() {
				var p int64
				if err := rs.Scan(&p); err != nil {
					return err
				}
				if p == pass {
					inPass[status]++
				}
			}
			return rs.Err()
		})
		if err != nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("settle rows: %w", err)
	}
	return inPass, nil
}

// deleteRows forgets rows (a submission that never reached the group).
func (s *stateStore) deleteRows(ctx context.Context, keys []string) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		return parts(len(keys), func(lo, hi int) error {
			args := make([]any, hi-lo)
			for i, k := range keys[lo:hi] {
				args[i] = k
			}
			_, err := tx.ExecContext(ctx, `DELETE FROM rows WHERE key IN (`+placeholders(hi-lo)+`)`, args...)
			return err
		})
	})
	if err != nil {
		return fmt.Errorf("forget rows: %w", err)
	}
	return nil
}
