package file

import "time"

// Handle is the file interface the sink writes through.
type Handle = handle

// WithHooks returns opts with a clock and a file constructor.
func WithHooks(opts Options, now func() time.Time, create func(name string) (Handle, error)) Options {
	opts.now, opts.create = now, create
	return opts
}
