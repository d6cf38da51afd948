package modules

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tetherhq/tether/agent/store"
)

// The log collector's keys in the outbox's module keys.
const (
	lcFilePrefix = "logcollector/file/" // + file id → fileState (JSON)
	lcGlobPrefix = "logcollector/glob/" // + pattern → when it was first seen
)

const (
	lcTurnLines = 5000    // most lines queued in one outbox transaction
	lcTurnBytes = 4 << 20 // most bytes read in one turn
	lcChunk     = 64 << 10
	lcHeadBytes = 1024            // bytes of a file's start that identify it
	lcIdleClose = 5 * time.Second // a rotated-away file quiet this long is closed
)

// linePayload is the payload of a logcollector "line" event.
type linePayload struct {
	// Path is the file's path when the line was read.
	Path string `json:"path"`
	// Line is the line without its end (\n or \r\n); invalid UTF-8 bytes
	// become U+FFFD.
	Line string `json:"line"`
	// Offset is the byte offset in the file of the line's (or part's) first
	// byte.
	Offset int64 `json:"offset"`
	// Part numbers the parts of a line longer than max_line_bytes, from 1;
	// absent for a whole line.
	Part int `json:"part,omitempty"`
	// More is true on every part but the last of a split line.
	More bool `json:"more,omitempty"`
}

// fileState is what is kept on disk per file followed, in the transaction
// of the lines read.
type fileState struct {
	// Path is where the file was last seen.
	Path string `json:"path"`
	// Offset is the first byte not sent yet.
	Offset int64 `json:"offset"`
	// Part is how many parts of the line at Offset were sent already.
	Part int `json:"part,omitempty"`
	// HeadLen and HeadSum identify the file: the SHA-256 of its first
	// HeadLen bytes, so that a reused inode or a truncated and rewritten
	// file is not taken for the file followed.
	HeadLen int    `json:"head_len"`
	HeadSum string `json:"head_sum,omitempty"`
}

// tail is one open file being followed.
type tail struct {
	id      string
	f       *os.File
	st      fileState // as it will be after the pending records are stored
	buf     []byte    // bytes read from st.Offset on, not sent yet
	readPos int64     // st.Offset + len(buf)
	size    int64     // size at the last check or read
	dirty   bool      // st changed since stored

	orphan     bool      // no longer at a path the patterns match
	lastGrowth time.Time // last time bytes were read or the file was found
}

type logCollector struct {
	m      *Manager
	cfg    LogCollectorConfig
	tails  map[string]*tail
	order  []string // tail ids, for fair turns
	next   int
	globs  map[string]bool
	saved  map[string]fileState // states from disk not matched yet (first scan)
	meta   map[string][]byte    // pending module keys
	recs   []store.Record
	bytes  int
	chunk  []byte
	status lcStatus
}

// lcStatus is the log collector's part of the health document.
type lcStatus struct {
	Files       int    `json:"files"`
	Lines       uint64 `json:"lines"`
	Bytes       uint64 `json:"bytes"`
	Rotations   uint64 `json:"rotations"`
	Truncations uint64 `json:"truncations"`
	Paused      bool   `json:"paused"`
}

