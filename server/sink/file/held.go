package file

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/sink/ndjson"
)

var _ tether.HeldSink = (*Sink)(nil)

// heldSlack widens the time window Held reads: file modification times
// come from a coarser clock than the time a batch was accepted.
const heldSlack = time.Minute

// Held returns the ids of the events of the agent's batch seq that the
// directory's files hold, plain or compressed. It reads only the files
// written since since (less a minute), so it costs the reading of what was
// written since the batch was first accepted: typically the files a crash
// left and the first ones of the restarted server. A line cut short (by a
// crash in the middle of a write) holds nothing.
func (s *Sink) Held(ctx context.Context, agentID string, seq uint64, since time.Time) (map[string]bool, error) {
	segs, err := listSegments(s.dir)
	if err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	needle, err := json.Marshal(agentID)
	if err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	needle = append([]byte(`"agent_id":`), needle...)
	held := map[string]bool{}
	from := since.Add(-heldSlack)
	for _, sg := range segs {
		if (!sg.plain || sg.plainMod.Before(from)) && (!sg.zst || sg.zstMod.Before(from)) {
			continue
		}
		err := s.scan(sg, func(line []byte) {
			if !bytes.Contains(line, needle) {
				return
			}
			var r struct {
				AgentID  string `json:"agent_id"`
				Sequence uint64 `json:"sequence"`
				EventID  string `json:"event_id"`
			}
			if json.Unmarshal(line, &r) == nil && r.AgentID == agentID && r.Sequence == seq {
				held[r.EventID] = true
			}
		})
		if err != nil {
			return nil, fmt.Errorf("file sink: read %s: %w", sg.base, err)
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("file sink: %w", err)
		}
	}
	return held, nil
}

// scan calls fn with each whole line of the segment, from its plain file,
// or from its compressed copy when there is none (or when compression
// removed the plain file meanwhile). A segment removed meanwhile (by
// retention) has no lines.
func (s *Sink) scan(sg *segment, fn func(line []byte)) error {
	path := filepath.Join(s.dir, sg.base)
	var r io.Reader
	if sg.plain {
		f, err := os.Open(path)
		switch {
		case err == nil:
			defer f.Close()
			r = f
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
	}
	if r == nil {
		f, err := os.Open(path + zstSuffix)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		defer f.Close()
		d, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return err
		}
		defer d.Close()
		r = d
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), ndjson.MaxLine)
	sc.Split(wholeLines)
	for sc.Scan() {
		fn(sc.Bytes())
	}
	return sc.Err()
}

// wholeLines is bufio.ScanLines without the last line when it does not
// end with a newline.
func wholeLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF {
		return len(data), nil, nil // a partial line: skipped
	}
	return 0, nil, nil
}
