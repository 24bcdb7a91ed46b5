package engine

import (
	"sync"

	"github.com/taskpipe/taskpipe/store"
)

// hub tells waiting streams that something changed. It carries no data:
// a signal means "look at the store again", so a slow subscriber never
// blocks the engine and never misses anything; it pages the durable event
// log from its own cursor. Each subscription holds a one-slot channel, and
// signals that find it full are merged.
type hub struct {
	mu     sync.Mutex
	groups map[string]map[*subscription]struct{}
	runs   map[string]map[*subscription]struct{}
	closed bool
}

// subscription is one waiter's signal channel.
type subscription struct {
	C chan struct{}
}

func newHub() *hub {
	return &hub{
		groups: make(map[string]map[*subscription]struct{}),
		runs:   make(map[string]map[*subscription]struct{}),
	}
}

// subscribeGroup returns a subscription signalled when the group's event log
// grows. Call the returned function to unsubscribe.
func (h *hub) subscribeGroup(groupID string) (*subscription, func()) {
	return h.subscribe(h.groups, groupID)
}

// subscribeRun returns a subscription signalled when the run changes state
// or reports progress.
func (h *hub) subscribeRun(runID string) (*subscription, func()) {
	return h.subscribe(h.runs, runID)
}

func (h *hub) subscribe(m map[string]map[*subscription]struct{}, id string) (*subscription, func()) {
	s := &subscription{C: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(s.C)
		return s, func() {}
	}
	set := m[id]
	if set == nil {
		set = make(map[*subscription]struct{})
		m[id] = set
	}
	set[s] = struct{}{}
	return s, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(set, s)
		if len(set) == 0 && m[id] != nil && len(m[id]) == 0 {
			delete(m, id)
		}
	}
}

// publish signals the subscribers of every group and run the events touch.
func (h *hub) publish(events []store.Event) {
	if len(events) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var last string
	for _, ev := range events {
		if ev.GroupID != last {
			signal(h.groups[ev.GroupID])
			last = ev.GroupID
		}
	}
}

// runChanged signals the subscribers of the given runs.
func (h *hub) runChanged(runIDs ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.runs) == 0 {
		return
	}
	for _, id := range runIDs {
		signal(h.runs[id])
	}
}

// closeAll wakes every subscriber for the last time; streams then see the
// engine stopping and end.
func (h *hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, m := range []map[string]map[*subscription]struct{}{h.groups, h.runs} {
		for _, set := range m {
			signal(set)
		}
	}
}

func signal(set map[*subscription]struct{}) {
	for s := range set {
		select {
		case s.C <- struct{}{}:
		default:
		}
	}
}
