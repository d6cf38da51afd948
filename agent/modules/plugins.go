package modules

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/tetherhq/tether/agent/store"
	"github.com/tetherhq/tether/client"
	pluginv1 "github.com/tetherhq/tether/gen/tether/plugin/v1"
	"github.com/tetherhq/tether/plugin"
	"google.golang.org/protobuf/proto"
)

// Plugin directories in the data directory.
const (
	PluginsDir     = "plugins"      // executables a centralized configuration may name
	PluginStateDir = "plugin-state" // one directory per plugin, kept across runs
)

const (
	pluginStopGrace  = 5 * time.Second
	pluginStableRun  = time.Minute // a run this long resets the restart delay
	pluginBatch      = 1000        // most events queued in one transaction
	pluginPath       = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	maxPluginPayload = 1 << 20
	maxPluginLogLine = 4 << 10
)

// pluginStatus is a plugin's part of the health document.
type pluginStatus struct {
	State     string    `json:"state"` // running, waiting (to restart), failed
	PID       int       `json:"pid,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	Restarts  int       `json:"restarts"`
	LastExit  string    `json:"last_exit,omitempty"`
	Events    uint64    `json:"events"`
	Refused   uint64    `json:"refused_events"`
}

// superviseplugin runs a plugin until ctx ends, starting it again after
// each exit with a delay doubling from PluginRestartMin to
// PluginRestartMax, back to the minimum after a run of a minute.
func (m *Manager) superviseplugin(ctx context.Context, cfg PluginConfig) {
	name := "plugin/" + cfg.Name
	log := m.log.With("plugin", cfg.Name)
	st := &pluginStatus{}
	delay := m.opts.PluginRestartMin
	for {
		started := time.Now()
		err := m.runPlugin(ctx, cfg, log, st)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) >= pluginStableRun {
			delay = m.opts.PluginRestartMin
		}
		st.State, st.PID, st.LastExit = "waiting", 0, err.Error()
		st.Restarts++
		m.setStatus(name, *st)
		log.Warn("plugin stopped; starting it again later", "err", err, "retry_in", delay)
		if !sleep(ctx, delay) {
			return
		}
		delay = min(2*delay, m.opts.PluginRestartMax)
	}
}

// runPlugin runs the plugin once: it returns why the run ended, or nil
// when ctx ended and the plugin was stopped.
func (m *Manager) runPlugin(ctx context.Context, cfg PluginConfig, log *slog.Logger, st *pluginStatus) error {
	name := "plugin/" + cfg.Name
	path, err := resolvePlugin(m.opts.DataDir, cfg.Command)
	if err != nil {
		return err
	}
	stateDir := filepath.Join(m.opts.DataDir, PluginStateDir, cfg.Name)
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("create its state directory: %w", err)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return err
	}
	cmd := exec.Command(path, cfg.Args...)
	cmd.Dir = stateDir
	cmd.Env = []string{"PATH=" + pluginPath, "LANG=C", "TETHER_PLUGIN_NAME=" + cfg.Name, "TETHER_PLUGIN_STATE_DIR=" + stateDir}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	inProcessGroup(cmd)
	err = cmd.Start()
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return fmt.Errorf("start %s: %w", path, err)
	}
	defer outR.Close()
	*st = pluginStatus{State: "running", PID: cmd.Process.Pid, StartedAt: time.Now().UTC(), Restarts: st.Restarts, LastExit: st.LastExit}
	m.setStatus(name, *st)
	log.Info("plugin started", "path", path, "pid", cmd.Process.Pid)

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// Standard error: logged line by line.
	var stderrDone sync.WaitGroup
	stderrDone.Go(func() { logLines(errR, log) })
	defer stderrDone.Wait()

	// Standard input: Start, then acknowledgements, then Stop.
	conn := &pluginInput{w: plugin.NewWriter(inW), in: inW, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	cfgJSON := cfg.Config
	if cfgJSON == nil {
		cfgJSON = json.RawMessage("null")
	}
	go conn.run(&pluginv1.Start{ProtocolVersion: 1, Name: cfg.Name, Config: cfgJSON,
		AgentId: m.opts.AgentID, AgentVersion: m.opts.Version, StateDir: stateDir})
	defer conn.close()

	// Standard output: frames, read by a goroutine into events.
	events := make(chan pluginEvent, pluginBatch)
	var readErr error
	var refused atomic.Uint64
	go func() {
		defer close(events)
		readErr = readPlugin(outR, cfg.Name, log, &refused, events)
	}()

	var (
		result   error
		stopping <-chan time.Time
		done     = ctx.Done()
		exitErr  error
		hasExit  bool
		batch    []store.Record
		seq      uint64
	)
	for events != nil || !hasExit {
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil
				switch {
				case readErr != nil && result == nil:
					result = readErr
					killGroup(cmd) // it speaks something else: no point waiting
				case !hasExit && stopping == nil:
					// It closed its output: it has nothing more to say.
					stopping = time.After(pluginStopGrace)
				}
				continue
			}
			batch, seq = append(batch[:0], ev.rec), ev.seq
		more:
			for len(batch) < pluginBatch {
				select {
				case ev, ok := <-events:
					if !ok {
						break more
					}
					batch = append(batch, ev.rec)
					seq = max(seq, ev.seq)
				default:
					break more
				}
			}
			if err := m.opts.Outbox.AppendWith(batch, nil); err != nil {
				if result == nil {
					result = fmt.Errorf("queue its events: %w", err)
				}
				killGroup(cmd)
				continue
			}
			st.Events += uint64(len(batch))
			st.Refused = refused.Load()
			m.setStatus(name, *st)
			if seq > 0 {
				conn.ack(seq)
			}
		case err := <-exited:
			exitErr, hasExit = err, true
			exited = nil
			// Whatever it started and left behind holds its output
			// open: end it, so that reading ends.
			killGroup(cmd)
		case <-done:
			done = nil
			conn.sendStop()
			stopping = time.After(pluginStopGrace)
		case <-stopping:
			stopping = nil
			log.Warn("plugin did not stop within the grace period; killed", "grace", pluginStopGrace)
			killGroup(cmd)
		}
	}
	if ctx.Err() != nil {
		log.Info("plugin stopped")
		return nil
	}
	if result != nil {
		return result
	}
	if exitErr != nil {
		return fmt.Errorf("exited: %w", exitErr)
	}
	return errors.New("exited with status 0")
}

// pluginEvent is an event read from a plugin, with the plugin's sequence
// number for it.
type pluginEvent struct {
	rec store.Record
	seq uint64
}

// readPlugin reads frames until the plugin's output ends (nil) or is not
// made of PluginMessage frames (the error).
func readPlugin(r io.Reader, name string, log *slog.Logger, refused *atomic.Uint64, out chan<- pluginEvent) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var buf []byte
	for {
		b, err := plugin.ReadFrame(br, buf, plugin.MaxFrameBytes)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read its output: %w", err)
		}
		buf = b
		var msg pluginv1.PluginMessage
		if err := proto.Unmarshal(b, &msg); err != nil {
			return fmt.Errorf("its output is not tether.plugin.v1 frames: %w", err)
		}
		switch x := msg.Message.(type) {
		case *pluginv1.PluginMessage_Event:
			rec, err := pluginRecord(name, x.Event)
			if err != nil {
				if n := refused.Add(1); n <= 10 || n%1000 == 0 {
					log.Warn("plugin event refused", "err", err, "refused", n)
				}
				continue
			}
			out <- pluginEvent{rec: rec, seq: x.Event.GetSequence()}
		case *pluginv1.PluginMessage_Log:
			text := x.Log.GetMessage()
			if len(text) > maxPluginLogLine {
				text = strings.ToValidUTF8(text[:maxPluginLogLine], "") + "…"
			}
			log.Log(context.Background(), pluginLevel(x.Log.GetLevel()), text)
		}
	}
}

// pluginRecord checks a plugin's event against the limits the server
// applies, so that one bad event cannot make the server refuse the batch
// that holds it, and makes it an outbox record. The payload is checked,
// not decoded.
func pluginRecord(name string, e *pluginv1.Event) (store.Record, error) {
	jsonPayload := e.GetEncoding() != pluginv1.PayloadEncoding_PAYLOAD_ENCODING_PROTOBUF
	switch {
	case e.GetType() == "" || len(e.GetType()) > 128 || !utf8.ValidString(e.GetType()):
		return store.Record{}, errors.New("type: want 1 to 128 bytes of UTF-8")
	case len(e.GetPayload()) > maxPluginPayload:
		return store.Record{}, fmt.Errorf("payload: %d bytes, at most %d", len(e.GetPayload()), maxPluginPayload)
	case e.GetEncoding() != pluginv1.PayloadEncoding_PAYLOAD_ENCODING_UNSPECIFIED && e.GetEncoding() != pluginv1.PayloadEncoding_PAYLOAD_ENCODING_JSON && jsonPayload:
		return store.Record{}, fmt.Errorf("encoding: unknown value %d", e.GetEncoding())
	case jsonPayload && len(e.GetPayload()) > 0 && !json.Valid(e.GetPayload()):
		return store.Record{}, errors.New("payload: not valid JSON (set encoding to PAYLOAD_ENCODING_PROTOBUF for other bytes)")
	case len(e.GetKey()) > 256 || !utf8.ValidString(e.GetKey()):
		return store.Record{}, errors.New("key: want at most 256 bytes of UTF-8")
	case e.GetKey() == "" && e.GetDelete():
		return store.Record{}, errors.New("delete: needs a key")
	case e.GetKey() != "" && !e.GetDelete() && (!jsonPayload || len(e.GetPayload()) == 0):
		return store.Record{}, errors.New("payload: a state upsert needs a JSON document")
	case e.GetCollectedAt() != nil && e.GetCollectedAt().CheckValid() != nil:
		return store.Record{}, errors.New("collected_at: not a valid timestamp")
	}
	at := time.Now().UTC()
	if e.GetCollectedAt() != nil {
		at = e.GetCollectedAt().AsTime()
	}
	ev := client.Event{ID: uuid.NewString(), Module: name, Type: e.GetType(), CollectedAt: at,
		Payload: e.GetPayload(), Protobuf: !jsonPayload}
	if e.GetDelete() {
		ev.Payload, ev.Protobuf = nil, false
	}
	return store.Record{Stateful: e.GetKey() != "", Key: e.GetKey(), Delete: e.GetDelete(), Event: ev}, nil
}

func pluginLevel(l pluginv1.LogLevel) slog.Level {
	switch l {
	case pluginv1.LogLevel_LOG_LEVEL_DEBUG:
		return slog.LevelDebug
	case pluginv1.LogLevel_LOG_LEVEL_WARN:
		return slog.LevelWarn
	case pluginv1.LogLevel_LOG_LEVEL_ERROR:
		return slog.LevelError
	}
	return slog.LevelInfo
}

// logLines logs a plugin's standard error, one line per record.
func logLines(r io.ReadCloser, log *slog.Logger) {
	defer r.Close()
	br := bufio.NewReaderSize(r, maxPluginLogLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			text := strings.ToValidUTF8(strings.TrimRight(string(line), "\r\n"), "\uFFFD")
			if text != "" {
				log.Info("plugin stderr: " + text)
			}
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}

// pluginInput writes a plugin's standard input from one goroutine: the
// Start frame, then the latest acknowledgement whenever there is a new
// one (a plugin slow to read them gets fewer, never a blocked agent),
// then Stop.
type pluginInput struct {
	w    *plugin.Writer
	in   *os.File
	wake chan struct{}
	stop chan struct{}

	mu        sync.Mutex
	acked     uint64 // latest to send
	stopOnce  sync.Once
	closeOnce sync.Once
}

func (p *pluginInput) run(start *pluginv1.Start) {
	defer p.close()
	if p.w.Write(&pluginv1.AgentMessage{Message: &pluginv1.AgentMessage_Start{Start: start}}) != nil {
		<-p.stop
		return
	}
	var sent uint64
	for {
		select {
		case <-p.wake:
			p.mu.Lock()
			seq := p.acked
			p.mu.Unlock()
			if seq > sent {
				sent = seq
				if p.w.Write(&pluginv1.AgentMessage{Message: &pluginv1.AgentMessage_Ack{Ack: &pluginv1.Ack{Sequence: seq}}}) != nil {
					<-p.stop
					return
				}
			}
		case <-p.stop:
			_ = p.w.Write(&pluginv1.AgentMessage{Message: &pluginv1.AgentMessage_Stop{Stop: &pluginv1.Stop{}}})
			return
		}
	}
}

func (p *pluginInput) ack(seq uint64) {
	p.mu.Lock()
	p.acked = max(p.acked, seq)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// sendStop writes Stop, then closes the plugin's standard input.
func (p *pluginInput) sendStop() { p.stopOnce.Do(func() { close(p.stop) }) }

func (p *pluginInput) close() {
	p.sendStop()
	p.closeOnce.Do(func() { p.in.Close() })
}

// resolvePlugin finds a plugin's executable: an absolute path as it is, a
// name inside DATA/plugins (after symbolic links, still inside it). The
// file must be a regular, executable file that not every user may write.
func resolvePlugin(dataDir, command string) (string, error) {
	path := command
	if !filepath.IsAbs(command) {
		dir := filepath.Join(dataDir, PluginsDir)
		realDir, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return "", fmt.Errorf("plugin %q: the plugins directory %s: %w", command, dir, err)
		}
		real, err := filepath.EvalSymlinks(filepath.Join(dir, command))
		if err != nil {
			return "", fmt.Errorf("plugin %q not found in %s: %w", command, dir, err)
		}
		if rel, err := filepath.Rel(realDir, real); err != nil || !filepath.IsLocal(rel) {
			return "", fmt.Errorf("plugin %q resolves to %s, outside the plugins directory %s: refused", command, real, dir)
		}
		path = real
	}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return "", fmt.Errorf("plugin executable: %w", err)
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("plugin executable %s is not a regular file", path)
	case !isExecutable(fi.Mode()):
		return "", fmt.Errorf("plugin executable %s is not executable", path)
	case worldWritable(fi.Mode()):
		return "", fmt.Errorf("plugin executable %s is writable by every user: refused", path)
	}
	return path, nil
}
