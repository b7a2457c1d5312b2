//go:build race

package manager_test

// Under -race the binaries the tests run are race-checked too.
func init() { buildFlags = append(buildFlags, "-race") }
