package server

import "github.com/taskpipe/taskpipe/api"

// The normalize functions fill required array and object keys that a
// service left nil, so replies always carry [] or {} where the API
// requires a value, never null. Strict clients (Parallel's Python SDK in
// strict mode) reject a null there.

// normalizeStatus fills a group status's required counts map.
func normalizeStatus(st *api.TaskGroupStatus) {
	if st.TaskRunStatusCounts == nil {
		st.TaskRunStatusCounts = map[api.RunStatus]int64{}
	}
}

// normalizeGroup fills a group's required keys.
func normalizeGroup(g *api.TaskGroup) { normalizeStatus(&g.Status) }

// normalizeOutput fills an output's basis and citation lists.
func normalizeOutput(o *api.Output) {
	if o == nil {
		return
	}
	if o.Basis == nil {
		o.Basis = []api.FieldBasis{}
	}
	for i := range o.Basis {
		if o.Basis[i].Citations == nil {
			o.Basis[i].Citations = []api.Citation{}
		}
	}
}

// normalizeEvent fills the required keys of a streamed event.
func normalizeEvent(ev api.Event) {
	switch e := ev.(type) {
	case *api.TaskRunEvent:
		normalizeOutput(e.Output)
	case *api.TaskGroupStatusEvent:
		normalizeStatus(&e.Status)
	}
}
