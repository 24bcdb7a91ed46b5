//go:build race

package e2e

// raceEnabled reports that the tests run under the race detector; the
// binary is then built with it too, which checks the server for races and
// reuses the packages the test build already compiled.
const raceEnabled = true
