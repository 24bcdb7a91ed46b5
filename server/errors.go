package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/google/uuid"

	"github.com/taskpipe/taskpipe/api"
)

// errShuttingDown is returned to requests cut short by a server shutdown;
// clients retry it.
var errShuttingDown = api.Errorf(api.ErrUnavailable, "server is shutting down; retry")

// errorBody builds the ErrorResponse of err. Errors without an api kind are
// internal: their text stays in the log and the client sees a generic
// message with the ref_id to quote.
func errorBody(err error) (int, api.ErrorResponse) {
	status := api.HTTPStatus(err) // the one place a status is chosen for an error
	obj := api.ErrorObject{RefID: uuid.NewString()}
	var ae *api.Error
	switch {
	case errors.As(err, &ae) && status != http.StatusInternalServerError:
		obj.Message = ae.Error()
		obj.Detail = ae.Detail
		if ae.RefID != "" {
			obj.RefID = ae.RefID
		}
	case status == http.StatusInternalServerError:
		obj.Message = "internal server error"
	default:
		obj.Message = err.Error()
	}
	return status, api.ErrorResponse{Type: "error", Error: obj}
}

// writeError replies with err as an ErrorResponse. Internal errors are
// logged with their ref_id; the others are the client's to handle.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	err = s.contextError(r.Context(), err)
	status, body := errorBody(err)
	clientGone := r.Context().Err() != nil && errors.Is(err, context.Canceled)
	if status == http.StatusInternalServerError && !clientGone {
		s.log.Error("request failed", "method", r.Method, "route", r.Pattern,
			"ref_id", body.Error.RefID, "error", err)
	}
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, body)
}

// contextError turns a context error caused by a server shutdown into
// errShuttingDown; other errors pass unchanged.
func (s *Server) contextError(ctx context.Context, err error) error {
	if (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) && s.closing() {
		return errShuttingDown
	}
	return err
}

// writeJSON replies with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only a wire type that cannot marshal gets here: a bug.
		status, body := errorBody(err)
		b, _ = json.Marshal(body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(b)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
