package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ErrStreamEnded is wrapped by the error of WatchProgress when the stream
// ended (or went silent) before its "done" event: the command is still
// running, and a caller may watch again or poll GetCommand.
var ErrStreamEnded = errors.New("progress stream ended before every order finished")

// errStreamIdle cancels a stream that stayed silent too long.
var errStreamIdle = errors.New("progress stream idle")

// minStreamIdle is the shortest silence after which a progress stream is
// taken for broken; the server sends keep-alive comments more often.
const minStreamIdle = time.Minute

// WatchProgress follows GET /api/v1/commands/{id}/progress, a Server-Sent
// Events stream, and calls fn (when not nil) with each progress event, the
// last one included. It returns the last event, whose Done is true, once
// every order finished.
//
// The stream is not bound by the client's Timeout; it is taken for broken
// when it stays silent (no event, no keep-alive) for twice that, or a
// minute, whichever is longer. An early end or a silence returns the last
// event seen with an error that wraps ErrStreamEnded; a non-2xx answer is
// an *APIError (404 from a server without the progress stream).
func (c *Client) WatchProgress(ctx context.Context, id string, fn func(Progress)) (Progress, error) {
	var last Progress
	if id == "" {
		return last, errors.New("watch progress: empty id")
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	idle := max(2*c.http.Timeout, minStreamIdle)
	timer := time.AfterFunc(idle, func() { cancel(errStreamIdle) })
	defer timer.Stop()

	req, err := c.newRequest(ctx, http.MethodGet, "/api/v1/commands/"+url.PathEscape(id)+"/progress", nil, nil)
	if err != nil {
		return last, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	// The client's Timeout would cut the stream: the idle timer stands in.
	hc := *c.http
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		if context.Cause(ctx) == errStreamIdle {
			return last, fmt.Errorf("progress of command %s: no answer in %v: %w", id, idle, ErrStreamEnded)
		}
		return last, describeTransportError(c.base.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return last, apiError(resp.StatusCode, data)
	}

	events := newEventReader(&idleReader{r: resp.Body, t: timer, d: idle})
	for {
		ev, err := events.next()
		switch {
		case err == nil:
		case context.Cause(ctx) == errStreamIdle:
			return last, fmt.Errorf("progress of command %s: nothing received for %v: %w", id, idle, ErrStreamEnded)
		case ctx.Err() != nil:
			return last, fmt.Errorf("progress of command %s: %w", id, context.Cause(ctx))
		case err == io.EOF:
			return last, fmt.Errorf("progress of command %s: %w", id, ErrStreamEnded)
		default:
			return last, fmt.Errorf("read progress of command %s: %w", id, err)
		}
		if ev.name != "progress" && ev.name != "message" {
			continue // an event of a later version of the API
		}
		var p Progress
		if err := json.Unmarshal([]byte(ev.data), &p); err != nil {
			return last, fmt.Errorf("progress of command %s: decode event: %w", id, err)
		}
		last = p
		if fn != nil {
			fn(p)
		}
		if p.Done {
			return p, nil
		}
	}
}

// idleReader pushes the timer t back by d whenever bytes arrive.
type idleReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.t.Reset(r.d)
	}
	return n, err
}

// maxEventLine bounds one line of an event stream.
const maxEventLine = 1 << 20

// event is one Server-Sent Event.
type event struct {
	name string // "message" when the stream did not name it
	data string // the data lines, joined by "\n"
}

// eventReader reads a text/event-stream body as the HTML standard says
// (https://html.spec.whatwg.org/multipage/server-sent-events.html): lines
// end with LF, CR or CRLF; a blank line ends an event; lines starting with
// ':' are comments (keep-alives); an event's data lines are joined by "\n";
// an event not ended by a blank line when the stream ends is dropped.
type eventReader struct {
	sc    *bufio.Scanner
	first bool
}

func newEventReader(r io.Reader) *eventReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxEventLine)
	sc.Split(scanEventLines)
	return &eventReader{sc: sc, first: true}
}

// next returns the next event, or io.EOF at the end of the stream.
func (r *eventReader) next() (event, error) {
	var (
		name    string
		data    strings.Builder
		hasData bool
	)
	for r.sc.Scan() {
		line := r.sc.Text()
		if r.first {
			line = strings.TrimPrefix(line, "\ufeff")
			r.first = false
		}
		if line == "" {
			if hasData {
				if name == "" {
					name = "message"
				}
				return event{name: name, data: data.String()}, nil
			}
			name = ""
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, found := strings.Cut(line, ":")
		if found {
			value = strings.TrimPrefix(value, " ")
		}
		switch field {
		case "event":
			name = value
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
		}
	}
	if err := r.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return event{}, fmt.Errorf("event stream line longer than %d bytes", maxEventLine)
		}
		return event{}, err
	}
	return event{}, io.EOF
}

// scanEventLines is a bufio.SplitFunc for lines ended by LF, CR or CRLF.
func scanEventLines(data []byte, atEOF bool) (int, []byte, error) {
	i := bytes.IndexAny(data, "\r\n")
	switch {
	case i < 0 && atEOF && len(data) > 0:
		return len(data), data, nil // a last line without its end
	case i < 0:
		return 0, nil, nil
	case data[i] == '\n':
		return i + 1, data[:i], nil
	case i+1 < len(data) && data[i+1] == '\n':
		return i + 2, data[:i], nil
	case i+1 < len(data) || atEOF:
		return i + 1, data[:i], nil
	}
	return 0, nil, nil // a CR at the end: wait for the byte after it
}
