package processors

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/zeebo/xxh3"
)

// A synthPlan is an output schema compiled once into the steps that write a
// value for it, so that generating one output costs a walk over the plan and
// a few appends instead of a schema parse.
type synthPlan struct {
	root *synthNode
	err  error // why the schema cannot be planned
}

// synthKind is what a plan node writes.
type synthKind uint8

const (
	synthString synthKind = iota
	synthInteger
	synthNumber
	synthBoolean
	synthNull
	synthObject
	synthArray
	synthConst // one fixed JSON value: a const or a single-value enum
	synthEnum
	synthUnion // one of several variants, chosen by the seed
)

// synthNode is one schema position in a plan.
type synthNode struct {
	kind synthKind
	// path seeds this position's values: the same input always gets the
	// same value here, whatever the other fields hold.
	path uint64
	// prefix is the opening quote and text of a generated string.
	prefix   []byte
	maxLen   int // 0: no limit
	format   string
	min, max float64
	values   [][]byte // const and enum values, as JSON
	props    []synthProp
	items    *synthNode
	minItems int
	maxItems int
	variants []*synthNode
}

// synthProp is one property of an object node.
type synthProp struct {
	name     string
	key      []byte // `"name":`
	node     *synthNode
	required bool
}

// maxPlanDepth bounds schema nesting (and $ref recursion) in a plan.
const maxPlanDepth = 12

// planCache holds compiled plans by the text of their JSON schema. It is
// reset when full, which only costs recompiling.
type planCache struct {
	mu    sync.RWMutex
	plans map[string]*synthPlan
}

// maxCachedPlans bounds the plan cache.
const maxCachedPlans = 1024

// get returns the plan for schema, compiling it on first use.
func (c *planCache) get(schema []byte) *synthPlan {
	c.mu.RLock()
	p, ok := c.plans[string(schema)]
	c.mu.RUnlock()
	if ok {
		return p
	}
	p = compilePlan(schema)
	c.mu.Lock()
	if c.plans == nil || len(c.plans) >= maxCachedPlans {
		c.plans = make(map[string]*synthPlan)
	}
	c.plans[string(schema)] = p
	c.mu.Unlock()
	return p
}

// compilePlan parses a JSON schema into a plan. A schema that cannot be
// planned gives a plan whose err says why.
func compilePlan(schema []byte) *synthPlan {
	var doc map[string]any
	if err := json.Unmarshal(schema, &doc); err != nil {
		return &synthPlan{err: fmt.Errorf("parse output json_schema: %w", err)}
	}
	b := planBuilder{doc: doc}
	root, err := b.node(doc, "", "output", 0)
	if err != nil {
		return &synthPlan{err: err}
	}
	if root.kind != synthObject {
		return &synthPlan{err: fmt.Errorf("output json_schema: root must be an object")}
	}
	return &synthPlan{root: root}
}

// planBuilder compiles one schema document; doc resolves local $refs.
type planBuilder struct {
	doc map[string]any
}

