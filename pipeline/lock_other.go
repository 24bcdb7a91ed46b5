//go:build !unix

package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
)

// lockDir opens dir/lock. TODO(lock): on systems without flock two
// pipeline processes may share a state directory; nothing stops them.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open state lock: %w", err)
	}
	return f, nil
}
