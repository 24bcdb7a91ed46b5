package api

import (
	"errors"
	"fmt"
	"net/http"
)

// Sentinel errors that callers branch on. The engine returns them wrapped in
// an *Error; the client maps HTTP status codes back onto them, so code above
// the TaskGroups interface sees the same errors embedded or remote.
var (
	ErrUnauthorized    = errors.New("unauthorized")          // 401
	ErrPaymentRequired = errors.New("payment required")      // 402
	ErrForbidden       = errors.New("forbidden")             // 403, e.g. unknown processor
	ErrNotFound        = errors.New("not found")             // 404
	ErrTimeout         = errors.New("run still active")      // 408
	ErrConflict        = errors.New("conflict")              // 409
	ErrTooLarge        = errors.New("request too large")     // 413
	ErrInvalid         = errors.New("invalid request")       // 422
	ErrRateLimited     = errors.New("rate limited")          // 429
	ErrUnavailable     = errors.New("service unavailable")   // 503
	ErrInternal        = errors.New("internal server error") // 500
)

var statusOf = map[error]int{
	ErrUnauthorized:    http.StatusUnauthorized,
	ErrPaymentRequired: http.StatusPaymentRequired,
	ErrForbidden:       http.StatusForbidden,
	ErrNotFound:        http.StatusNotFound,
	ErrTimeout:         http.StatusRequestTimeout,
	ErrConflict:        http.StatusConflict,
	ErrTooLarge:        http.StatusRequestEntityTooLarge,
	ErrInvalid:         http.StatusUnprocessableEntity,
	ErrRateLimited:     http.StatusTooManyRequests,
	ErrUnavailable:     http.StatusServiceUnavailable,
	ErrInternal:        http.StatusInternalServerError,
}

// Error is an API error: a sentinel kind, the message the user sees and
// optional structured detail (for validation errors, the fields at fault).
type Error struct {
	Kind    error
	Message string
	Detail  map[string]any
	RefID   string
}

// Errorf makes an *Error of the given kind with a formatted message.
func Errorf(kind error, format string, args ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// Error implements error.
func (e *Error) Error() string {
	if e.Message == "" {
		return e.Kind.Error()
	}
	return e.Message
}

// Unwrap returns the sentinel kind, so errors.Is(err, ErrNotFound) works.
func (e *Error) Unwrap() error { return e.Kind }

// WithDetail returns e with Detail set.
func (e *Error) WithDetail(d map[string]any) *Error {
	e.Detail = d
	return e
}

// HTTPStatus returns the status code of err: the code of its sentinel kind,
// or 500 when err carries none.
func HTTPStatus(err error) int {
	for kind, code := range statusOf {
		if errors.Is(err, kind) {
			return code
		}
	}
	return http.StatusInternalServerError
}

// KindForStatus returns the sentinel error of an HTTP status code, or
// ErrInternal for codes without one.
func KindForStatus(code int) error {
	for kind, c := range statusOf {
		if c == code {
			return kind
		}
	}
	return ErrInternal
}