// node compiles the schema s found at path; name is the nearest property
// name, used in generated strings.
func (b *planBuilder) node(s map[string]any, path, name string, depth int) (*synthNode, error) {
	if depth > maxPlanDepth {
		return nil, fmt.Errorf("output json_schema: %s: nested deeper than %d", path, maxPlanDepth)
	}
	n := &synthNode{path: xxh3.HashString(path)}

	// A $ref is replaced by its target; only local refs can be resolved.
	if ref, ok := s["$ref"].(string); ok {
		target, err := b.resolve(ref)
		if err != nil {
			return nil, fmt.Errorf("output json_schema: %s: %w", path, err)
		}
		return b.node(target, path, name, depth+1)
	}

	// Fixed values come first: const, then enum.
	if c, ok := s["const"]; ok {
		n.kind = synthConst
		n.values = [][]byte{mustJSON(c)}
		return n, nil
	}
	if e, ok := s["enum"].([]any); ok && len(e) > 0 {
		n.kind = synthEnum
		for _, v := range e {
			n.values = append(n.values, mustJSON(v))
		}
		return n, nil
	}

	// Unions: anyOf / oneOf, and a type given as a list.
	for _, key := range []string{"anyOf", "oneOf"} {
		if alts, ok := s[key].([]any); ok && len(alts) > 0 {
			n.kind = synthUnion
			for i, a := range alts {
				am, ok := a.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("output json_schema: %s.%s[%d]: not a schema", path, key, i)
				}
				v, err := b.node(am, path+"|"+strconv.Itoa(i), name, depth+1)
				if err != nil {
					return nil, err
				}
				n.variants = append(n.variants, v)
			}
			return n, nil
		}
	}
	if types, ok := s["type"].([]any); ok && len(types) > 0 {
		n.kind = synthUnion
		for i, t := range types {
			ts, _ := t.(string)
			one := make(map[string]any, len(s))
			for k, v := range s {
				one[k] = v
			}
			one["type"] = ts
			v, err := b.node(one, path+"|"+strconv.Itoa(i), name, depth+1)
			if err != nil {
				return nil, err
			}
			n.variants = append(n.variants, v)
		}
		return n, nil
	}

	// A single type; a missing type is inferred from the keywords present.
	typ, _ := s["type"].(string)
	if typ == "" {
		switch {
		case s["properties"] != nil:
			typ = "object"
		case s["items"] != nil:
			typ = "array"
		default:
			typ = "string"
		}
	}
	switch typ {
	case "string":
		n.kind = synthString
		n.format, _ = s["format"].(string)
		n.prefix = stringPrefix(name)
		if ml, ok := s["maxLength"].(float64); ok && ml >= 0 {
			n.maxLen = int(ml)
		}
	case "integer", "number":
		n.kind = synthInteger
		if typ == "number" {
			n.kind = synthNumber
		}
		n.min, n.max = 0, 1000
		if v, ok := s["minimum"].(float64); ok {
			n.min = v
			if _, hasMax := s["maximum"]; !hasMax {
				n.max = v + 1000
			}
		}
		if v, ok := s["maximum"].(float64); ok {
			n.max = v
			if _, hasMin := s["minimum"]; !hasMin && v < 1000 {
				n.min = v - 1000
			}
		}
		if n.max < n.min {
			return nil, fmt.Errorf("output json_schema: %s: maximum below minimum", path)
		}
	case "boolean":
		n.kind = synthBoolean
	case "null":
		n.kind = synthNull
	case "object":
		n.kind = synthObject
		if err := b.object(n, s, path, depth); err != nil {
			return nil, err
		}
	case "array":
		n.kind = synthArray
		n.minItems, n.maxItems = 1, 3
		if v, ok := s["minItems"].(float64); ok {
			n.minItems = int(v)
			n.maxItems = max(n.maxItems, n.minItems)
		}
		if v, ok := s["maxItems"].(float64); ok {
			n.maxItems = int(v)
			n.minItems = min(n.minItems, n.maxItems)
		}
		items, _ := s["items"].(map[string]any)
		if items == nil {
			items = map[string]any{"type": "string"}
		}
		it, err := b.node(items, path+"[]", name, depth+1)
		if err != nil {
			return nil, err
		}
		n.items = it
	default:
		return nil, fmt.Errorf("output json_schema: %s: unknown type %q", path, typ)
	}
	return n, nil
}

// object compiles the properties of an object node in a stable order: the
// schema's own order is lost by decoding, so properties are sorted by name.
func (b *planBuilder) object(n *synthNode, s map[string]any, path string, depth int) error {
	props, _ := s["properties"].(map[string]any)
	required := map[string]bool{}
	if req, ok := s["required"].([]any); ok {
		for _, r := range req {
			if rs, ok := r.(string); ok {
				required[rs] = true
			}
		}
	}
	names := make([]string, 0, len(props))
	for k := range props {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		ps, ok := props[k].(map[string]any)
		if !ok {
			return fmt.Errorf("output json_schema: %s.%s: not a schema", path, k)
		}
		child := k
		if path != "" {
			child = path + "." + k
		}
		cn, err := b.node(ps, child, k, depth+1)
		if err != nil {
			return err
		}
		key := append(mustJSON(k), ':')
		n.props = append(n.props, synthProp{name: k, key: key, node: cn, required: required[k]})
	}
	return nil
}

// resolve finds the target of a local $ref such as "#/$defs/person".
func (b *planBuilder) resolve(ref string) (map[string]any, error) {
	if !strings.HasPrefix(ref, "#/") {
		return nil, fmt.Errorf("$ref %q: only local references are supported", ref)
	}
	var cur any = b.doc
	for _, part := range strings.Split(ref[2:], "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("$ref %q: not found", ref)
		}
		cur = m[part]
	}
	m, ok := cur.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("$ref %q: not found", ref)
	}
	return m, nil
}

