package sqlite

import (
	"fmt"

	"github.com/taskpipe/taskpipe/store"
)

// maxActive bounds how many claimed runs activeRuns remembers.
const maxActive = 200_000

// activeRuns remembers the runs this store claimed, as stored, so that
// finishing them (the hot path) needs no read of their rows. Only the holder
// of the write slot uses it, and the database stays the authority: every
// update is still checked by its WHERE clause.
//
// Any other change to a remembered run updates or drops its entry. A commit
// through another connection (another process writing the same file, seen
// through PRAGMA data_version) or a rolled back transaction drops them all.
type activeRuns struct {
	m           map[string]activeRun
	dataVersion int64
}

// activeRun is a claimed run as stored, without its spec.
type activeRun struct {
	ord int64
	run store.Run
}

func (a *activeRuns) reset() {
	a.m = make(map[string]activeRun)
}

// remember stores a claimed run.
func (a *activeRuns) remember(ord int64, r store.Run) {
	if len(a.m) >= maxActive {
		a.reset()
	}
	r.Spec = nil
	a.m[r.ID] = activeRun{ord: ord, run: r}
}

// checkVersion drops every entry when another connection has committed
// since this one last looked.
func (tx *wtx) checkVersion() error {
	var v int64
	if err := tx.s.w.QueryRowContext(tx.ctx, `PRAGMA data_version`).Scan(&v); err != nil {
		return fmt.Errorf("read data version: %w", err)
	}
	if v != tx.s.active.dataVersion {
		tx.s.active.reset()
		tx.s.active.dataVersion = v
	}
	return nil
}

// forget drops the entries of runs a statement changed.
func (tx *wtx) forget(changes []change) {
	for i := range changes {
		delete(tx.s.active.m, changes[i].run.ID)
	}
}
