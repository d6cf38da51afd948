package file

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// File name parts.
const (
	prefix     = "events-"
	suffix     = ".ndjson"
	zstSuffix  = ".zst"
	tmpSuffix  = ".tmp"
	timeLayout = "20060102T150405Z"
)

// Name returns the name of the file with a given time and seq (its
// compressed copy adds ".zst").
func Name(t time.Time, seq uint64) string {
	return fmt.Sprintf("%s%s-%06d%s", prefix, t.UTC().Format(timeLayout), seq, suffix)
}

// fileKind is what a name in the directory is.
type fileKind int

const (
	kindPlain fileKind = iota + 1 // NAME.ndjson
	kindZst                       // NAME.ndjson.zst
	kindTmp                       // NAME.ndjson.zst.tmp
)

// parseName returns the base name (NAME.ndjson), seq and kind of a file
// named by the sink.
func parseName(name string) (base string, seq uint64, kind fileKind, ok bool) {
	base, kind = name, kindPlain
	if b, cut := strings.CutSuffix(name, suffix+zstSuffix+tmpSuffix); cut {
		base, kind = b+suffix, kindTmp
	} else if b, cut := strings.CutSuffix(name, suffix+zstSuffix); cut {
		base, kind = b+suffix, kindZst
	}
	rest, ok := strings.CutPrefix(base, prefix)
	if !ok {
		return "", 0, 0, false
	}
	rest, ok = strings.CutSuffix(rest, suffix)
	if !ok {
		return "", 0, 0, false
	}
	stamp, seqStr, ok := strings.Cut(rest, "-")
	if !ok {
		return "", 0, 0, false
	}
	if _, err := time.Parse(timeLayout, stamp); err != nil {
		return "", 0, 0, false
	}
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if err != nil {
		return "", 0, 0, false
	}
	return base, seq, kind, true
}

// segment is one file of events, in one or more of its forms.
type segment struct {
	base       string // NAME.ndjson
	seq        uint64
	plain, zst bool // NAME.ndjson, NAME.ndjson.zst exist
	tmp        bool // NAME.ndjson.zst.tmp exists
	plainSize  int64
	zstSize    int64
	plainMod   time.Time
	zstMod     time.Time
}

// size is the bytes the segment takes on disk.
func (sg *segment) size() int64 { return sg.plainSize + sg.zstSize }

// modTime is the time of the segment's last write: the compressed copy
// keeps the plain file's.
func (sg *segment) modTime() time.Time {
	if sg.zst {
		return sg.zstMod
	}
	return sg.plainMod
}

// listSegments returns the segments of dir by seq. Files that vanish while
// it reads (compressed or expired meanwhile) are left out.
func listSegments(dir string) ([]*segment, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	bySeq := map[uint64]*segment{}
	for _, e := range entries {
		base, seq, kind, ok := parseName(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		sg := bySeq[seq]
		if sg == nil {
			sg = &segment{base: base, seq: seq}
			bySeq[seq] = sg
		} else if sg.base != base {
			continue // two names with one seq: not ours; leave it alone
		}
		if kind == kindTmp {
			sg.tmp = true
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, err
		}
		switch kind {
		case kindPlain:
			sg.plain, sg.plainSize, sg.plainMod = true, fi.Size(), fi.ModTime()
		case kindZst:
			sg.zst, sg.zstSize, sg.zstMod = true, fi.Size(), fi.ModTime()
		}
	}
	segs := make([]*segment, 0, len(bySeq))
	for _, sg := range bySeq {
		segs = append(segs, sg)
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].seq < segs[j].seq })
	return segs, nil
}

// recoverDir repairs what a crash may have left in dir, before a sink
// writes there: compressions under way (.tmp files) are removed, as are
// plain files whose compressed copy is complete (it was renamed into place
// only once synced) and empty plain files; a plain file that ends in a
// partial line, a batch never acknowledged, is cut after its last whole
// line. It returns the highest seq of the files it saw, removed or not.
func recoverDir(dir string) (uint64, error) {
	segs, err := listSegments(dir)
	if err != nil {
		return 0, err
	}
	changed := false
	var last uint64
	for _, sg := range segs {
		last = max(last, sg.seq)
		path := filepath.Join(dir, sg.base)
		if sg.tmp {
			if err := removeIfExists(path + zstSuffix + tmpSuffix); err != nil {
				return 0, err
			}
			changed = true
		}
		if sg.plain && (sg.zst || sg.plainSize == 0) {
			if err := removeIfExists(path); err != nil {
				return 0, err
			}
			sg.plain, changed = false, true
		}
		if sg.plain {
			n, err := cutPartialLine(path, sg.plainSize)
			if err != nil {
				return 0, fmt.Errorf("repair %s: %w", sg.base, err)
			}
			changed = changed || n != sg.plainSize
		}
	}
	if changed {
		if err := syncDir(dir); err != nil {
			return 0, err
		}
	}
	return last, nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// cutPartialLine truncates the file at path, of size bytes, after its last
// newline when it does not end with one, and returns its size.
func cutPartialLine(path string, size int64) (int64, error) {
	if size == 0 {
		return 0, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return size, err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	end := size
	for end > 0 {
		n := min(int64(len(buf)), end)
		if _, err := f.ReadAt(buf[:n], end-n); err != nil && !errors.Is(err, io.EOF) {
			return size, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			end = end - n + int64(i) + 1
			break
		}
		end -= n
	}
	if end == size {
		return size, nil
	}
	if err := f.Truncate(end); err != nil {
		return size, err
	}
	return end, f.Sync()
}