func (m *Manager) runLogCollector(ctx context.Context, cfg LogCollectorConfig) error {
	lc := &logCollector{m: m, cfg: cfg, tails: map[string]*tail{}, globs: map[string]bool{},
		saved: map[string]fileState{}, meta: map[string][]byte{}, chunk: make([]byte, lcChunk)}
	defer lc.closeAll()
	if err := lc.load(); err != nil {
		return err
	}
	first, lastScan := true, time.Time{}
	for {
		if m.opts.Backlogged() {
			lc.status.Paused = true
			m.setStatus("logcollector", lc.status)
			if !sleep(ctx, cfg.PollInterval) {
				return nil
			}
			continue
		}
		lc.status.Paused = false
		if first || time.Since(lastScan) >= cfg.PollInterval {
			lc.scan(first)
			first, lastScan = false, time.Now()
		}
		if err := lc.readTurn(); err != nil {
			return err
		}
		n := len(lc.recs)
		if err := lc.commit(); err != nil {
			return err
		}
		m.setStatus("logcollector", lc.status)
		if n == 0 && !sleep(ctx, cfg.PollInterval) {
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// load reads the states kept by earlier runs.
func (lc *logCollector) load() error {
	kv, err := lc.m.opts.Outbox.MetaPrefix("logcollector/")
	if err != nil {
		return err
	}
	configured := map[string]bool{}
	for _, f := range lc.cfg.Files {
		configured[f.Path] = true
	}
	for k, v := range kv {
		switch {
		case strings.HasPrefix(k, lcFilePrefix):
			var st fileState
			if err := json.Unmarshal(v, &st); err != nil {
				lc.m.log.Warn("logcollector: unreadable file state dropped", "key", k, "err", err)
				lc.meta[k] = nil
				continue
			}
			lc.saved[strings.TrimPrefix(k, lcFilePrefix)] = st
		case strings.HasPrefix(k, lcGlobPrefix):
			g := strings.TrimPrefix(k, lcGlobPrefix)
			if configured[g] {
				lc.globs[g] = true
			} else {
				lc.meta[k] = nil // forgotten: configured again later, it starts afresh
			}
		}
	}
	return nil
}

// scan finds the files the patterns match now, opens new ones, notices
// files rotated away (renamed or deleted: read to their end, then closed)
// and files truncated in place (copytruncate: read again from the start).
func (lc *logCollector) scan(first bool) {
	now := time.Now()
	seen := map[string]bool{}
	for _, g := range lc.cfg.Files {
		matches, _ := filepath.Glob(g.Path) // the pattern was validated
		sort.Strings(matches)
		fresh := !lc.globs[g.Path]
		for _, p := range matches {
			fi, err := os.Stat(p)
			if err != nil || !fi.Mode().IsRegular() {
				continue
			}
			id := fileIDOf(p, fi)
			if seen[id] {
				continue // another name of a file already matched
			}
			seen[id] = true
			t := lc.tails[id]
			if t == nil {
				start := int64(0)
				if fresh && g.StartAt == "end" {
					start = fi.Size()
				}
				var ok bool
				if t, ok = lc.open(id, p, start); !ok {
					continue
				}
			}
			if t.st.Path != p {
				t.st.Path, t.dirty = p, true
			}
			if t.orphan {
				t.orphan = false
			}
			lc.check(t)
		}
		if fresh {
			lc.globs[g.Path] = true
			lc.meta[lcGlobPrefix+g.Path] = []byte(now.UTC().Format(time.RFC3339))
		}
	}
	if first {
		// Files followed before the agent stopped and renamed away since
		// (rotated while it was down): finish them if they are still in
		// their directory.
		for id, st := range lc.saved {
			if !seen[id] {
				if p := findInDir(filepath.Dir(st.Path), id); p != "" && p != st.Path && lc.matched(st.Path) {
					if t, ok := lc.open(id, p, 0); ok {
						t.orphan, t.lastGrowth = true, now
						lc.m.log.Info("logcollector: finishing a rotated file followed before the restart", "path", p, "was", st.Path)
						continue
					}
				}
				lc.meta[lcFilePrefix+id] = nil
			}
		}
		lc.saved = nil
	}
	for id, t := range lc.tails {
		if !seen[id] && !t.orphan {
			t.orphan, t.lastGrowth = true, now
			lc.status.Rotations++
			lc.m.log.Debug("logcollector: file rotated away; reading it to its end", "path", t.st.Path)
		}
	}
	lc.status.Files = len(lc.tails)
}

// matched reports whether a configured pattern matches path.
func (lc *logCollector) matched(path string) bool {
	for _, g := range lc.cfg.Files {
		if ok, _ := filepath.Match(g.Path, path); ok {
			return true
		}
	}
	return false
}

// open opens a file to follow: from its saved state when it is the same
// file, else from start.
func (lc *logCollector) open(id, path string, start int64) (*tail, bool) {
	f, err := os.Open(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			lc.m.log.Warn("logcollector: cannot open file", "path", path, "err", err)
		}
		return nil, false
	}
	fi, err := f.Stat()
	if err != nil || fileIDOf(path, fi) != id {
		f.Close() // replaced between the stat and the open: next scan
		return nil, false
	}
	t := &tail{id: id, f: f, size: fi.Size(), lastGrowth: time.Now(), dirty: true}
	t.st = fileState{Path: path, Offset: start}
	if st, ok := lc.saved[id]; ok {
		delete(lc.saved, id)
		if sameHead(f, st) && st.Offset <= fi.Size() {
			t.st = st
			t.st.Path = path
		}
	}
	if t.st.Offset > 0 && t.st.HeadLen == 0 {
		lc.updateHead(t, t.st.Offset)
	}
	t.readPos = t.st.Offset
	lc.tails[id] = t
	lc.order = append(lc.order, id)
	return t, true
}

// check notices a file truncated or rewritten since it was read.
func (lc *logCollector) check(t *tail) {
	fi, err := t.f.Stat()
	if err != nil {
		return
	}
	size := fi.Size()
	t.size = size
	if size < t.readPos || !sameHead(t.f, t.st) {
		lc.m.log.Info("logcollector: file truncated; reading it from its start", "path", t.st.Path, "size", size, "was_at", t.readPos)
		lc.status.Truncations++
		lc.flushPartial(t)
		t.st = fileState{Path: t.st.Path}
		t.buf, t.readPos, t.dirty = t.buf[:0], 0, true
	}
}

// sameHead reports whether f starts with the bytes st identified its file
// by.
func sameHead(f *os.File, st fileState) bool {
	if st.HeadLen == 0 {
		return true
	}
	b := make([]byte, st.HeadLen)
	if _, err := f.ReadAt(b, 0); err != nil {
		return false
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]) == st.HeadSum
}

func (lc *logCollector) updateHead(t *tail, upTo int64) {
	n := int(min(upTo, lcHeadBytes))
	if n <= t.st.HeadLen {
		return
	}
	b := make([]byte, n)
	if _, err := t.f.ReadAt(b, 0); err != nil {
		return
	}
	sum := sha256.Sum256(b)
	t.st.HeadLen, t.st.HeadSum, t.dirty = n, hex.EncodeToString(sum[:]), true
}

// readTurn reads new lines from the files, within one turn's budget,
// starting with a different file each turn.
func (lc *logCollector) readTurn() error {
	if len(lc.order) == 0 {
		return nil
	}
	lc.next %= len(lc.order)
	ids := append(append([]string{}, lc.order[lc.next:]...), lc.order[:lc.next]...)
	lc.next++
	for _, id := range ids {
		if len(lc.recs) >= lcTurnLines || lc.bytes >= lcTurnBytes {
			break
		}
		t := lc.tails[id]
		got, err := lc.read(t)
		if err != nil {
			return fmt.Errorf("read %s: %w", t.st.Path, err)
		}
		if got {
			t.lastGrowth = time.Now()
		} else if t.orphan && lc.finished(t) {
			lc.close(t)
		}
	}
	return nil
}

// finished reports whether a file rotated away is done with: deleted, or
// quiet for lcIdleClose.
func (lc *logCollector) finished(t *tail) bool {
	if time.Since(t.lastGrowth) >= lcIdleClose {
		return true
	}
	fi, err := t.f.Stat()
	return err != nil || linkCount(fi) == 0
}

// read reads what t's file has past readPos and turns complete lines into
// records; it reports whether it read anything.
func (lc *logCollector) read(t *tail) (bool, error) {
	got := false
	for len(lc.recs) < lcTurnLines && lc.bytes < lcTurnBytes {
		n, err := t.f.ReadAt(lc.chunk, t.readPos)
		if n > 0 {
			got = true
			t.buf = append(t.buf, lc.chunk[:n]...)
			t.readPos += int64(n)
			lc.bytes += n
			lc.lines(t)
			if t.st.HeadLen < lcHeadBytes {
				lc.updateHead(t, t.readPos)
			}
		}
		if err != nil && err != io.EOF {
			return got, err
		}
		if n < len(lc.chunk) {
			break
		}
	}
	if t.readPos > t.size {
		t.size = t.readPos
	}
	return got, nil
}

// lines queues the complete lines of t.buf, and parts of lines longer than
// the limit.
func (lc *logCollector) lines(t *tail) {
	max := lc.cfg.MaxLineBytes
	start := 0
	for {
		rest := t.buf[start:]
		i := bytes.IndexByte(rest, '\n')
		if i < 0 && len(rest) <= max || i >= 0 && i <= max {
			if i < 0 {
				break
			}
			line := rest[:i]
			line = bytes.TrimSuffix(line, []byte{'\r'})
			p := linePayload{Path: t.st.Path, Line: string(line), Offset: t.st.Offset}
			if t.st.Part > 0 {
				p.Part = t.st.Part + 1
			}
			lc.emit(t, p)
			t.st.Offset += int64(i + 1)
			t.st.Part = 0
			start += i + 1
			continue
		}
		// Longer than the limit: send a part, cut at a character boundary.
		cut := max
		for c := max; c > max-utf8.UTFMax && c > 0; c-- {
			if utf8.RuneStart(rest[c]) {
				cut = c
				break
			}
		}
		t.st.Part++
		lc.emit(t, linePayload{Path: t.st.Path, Line: string(rest[:cut]), Offset: t.st.Offset, Part: t.st.Part, More: true})
		t.st.Offset += int64(cut)
		start += cut
	}
	t.buf = append(t.buf[:0], t.buf[start:]...)
}

func (lc *logCollector) emit(t *tail, p linePayload) {
	lc.recs = append(lc.recs, store.Record{Event: newEvent("logcollector", "line", mustJSON(p))})
	lc.status.Lines++
	lc.status.Bytes += uint64(len(p.Line))
	t.dirty = true
}

// flushPartial sends what is left of t's last line, which will never be
// completed (its file is closed, or was truncated).
func (lc *logCollector) flushPartial(t *tail) {
	if len(t.buf) == 0 {
		return
	}
	line := bytes.TrimSuffix(t.buf, []byte{'\r'})
	p := linePayload{Path: t.st.Path, Line: string(line), Offset: t.st.Offset}
	if t.st.Part > 0 {
		p.Part = t.st.Part + 1
	}
	lc.emit(t, p)
	t.st.Offset += int64(len(t.buf))
	t.st.Part = 0
	t.buf = t.buf[:0]
}

// close sends t's last partial line, forgets its state and closes it.
func (lc *logCollector) close(t *tail) {
	lc.flushPartial(t)
	lc.meta[lcFilePrefix+t.id] = nil
	t.dirty = false
	t.f.Close()
	delete(lc.tails, t.id)
	for i, id := range lc.order {
		if id == t.id {
			lc.order = append(lc.order[:i], lc.order[i+1:]...)
			break
		}
	}
	lc.status.Files = len(lc.tails)
}

// commit stores the pending records and the states of the files they came
// from in one transaction.
func (lc *logCollector) commit() error {
	for id, t := range lc.tails {
		if t.dirty {
			lc.meta[lcFilePrefix+id] = mustJSON(t.st)
		}
	}
	if len(lc.recs) == 0 && len(lc.meta) == 0 {
		return nil
	}
	if err := lc.m.opts.Outbox.AppendWith(lc.recs, lc.meta); err != nil {
		return err
	}
	for _, t := range lc.tails {
		t.dirty = false
	}
	lc.recs, lc.bytes = lc.recs[:0], 0
	clear(lc.meta)
	return nil
}

func (lc *logCollector) closeAll() {
	for _, t := range lc.tails {
		t.f.Close()
	}
}
