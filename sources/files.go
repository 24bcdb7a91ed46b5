package sources

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// expandPaths turns the paths and globs of a file source into the sorted
// list of files they name, so that a missing file is reported by its name
// before DuckDB is involved. A glob (Go's filepath.Match syntax) must match
// at least one file; a plain path must be a readable regular file.
func expandPaths(kind string, paths []string) ([]string, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("%s source: paths: must name at least one file", kind)
	}
	var files []string
	seen := map[string]bool{}
	for _, p := range paths {
		if strings.TrimSpace(p) == "" {
			return nil, fmt.Errorf("%s source: paths: empty path", kind)
		}
		var matches []string
		if strings.ContainsAny(p, "*?[") {
			m, err := filepath.Glob(p)
			if err != nil {
				return nil, fmt.Errorf("%s source: glob %q: %w", kind, p, err)
			}
			if len(m) == 0 {
				return nil, fmt.Errorf("%s source: glob %q: %w", kind, p, errNoFiles)
			}
			sort.Strings(m)
			matches = m
		} else {
			matches = []string{p}
		}
		for _, f := range matches {
			st, err := os.Stat(f)
			if err != nil {
				return nil, fmt.Errorf("%s source: %w", kind, err)
			}
			if st.IsDir() {
				return nil, fmt.Errorf("%s source: %q is a directory", kind, f)
			}
			if !seen[f] {
				seen[f] = true
				files = append(files, f)
			}
		}
	}
	return files, nil
}

// describeFiles names a file list in errors: the file itself, or the first
// file and how many more.
func describeFiles(kind string, files []string) string {
	if len(files) == 1 {
		return fmt.Sprintf("%s %q", kind, files[0])
	}
	return fmt.Sprintf("%s %q and %d more files", kind, files[0], len(files)-1)
}
