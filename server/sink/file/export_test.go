package file

import "time"

// Handle is the file interface the sink writes through.
type Handle = handle

// WithHooks returns opts with a clock and a file constructor.
func WithHooks(opts Options, now func() time.Time, create func(name string) (Handle, error)) Options {
	opts.now, opts.create = now, create
	return opts
}

// WithClock returns opts with a clock, and background checks every tick
// (0: the default).
func WithClock(opts Options, now func() time.Time, tick time.Duration) Options {
	opts.now, opts.tick = now, tick
	return opts
}

// Tidy runs one pass of the background work now and returns its error:
// the open file is closed if it reached its age limit, closed files are
// compressed and retention is applied.
func Tidy(s *Sink) error {
	reply := make(chan error, 1)
	select {
	case s.tidyReq <- reply:
		return <-reply
	case <-s.done:
		return ErrClosed
	}
}
