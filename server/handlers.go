package server

import (
	"context"
	"net/http"

	"github.com/taskpipe/taskpipe/api"
)

// createGroup serves POST /tasks/groups. The body may be empty or {}.
func (s *Server) createGroup(w http.ResponseWriter, r *http.Request) {
	b, err := readBody(r, w, s.maxBody)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var req api.CreateTaskGroupRequest
	if b != nil {
		if err := decodeJSON(b, &req, ""); err != nil {
			s.writeError(w, r, err)
			return
		}
		if err := checkMetadata(req.Metadata, "metadata"); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	g, err := s.svc.CreateTaskGroup(r.Context(), req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	normalizeGroup(&g)
	writeJSON(w, http.StatusOK, g)
}

// getGroup serves GET /tasks/groups/{taskgroup_id}.
func (s *Server) getGroup(w http.ResponseWriter, r *http.Request) {
	g, err := s.svc.GetTaskGroup(r.Context(), r.PathValue("taskgroup_id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	normalizeGroup(&g)
	writeJSON(w, http.StatusOK, g)
}

// addRuns serves POST /tasks/groups/{taskgroup_id}/runs: at most 1,000
// inputs, all added or none. refresh_status is accepted and checked; the
// engine's status is always fresh.
func (s *Server) addRuns(w http.ResponseWriter, r *http.Request) {
	if _, err := queryBool(r.URL.Query(), "refresh_status", true); err != nil {
		s.writeError(w, r, err)
		return
	}
	b, err := readBody(r, w, s.maxBody)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	req, err := decodeAddRuns(b)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	resp, err := s.svc.AddRuns(r.Context(), r.PathValue("taskgroup_id"), req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	normalizeStatus(&resp.Status)
	if resp.RunIDs == nil {
		resp.RunIDs = []string{}
	}
	writeJSON(w, http.StatusOK, resp)
}

// groupRuns serves GET /tasks/groups/{taskgroup_id}/runs: an SSE snapshot
// of the group's runs that closes at its end.
func (s *Server) groupRuns(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var gq api.GroupRunsQuery
	var err error
	gq.LastEventID = q.Get("last_event_id")
	if gq.Status, err = queryStatus(q); err == nil {
		if gq.IncludeInput, err = queryBool(q, "include_input", false); err == nil {
			gq.IncludeOutput, err = queryBool(q, "include_output", false)
		}
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	groupID := r.PathValue("taskgroup_id")
	s.stream(w, r, 0, func(ctx context.Context, send func(api.Event) error) error {
		return s.svc.GroupRuns(ctx, groupID, gq, func(ev *api.TaskRunEvent) error {
			return send(ev)
		})
	})
}

// groupEvents serves GET /tasks/groups/{taskgroup_id}/events: status
// changes and run completions until the group is inactive, the timeout
// (seconds; absent or 0 means the engine's limit of one hour) passes or
// the client leaves.
func (s *Server) groupEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	timeout, _, err := querySeconds(q, "timeout")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	gq := api.GroupEventsQuery{LastEventID: q.Get("last_event_id"), Timeout: timeout}
	groupID := r.PathValue("taskgroup_id")
	s.stream(w, r, 0, func(ctx context.Context, send func(api.Event) error) error {
		return s.svc.GroupEvents(ctx, groupID, gq, send)
	})
}

// getGroupRun serves GET /tasks/groups/{taskgroup_id}/runs/{run_id}.
func (s *Server) getGroupRun(w http.ResponseWriter, r *http.Request) {
	run, err := s.svc.GetGroupRun(r.Context(), r.PathValue("taskgroup_id"), r.PathValue("run_id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, run)
}

// cancelGroup serves POST /v1/tasks/groups/{taskgroup_id}/cancel, a
// taskpipe extension.
func (s *Server) cancelGroup(w http.ResponseWriter, r *http.Request) {
	g, err := s.svc.CancelGroup(r.Context(), r.PathValue("taskgroup_id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	normalizeGroup(&g)
	writeJSON(w, http.StatusOK, g)
}

// createRun serves POST /v1/tasks/runs with 202 and the queued run.
func (s *Server) createRun(w http.ResponseWriter, r *http.Request) {
	b, err := readBody(r, w, s.maxBody)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if b == nil {
		s.writeError(w, r, invalid("", "is required"))
		return
	}
	in, err := decodeRunInput(b, "")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	run, err := s.svc.CreateRun(r.Context(), in)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, run)
}

// getRun serves GET /v1/tasks/runs/{run_id}.
func (s *Server) getRun(w http.ResponseWriter, r *http.Request) {
	run, err := s.svc.GetRun(r.Context(), r.PathValue("run_id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, run)
}

// getRunInput serves GET /v1/tasks/runs/{run_id}/input.
func (s *Server) getRunInput(w http.ResponseWriter, r *http.Request) {
	in, err := s.svc.GetRunInput(r.Context(), r.PathValue("run_id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, in)
}

// getRunResult serves GET /v1/tasks/runs/{run_id}/result: it waits up to
// timeout seconds (default 600, at most one hour) and answers 200 with the
// result, 408 while the run is still active, 404 when it failed.
func (s *Server) getRunResult(w http.ResponseWriter, r *http.Request) {
	timeout, ok, err := querySeconds(r.URL.Query(), "timeout")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !ok {
		timeout = DefaultResultTimeout
	}
	timeout = min(timeout, MaxResultTimeout)
	ctx, cancel := s.longContext(r)
	defer cancel()
	res, err := s.svc.GetRunResult(ctx, r.PathValue("run_id"), timeout)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	normalizeOutput(&res.Output)
	writeJSON(w, http.StatusOK, res)
}

// runEvents serves GET /tasks/runs/{run_id}/events: the run's state, its
// progress messages and a final state with the output; it closes after
// RunStreamLimit at the latest.
func (s *Server) runEvents(w http.ResponseWriter, r *http.Request) {
	runID := r.PathValue("run_id")
	s.stream(w, r, RunStreamLimit, func(ctx context.Context, send func(api.Event) error) error {
		return s.svc.RunEvents(ctx, runID, send)
	})
}

// cancelRun serves POST /v1/tasks/runs/{run_id}/cancel, a taskpipe
// extension.
func (s *Server) cancelRun(w http.ResponseWriter, r *http.Request) {
	run, err := s.svc.CancelRun(r.Context(), r.PathValue("run_id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, run)
}