// stringPrefix is the opening of every generated string of a field: a quote
// and "synthetic <name> ", escaped once here.
func stringPrefix(name string) []byte {
	q := mustJSON("synthetic " + name + " ")
	return q[:len(q)-1]
}

// mustJSON marshals a value decoded from JSON, which cannot fail.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("marshal decoded json: %v", err))
	}
	return b
}

// mix derives a well-spread 64-bit value from a seed (splitmix64).
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// write appends the value of node n for the input seed to buf. nth counts
// the list elements above n, so that each element differs.
func (n *synthNode) write(buf []byte, seed, nth uint64) []byte {
	r := mix(seed ^ n.path ^ (nth * 0x2545f4914f6cdd1d))
	switch n.kind {
	case synthString:
		return n.writeString(buf, r)
	case synthInteger:
		span := uint64(math.Floor(n.max) - math.Ceil(n.min) + 1)
		if span == 0 {
			span = 1
		}
		return strconv.AppendInt(buf, int64(math.Ceil(n.min))+int64(r%span), 10)
	case synthNumber:
		f := n.min + (n.max-n.min)*float64(r>>11)/float64(1<<53)
		f = math.Floor(f*100) / 100
		if f < n.min {
			f = n.min
		}
		return strconv.AppendFloat(buf, f, 'f', -1, 64)
	case synthBoolean:
		return strconv.AppendBool(buf, r&1 == 1)
	case synthNull:
		return append(buf, "null"...)
	case synthConst:
		return append(buf, n.values[0]...)
	case synthEnum:
		return append(buf, n.values[r%uint64(len(n.values))]...)
	case synthUnion:
		return n.variants[r%uint64(len(n.variants))].write(buf, seed, nth)
	case synthArray:
		count := n.arrayLen(r)
		buf = append(buf, '[')
		for i := 0; i < count; i++ {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = n.items.write(buf, seed, nth*4+uint64(i)+1)
		}
		return append(buf, ']')
	case synthObject:
		return n.writeObject(buf, seed, nth, r, nil)
	}
	return append(buf, "null"...)
}

// writeObject writes an object node with random value r, calling written
// (when not nil) for each property it writes.
func (n *synthNode) writeObject(buf []byte, seed, nth, r uint64, written func(p *synthProp)) []byte {
	buf = append(buf, '{')
	first := true
	for i := range n.props {
		p := &n.props[i]
		// Optional properties are left out about one time in five.
		if !p.required && mix(r^p.node.path)%5 == 0 {
			continue
		}
		if !first {
			buf = append(buf, ',')
		}
		first = false
		buf = append(buf, p.key...)
		buf = p.node.write(buf, seed, nth)
		if written != nil {
			written(p)
		}
	}
	return append(buf, '}')
}

// arrayLen is how many elements an array gets for the random value r.
func (n *synthNode) arrayLen(r uint64) int {
	span := n.maxItems - n.minItems + 1
	if span <= 0 {
		return n.minItems
	}
	return n.minItems + int((r>>32)%uint64(span))
}

// writeString appends a generated string, shaped by a known format.
func (n *synthNode) writeString(buf []byte, r uint64) []byte {
	switch n.format {
	case "date":
		return fmt.Appendf(buf, `"%04d-%02d-%02d"`, 1990+r%35, 1+(r>>8)%12, 1+(r>>16)%28)
	case "date-time":
		return fmt.Appendf(buf, `"%04d-%02d-%02dT%02d:%02d:00Z"`,
			1990+r%35, 1+(r>>8)%12, 1+(r>>16)%28, (r>>24)%24, (r>>32)%60)
	case "email":
		return fmt.Appendf(buf, `"synthetic-%06x@example.com"`, r&0xffffff)
	case "uri", "url":
		return fmt.Appendf(buf, `"https://example.com/synthetic/%06x"`, r&0xffffff)
	}
	if n.maxLen > 0 && n.maxLen < len(n.prefix)+6 {
		// A short limit gets hex digits only, cut to fit.
		h := strconv.AppendUint(nil, r, 16)
		buf = append(buf, '"')
		buf = append(buf, h[:min(len(h), n.maxLen)]...)
		return append(buf, '"')
	}
	buf = append(buf, n.prefix...)
	const hexDigits = "0123456789abcdef"
	for i := 0; i < 6; i++ {
		buf = append(buf, hexDigits[(r>>(4*i))&0xf])
	}
	return append(buf, '"')
}
