package engine_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/engine"
	"github.com/taskpipe/taskpipe/processors"
	"github.com/taskpipe/taskpipe/store/sqlite"
)

// delivery is one webhook request as the receiver saw it.
type delivery struct {
	id, timestamp, signature string
	body                     []byte
}

func TestEngine_WebhookSignedAndRetried(t *testing.T) {
	t.Parallel()
	secret := []byte("test-secret-for-webhooks")
	var mu sync.Mutex
	var got []delivery
	received := make(chan struct{}, 10)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, delivery{r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"),
			r.Header.Get("webhook-signature"), body})
		first := len(got) == 1
		mu.Unlock()
		received <- struct{}{}
		if first {
			w.WriteHeader(http.StatusInternalServerError) // the first attempt fails
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)

	// An engine whose clock runs 10 s ahead after the first attempt, so the
	// retry (due 5 s later) is due without waiting for it.
	var skew sync.Map
	now := func() time.Time {
		if d, ok := skew.Load("d"); ok {
			return time.Now().Add(d.(time.Duration))
		}
		return time.Now()
	}
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "engine.db"))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(engine.Options{Store: st, Backends: processors.Default(nil), Node: "n",
		WebhookSecret: "whsec_" + base64.StdEncoding.EncodeToString(secret), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Stop(ctx); _ = st.Close() })

	run, err := eng.CreateRun(ctx, api.TaskRunInput{
		Input: json.RawMessage(`"Acme"`), Processor: "synthetic",
		Webhook: &api.Webhook{URL: receiver.URL, EventTypes: []string{engine.WebhookEventType}},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor := func(what string) {
		select {
		case <-received:
		case <-time.After(20 * time.Second):
			t.Fatalf("no %s delivery", what)
		}
	}
	waitFor("first")
	skew.Store("d", 10*time.Second)
	waitFor("retried")

	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0].id != got[1].id {
		t.Fatalf("deliveries = %d (ids %q), want 2 attempts of one webhook id", len(got), got[0].id)
	}
	for _, d := range got {
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(d.id + "." + d.timestamp + "."))
		mac.Write(d.body)
		want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
		if d.signature != want {
			t.Fatalf("signature %q, want %q", d.signature, want)
		}
	}
	var payload engine.WebhookPayload
	if err := json.Unmarshal(got[1].body, &payload); err != nil {
		t.Fatal(err)
	}
	if payload.Type != "task_run.status" || payload.Data.RunID != run.RunID || payload.Data.Status != api.StatusCompleted {
		t.Fatalf("payload = %+v, want task_run.status of a completed %s", payload, run.RunID)
	}
}
