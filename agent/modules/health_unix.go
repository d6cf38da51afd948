//go:build unix

package modules

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuSeconds is the CPU time (user and system) the process used so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	d := time.Duration(ru.Utime.Nano()) + time.Duration(ru.Stime.Nano())
	return d.Seconds()
}

// rssBytes is the process's resident set size (VmRSS, Linux), or 0.
func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}
