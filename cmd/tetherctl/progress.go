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

// byteProgress shows how much of an upload was sent: a bar redrawn in
// place on a terminal, at most every 100ms, for bodies of 1 MiB or more;
// nothing otherwise.
type byteProgress struct {
	w       io.Writer
	show    bool
	total   int64
	sent    int64
	shownAt time.Time
	drawn   bool
}

func newByteProgress(w io.Writer, total int64) *byteProgress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &byteProgress{w: w, show: tty && total >= 1<<20, total: total}
}

// reader returns r counting what is read from it.
func (p *byteProgress) reader(r io.Reader) io.Reader {
	if !p.show {
		return r
	}
	return &countingReader{r: r, p: p}
}

func (p *byteProgress) add(n int) {
	p.sent += int64(n)
	if t := now(); p.sent >= p.total || t.Sub(p.shownAt) >= 100*time.Millisecond {
		p.shownAt = t
		p.draw()
	}
}

func (p *byteProgress) draw() {
	filled := 0
	if p.total > 0 {
		filled = int(min(p.sent, p.total) * barWidth / p.total)
	}
	bar := strings.Repeat("#", filled) + strings.Repeat(".", barWidth-filled)
	fmt.Fprintf(p.w, "\r[%s] %s / %s uploaded", bar, humanBytes(p.sent), humanBytes(p.total))
	p.drawn = true
}

// done ends the bar's line.
func (p *byteProgress) done() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}

type countingReader struct {
	r io.Reader
	p *byteProgress
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	if n > 0 {
		c.p.add(n)
	}
	return n, err
}
