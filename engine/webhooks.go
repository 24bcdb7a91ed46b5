package engine

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/taskpipe/taskpipe/api"
	"github.com/taskpipe/taskpipe/store"
)

// Webhook delivery policy, as Parallel documents it: the first retry after
// 5 s, doubling, for up to 48 hours.
const (
	webhookFirstRetry = 5 * time.Second
	webhookGiveUp     = 48 * time.Hour
	webhookTimeout    = 30 * time.Second
	webhookBatch      = 100
	// WebhookEventType is the only webhook event type.
	WebhookEventType = "task_run.status"
)

// WebhookPayload is the body POSTed to a run's webhook URL.
type WebhookPayload struct {
	Timestamp string      `json:"timestamp"`
	Type      string      `json:"type"`
	Data      api.TaskRun `json:"data"`
}

// webhookSender delivers the outbox with Standard Webhooks signatures.
type webhookSender struct {
	e      *Engine
	secret []byte
	client *http.Client
	wakeC  chan struct{}
}

func newWebhookSender(e *Engine, secret string) *webhookSender {
	key := []byte(secret)
	if s, ok := strings.CutPrefix(secret, "whsec_"); ok {
		if b, err := base64.StdEncoding.DecodeString(s); err == nil {
			key = b
		}
	}
	return &webhookSender{
		e:      e,
		secret: key,
		client: &http.Client{Timeout: webhookTimeout},
		wakeC:  make(chan struct{}, 1),
	}
}

func (w *webhookSender) wake() {
	select {
	case w.wakeC <- struct{}{}:
	default:
	}
}

// delivery builds the outbox entry for a run reaching a terminal status, or
// nil when the run asked for no webhook.
func (w *webhookSender) delivery(r *store.Run, status api.RunStatus, errJSON json.RawMessage, now time.Time) *store.Delivery {
	if status == api.StatusCancelled || !bytes.Contains(r.Input, []byte(`"webhook"`)) {
		return nil
	}
	var in struct {
		Webhook *api.Webhook `json:"webhook"`
	}
	if json.Unmarshal(r.Input, &in) != nil || in.Webhook == nil || in.Webhook.URL == "" {
		return nil
	}
	if len(in.Webhook.EventTypes) > 0 && !contains(in.Webhook.EventTypes, WebhookEventType) {
		return nil
	}
	done := *r
	done.Status, done.Error, done.ModifiedAt = status, errJSON, now
	body, err := json.Marshal(WebhookPayload{
		Timestamp: api.Timestamp(now), Type: WebhookEventType, Data: taskRun(&done),
	})
	if err != nil {
		return nil
	}
	return &store.Delivery{
		ID:      newID("whevent_"),
		RunID:   r.ID,
		URL:     in.Webhook.URL,
		Payload: body,
		NextAt:  now,
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (w *webhookSender) start(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.loop(ctx)
	}()
}

// loop sends due deliveries whenever woken, and at least every second.
func (w *webhookSender) loop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wakeC:
		case <-t.C:
		}
		due, err := w.e.store.DueDeliveries(ctx, w.e.now(), webhookBatch)
		if err != nil {
			if ctx.Err() == nil {
				w.e.log.Warn("read webhook outbox", "error", err)
			}
			continue
		}
		for _, d := range due {
			w.attempt(ctx, d)
		}
	}
}

// attempt sends one delivery and records the result.
func (w *webhookSender) attempt(ctx context.Context, d store.Delivery) {
	err := w.send(ctx, d)
	d.Attempts++
	delivered := err == nil
	if err != nil {
		d.LastError = err.Error()
		wait := webhookFirstRetry << min(d.Attempts-1, 20)
		d.NextAt = w.e.now().Add(wait)
		if d.NextAt.Sub(w.firstAttempt(d)) > webhookGiveUp {
			w.e.log.Warn("give up webhook delivery", "run_id", d.RunID, "attempts", d.Attempts, "error", err)
			delivered = true // drop it from the queue
		}
	}
	if uerr := w.e.store.UpdateDelivery(ctx, d, delivered); uerr != nil && ctx.Err() == nil {
		w.e.log.Warn("record webhook delivery", "run_id", d.RunID, "error", uerr)
	}
}

// firstAttempt estimates when a delivery was first due from its attempts.
func (w *webhookSender) firstAttempt(d store.Delivery) time.Time {
	var total time.Duration
	for i := 0; i < d.Attempts-1; i++ {
		total += webhookFirstRetry << min(i, 20)
	}
	return w.e.now().Add(-total)
}

// send POSTs one delivery, signed.
func (w *webhookSender) send(ctx context.Context, d store.Delivery) error {
	ts := strconv.FormatInt(w.e.now().Unix(), 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(d.Payload))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", d.ID)
	req.Header.Set("webhook-timestamp", ts)
	if len(w.secret) > 0 {
		req.Header.Set("webhook-signature", "v1,"+Sign(w.secret, d.ID, ts, d.Payload))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return fmt.Errorf("post webhook: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

// Sign computes a Standard Webhooks signature: base64 of HMAC-SHA256 over
// "<id>.<timestamp>.<body>". Receivers use it to verify deliveries.
func Sign(key []byte, id, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + timestamp + "."))
	mac.Write(body)
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
