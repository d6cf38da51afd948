package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// progress shows how far a command got: a bar redrawn in place on a
// terminal, or one plain line per change otherwise (logs, pipes, CI).
type progress struct {
	w    io.Writer
	tty  bool
	last string
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

const barWidth = 30

// update shows finished of total orders, with success and failure counts.
func (p *progress) update(finished, total, success, failure int) {
	line := fmt.Sprintf("%d/%d finished: %d success, %d failure", finished, total, success, failure)
	if line == p.last {
		return
	}
	p.last = line
	if !p.tty {
		fmt.Fprintln(p.w, line)
		return
	}
	filled := 0
	if total > 0 {
		filled = finished * barWidth / total
	}
	bar := strings.Repeat("#", filled) + strings.Repeat(".", barWidth-filled)
	fmt.Fprintf(p.w, "\r[%s] %s", bar, line)
}

// done ends the bar's line on a terminal.
func (p *progress) done() {
	if p.tty && p.last != "" {
		fmt.Fprintln(p.w)
	}
}
