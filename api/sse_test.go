package api

import (
	"errors"
	"strings"
	"testing"
)

func TestReadEvents_Framing(t *testing.T) {
	t.Parallel()
	stream := ": keepalive\n\n" +
		"event: task_run.state\r\ndata: {\"type\":\"task_run.state\",\"event_id\":\"4\",\"run\":{\"run_id\":\"trun_1\",\"status\":\"completed\"}}\r\n\r\n" +
		"event: task_run.progress_msg.tool\ndata: {\"type\":\"task_run.progress_msg.tool\",\"message\":\"m\",\"timestamp\":null}\n\n" +
		"event: something.new\ndata: {\"type\":\"something.new\"}\n\n" +
		"\n\n" +
		"data: {\"type\":\"task_group_status\",\n" + // data split over two lines
		"data: \"event_id\":\"5\",\"status\":{\"is_active\":false}}\n\n" +
		"event: error\ndata: {\"type\":\"error\",\"error\":{\"ref_id\":\"r\",\"message\":\"boom\",\"detail\":null}}\n\n" +
		"event: task_run.state\ndata: {\"type\":\"task_run.state\"" // incomplete: dropped
	var got []Event
	err := ReadEvents(strings.NewReader(stream), func(ev Event) error {
		got = append(got, ev)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("got %d events: %#v", len(got), got)
	}
	if re := got[0].(*TaskRunEvent); *re.EventID != "4" || re.Run.RunID != "trun_1" || re.Run.Status != StatusCompleted {
		t.Errorf("event 0 = %+v", re)
	}
	if pm := got[1].(*ProgressMessageEvent); pm.Type != "task_run.progress_msg.tool" || pm.Message != "m" {
		t.Errorf("event 1 = %+v", pm)
	}
	if gs := got[2].(*TaskGroupStatusEvent); gs.EventID != "5" || gs.Status.IsActive {
		t.Errorf("event 2 = %+v", gs)
	}
	if ee := got[3].(*ErrorEvent); ee.Error.Message != "boom" {
		t.Errorf("event 3 = %+v", ee)
	}
}

func TestReadEvents_Errors(t *testing.T) {
	t.Parallel()
	stop := errors.New("stop")
	n := 0
	err := ReadEvents(strings.NewReader("data: {\"type\":\"error\",\"error\":{}}\n\ndata: {\"type\":\"error\",\"error\":{}}\n\n"),
		func(Event) error { n++; return stop })
	if err != stop || n != 1 {
		t.Errorf("callback error: got %v after %d events", err, n)
	}
	err = ReadEvents(strings.NewReader("data: {not json\n\n"), func(Event) error { return nil })
	var se *StreamError
	if !errors.As(err, &se) {
		t.Errorf("bad JSON: got %v, want a *StreamError", err)
	}
}
