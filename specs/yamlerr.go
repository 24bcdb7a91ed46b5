package specs

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// yamlProblem matches one problem of a yaml.v3 decode error.
var yamlProblem = regexp.MustCompile(`^line (\d+): (.*)$`)

// yamlUnknownField matches yaml.v3's message for a key strict decoding
// rejects.
var yamlUnknownField = regexp.MustCompile(`^field (\S+) not found in type .*$`)

// DescribeYAMLError rewrites an error from decoding the YAML document data
// so that every problem names the key it is about: "timeout: cannot
// unmarshal !!int `30` into time.Duration (line 6)" rather than yaml.v3's
// "line 6: cannot unmarshal ...", and "sourc: unknown key (line 3)" for a
// key strict decoding rejects. All problems are kept, joined. Errors that
// are not decode errors come back unchanged.
func DescribeYAMLError(data []byte, err error) error {
	var typeErr *yaml.TypeError
	if !errors.As(err, &typeErr) {
		return err
	}
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil {
		return err
	}
	paths := make(map[int]string)
	indexLines(&doc, "", paths)
	var errs []error
	for _, msg := range typeErr.Errors {
		m := yamlProblem.FindStringSubmatch(msg)
		if m == nil {
			errs = append(errs, errors.New(msg))
			continue
		}
		line, _ := strconv.Atoi(m[1])
		path, detail := paths[line], m[2]
		if f := yamlUnknownField.FindStringSubmatch(detail); f != nil {
			errs = append(errs, fmt.Errorf("%s: unknown key (line %d)", joinPath(parentOf(path, f[1]), f[1]), line))
			continue
		}
		if path == "" {
			errs = append(errs, fmt.Errorf("%s (line %d)", detail, line))
			continue
		}
		errs = append(errs, fmt.Errorf("%s: %s (line %d)", path, detail, line))
	}
	return errors.Join(errs...)
}

// indexLines maps each line that holds a mapping key or a sequence item to
// that node's dotted path (items as name[i]).
func indexLines(n *yaml.Node, path string, paths map[int]string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			indexLines(c, path, paths)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			p := joinPath(path, key.Value)
			if _, ok := paths[key.Line]; !ok || val.Kind == yaml.ScalarNode {
				paths[key.Line] = p
			}
			indexLines(val, p, paths)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			if _, ok := paths[c.Line]; !ok {
				paths[c.Line] = p
			}
			indexLines(c, p, paths)
		}
	}
}

// parentOf returns the path of the mapping that holds key, given the path
// indexed for key's line (which may be key's own path).
func parentOf(path, key string) string {
	if path == key {
		return ""
	}
	if strings.HasSuffix(path, "."+key) {
		return strings.TrimSuffix(path, "."+key)
	}
	return path
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}
