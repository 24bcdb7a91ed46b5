// Package e2e holds end-to-end tests of taskpipe as its users run it: they
// build the real binary, start `taskpipe serve` on 127.0.0.1 with a SQLite
// file in a temp dir, and drive it over HTTP, from Go and from Parallel's
// official TypeScript SDK. The package has no code of its own; it exists
// for its tests, which skip with a reason when the Go toolchain (to build
// the binary) or Node.js (for the SDK) is missing.
package e2e
