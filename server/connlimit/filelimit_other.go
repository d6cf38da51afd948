//go:build !unix

package connlimit

// FileLimit returns 0: this system has no limit of open files it can
// tell.
func FileLimit() int { return 0 }
