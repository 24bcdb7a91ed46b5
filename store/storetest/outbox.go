package storetest

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

// deliveryIDs lists the ids of deliveries.
func deliveryIDs(ds []store.Delivery) []string {
	out := make([]string, len(ds))
	for i := range ds {
		out[i] = ds[i].ID
	}
	return out
}

// due lists the deliveries due at time at(sec).
func due(t *testing.T, s store.Store, sec, limit int) []store.Delivery {
	t.Helper()
	ds, err := s.DueDeliveries(context.Background(), at(sec), limit)
	if err != nil {
		t.Fatalf("DueDeliveries(%d): %v", sec, err)
	}
	return ds
}

func testDeliveries(t *testing.T, open OpenFunc) {
	s := open(t)
	ctx := context.Background()
	newGroup(t, s, "g1")
	addRuns(t, s, "g1", makeRuns("g1", "a", 3))
	claim(t, s, "n1", 3, at(2))
	payload := json.RawMessage(`{"type":"task_run.status","data":{"run_id":"a-1"}}`)

	// A finish queues its webhook, due at once unless NextAt says otherwise;
	// a skipped finish queues nothing.
	f1 := completed("a-1", "n1", 5)
	f1.Webhook = &store.Delivery{URL: "http://127.0.0.1:9/hook", Payload: payload}
	f2 := completed("a-2", "n1", 5)
	f2.Webhook = &store.Delivery{ID: "d-2", URL: "http://127.0.0.1:9/other",
		Payload: payload, NextAt: at(20)}
	f3 := completed("a-3", "someone-else", 5)
	f3.Webhook = &store.Delivery{ID: "d-3", URL: "http://127.0.0.1:9/never", Payload: payload}
	if res := finish(t, s, f1, f2, f3); len(res.Applied) != 2 {
		t.Fatalf("applied %v, want a-1 a-2", ids(res.Applied))
	}
	if got := due(t, s, 4, 10); len(got) != 0 {
		t.Errorf("due before the finish = %v", deliveryIDs(got))
	}
	got := due(t, s, 5, 10)
	if len(got) != 1 {
		t.Fatalf("due at 5 = %v, want one", deliveryIDs(got))
	}
	d1 := got[0]
	if d1.ID == "" || d1.RunID != "a-1" || d1.URL != f1.Webhook.URL || d1.Attempts != 0 ||
		!jsonEqual(d1.Payload, payload) || !d1.NextAt.Equal(at(5)) || d1.LastError != "" {
		t.Errorf("delivery = %+v", d1)
	}

	// A failed attempt makes it due again later, after d-2.
	d1.Attempts, d1.NextAt, d1.LastError = 1, at(30), "503 Service Unavailable"
	if err := s.UpdateDelivery(ctx, d1, false); err != nil {
		t.Fatalf("UpdateDelivery: %v", err)
	}
	if got := due(t, s, 25, 10); !slices.Equal(deliveryIDs(got), []string{"d-2"}) {
		t.Errorf("due at 25 = %v, want d-2", deliveryIDs(got))
	}
	got = due(t, s, 30, 10)
	if !slices.Equal(deliveryIDs(got), []string{"d-2", d1.ID}) {
		t.Fatalf("due at 30 = %v, want d-2 then %s", deliveryIDs(got), d1.ID)
	}
	if got[1].Attempts != 1 || got[1].LastError != d1.LastError || got[1].RunID != "a-1" {
		t.Errorf("updated delivery = %+v", got[1])
	}
	if got := due(t, s, 30, 1); !slices.Equal(deliveryIDs(got), []string{"d-2"}) {
		t.Errorf("due at 30 limit 1 = %v, want d-2", deliveryIDs(got))
	}

	// Delivered ones leave the outbox.
	if err := s.UpdateDelivery(ctx, got[0], true); err != nil {
		t.Fatalf("UpdateDelivery delivered: %v", err)
	}
	if got := due(t, s, 1000, 10); !slices.Equal(deliveryIDs(got), []string{d1.ID}) {
		t.Errorf("due after delivery = %v, want %s", deliveryIDs(got), d1.ID)
	}
	err := s.UpdateDelivery(ctx, store.Delivery{ID: "d-2", NextAt: at(40)}, false)
	wantNotFound(t, "UpdateDelivery of a delivered delivery", err)

	// A finish refused as a whole queues nothing either.
	_, err = s.FinishRuns(ctx, []store.Finish{{RunID: "a-3", Status: api.StatusQueued,
		Webhook: &store.Delivery{ID: "d-4", URL: "http://127.0.0.1:9/x"}}})
	if err == nil {
		t.Error("finish to queued succeeded")
	}
	if got := due(t, s, 1000, 10); len(got) != 1 {
		t.Errorf("due after refused finish = %v, want only %s", deliveryIDs(got), d1.ID)
	}
}
