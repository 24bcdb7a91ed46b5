package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/taskpipe/taskpipe/store"
)

// DueDeliveries returns up to limit webhook deliveries whose NextAt is not
// after now, the longest waiting first.
//
// TODO(outbox): deliveries are not leased, so two engines sharing a store
// would both send a due delivery; fine for the one-process SQLite store.
func (s *Store) DueDeliveries(ctx context.Context, now time.Time, limit int) ([]store.Delivery, error) {
	if limit <= 0 {
		return nil, nil
	}
	st, err := s.readStmt(ctx, `SELECT id, run_id, url, payload, attempts, next_at, last_error
		FROM deliveries WHERE next_at <= ? ORDER BY next_at, id LIMIT ?`)
	if err != nil {
		return nil, fmt.Errorf("list due deliveries: %w", err)
	}
	rows, err := st.QueryContext(ctx, micros(now), limit)
	if err != nil {
		return nil, fmt.Errorf("list due deliveries: %w", err)
	}
	defer rows.Close()
	var out []store.Delivery
	for rows.Next() {
		var (
			d       store.Delivery
			payload []byte
			next    int64
		)
		if err := rows.Scan(&d.ID, &d.RunID, &d.URL, &payload, &d.Attempts, &next,
			&d.LastError); err != nil {
			return nil, fmt.Errorf("list due deliveries: %w", err)
		}
		d.Payload = rawJSON(payload)
		d.NextAt = fromMicros(next)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list due deliveries: %w", err)
	}
	return out, nil
}

// UpdateDelivery records an attempt at a delivery: delivered removes it,
// otherwise its Attempts, NextAt and LastError are stored. An unknown
// delivery is store.ErrNotFound.
func (s *Store) UpdateDelivery(ctx context.Context, d store.Delivery, delivered bool) error {
	err := s.write(ctx, func(tx *wtx) error {
		var (
			n   int64
			err error
		)
		if delivered {
			n, err = tx.exec(`DELETE FROM deliveries WHERE id = ?`, d.ID)
		} else {
			n, err = tx.exec(`UPDATE deliveries SET attempts = ?, next_at = ?, last_error = ?
				WHERE id = ?`, d.Attempts, micros(d.NextAt), d.LastError, d.ID)
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return store.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("update delivery %s: %w", d.ID, err)
	}
	return nil
}
