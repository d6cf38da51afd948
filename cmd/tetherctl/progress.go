package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progress shows how far a command got: a bar redrawn in place on a
// terminal, or one plain line per change otherwise (logs, pipes, CI), at
// most one every `every` except the first and the last.
type progress struct {
	w     io.Writer
	tty   bool
	every time.Duration

	last    string    // the line shown last
	shownAt time.Time // when
	held    string    // a line not shown yet: too soon after the last
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, every: time.Second}
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
		p.held = ""
		return
	}
	if !p.tty {
		if p.last != "" && finished < total && now().Sub(p.shownAt) < p.every {
			p.held = line
			return
		}
		p.show(line)
		fmt.Fprintln(p.w, line)
		return
	}
	p.show(line)
	filled := 0
	if total > 0 {
		filled = min(finished, total) * barWidth / total
	}
	bar := strings.Repeat("#", filled) + strings.Repeat(".", barWidth-filled)
	fmt.Fprintf(p.w, "\r[%s] %s", bar, line)
}

func (p *progress) show(line string) {
	p.last, p.shownAt, p.held = line, now(), ""
}

// done shows a line held back, and ends the bar's line on a terminal.
func (p *progress) done() {
	if p.held != "" {
		fmt.Fprintln(p.w, p.held)
		p.held = ""
	}
	if p.tty && p.last != "" {
		fmt.Fprintln(p.w)
	}
}
