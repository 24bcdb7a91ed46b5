package main

import (
	"bytes"
	"testing"

	"github.com/taskpipe/taskpipe/api"
)

func TestPrintGroup(t *testing.T) {
	for _, tc := range []struct {
		status api.TaskGroupStatus
		want   string
	}{
		{api.TaskGroupStatus{}, "group tgrp_1: done, no runs\n"},
		{api.TaskGroupStatus{IsActive: true, NumTaskRuns: 1,
			TaskRunStatusCounts: map[api.RunStatus]int64{api.StatusRunning: 1}},
			"group tgrp_1: active, 1 run (running 1)\n"},
		{api.TaskGroupStatus{NumTaskRuns: 3, TaskRunStatusCounts: map[api.RunStatus]int64{
			api.StatusCompleted: 2, api.StatusFailed: 1}},
			"group tgrp_1: done, 3 runs (completed 2, failed 1)\n"},
	} {
		var out bytes.Buffer
		if err := printGroup(&out, api.TaskGroup{TaskGroupID: "tgrp_1", Status: tc.status}, false); err != nil {
			t.Fatal(err)
		}
		if out.String() != tc.want {
			t.Errorf("printed %q, want %q", out.String(), tc.want)
		}
	}
}
