package specs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// orderedObject is a JSON object that remembers the order of its keys, so
// that output columns follow the order in which the schema lists them.
type orderedObject struct {
	keys   []string
	values map[string]any
}

// get returns the value of key and whether it is present.
func (o *orderedObject) get(key string) (any, bool) {
	v, ok := o.values[key]
	return v, ok
}

// decodeOrdered decodes one JSON document; objects become *orderedObject,
// numbers json.Number.
func decodeOrdered(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	v, err := decodeOrderedValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON document")
	}
	return v, nil
}

// maxDecodeDepth stops runaway nesting in hostile input.
const maxDecodeDepth = 200

// decodeOrderedValue decodes the next value from dec.
func decodeOrderedValue(dec *json.Decoder, depth int) (any, error) {
	if depth > maxDecodeDepth {
		return nil, fmt.Errorf("JSON nests more than %d levels", maxDecodeDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		obj := &orderedObject{values: map[string]any{}}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			key, _ := kt.(string)
			v, err := decodeOrderedValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			if _, dup := obj.values[key]; !dup {
				obj.keys = append(obj.keys, key)
			}
			obj.values[key] = v
		}
		_, err := dec.Token() // the closing brace
		return obj, err
	case json.Delim('['):
		list := []any{}
		for dec.More() {
			v, err := decodeOrderedValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		_, err := dec.Token() // the closing bracket
		return list, err
	default:
		return tok, nil
	}
}
