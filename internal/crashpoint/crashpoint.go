// Package crashpoint lets crash tests kill a process with SIGKILL at a
// named step of its work. A process reads one environment variable,
// "STEP" or "STEP:N", and kills itself the N-th time (default: the first)
// it reaches that step. Unset, a Point does nothing but count.
package crashpoint

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Point is the crash point one environment variable names.
type Point struct {
	env  string
	once sync.Once
	step string
	at   int64
	hits atomic.Int64
}

// New returns the crash point named by the environment variable env, read
// on first use.
func New(env string) *Point { return &Point{env: env} }

// At kills the process if the variable names this step and this is the hit
// it names.
func (p *Point) At(step string) {
	p.once.Do(func() {
		name, n, _ := strings.Cut(os.Getenv(p.env), ":")
		p.step, p.at = name, 1
		if i, err := strconv.ParseInt(n, 10, 64); err == nil && i > 0 {
			p.at = i
		}
	})
	if p.step != step || p.hits.Add(1) != p.at {
		return
	}
	if proc, err := os.FindProcess(os.Getpid()); err == nil {
		_ = proc.Kill() // SIGKILL where there are signals
	}
	select {} // the signal is on its way
}
