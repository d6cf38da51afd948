//go:build unix

package connlimit

import (
	"math"
	"syscall"
)

// FileLimit returns the process's limit of open files (the soft
// RLIMIT_NOFILE, which the Go runtime raises to the hard limit at start),
// or 0 when it cannot tell.
func FileLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	return int(min(r.Cur, math.MaxInt32))
}
