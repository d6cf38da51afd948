package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tetherhq/tether/server/files"
	"github.com/tetherhq/tether/server/ingest"
	"github.com/tetherhq/tether/server/postgres"
)

// Config is the server's configuration: defaults, then the YAML file, then
// flags, merged in loadConfig and nowhere else.
type Config struct {
	// DataDir holds the SQLite database, TLS material, events and the admin
	// token.
	DataDir string `yaml:"data_dir"`
	// Store is where the node keeps its state: empty for the SQLite
	// database DATA/tether.db, or the PostgreSQL URL (postgres://…) of the
	// database every node of a cluster shares.
	Store string `yaml:"store"`
	// CommsAddr is the comms API listener (agents).
	CommsAddr string `yaml:"comms_addr"`
	// APIAddr is the management API listener (people and tools).
	APIAddr string `yaml:"api_addr"`
	// DebugAddr, when set, serves Go's runtime profiles (net/http/pprof)
	// over plain HTTP, without authentication: keep it on loopback.
	DebugAddr string `yaml:"debug_addr"`
	// PublicNames are extra DNS names or IPs put in the generated server
	// certificate.
	PublicNames []string `yaml:"public_names"`
	// CommsURLs are the comms URLs handed to agents at enrollment (default:
	// the host the agent enrolled through, with the comms port).
	CommsURLs []string `yaml:"comms_urls"`
	// TLS, when CertFile is set, replaces the generated certificates.
	TLS TLSConfig `yaml:"tls"`
	// PollWait is the default long-poll wait; MaxPollWait its upper bound.
	PollWait    Duration `yaml:"poll_wait"`
	MaxPollWait Duration `yaml:"max_poll_wait"`
	// MaxBodyBytes caps a comms request body.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxConnections bounds the agent connections the comms listener
	// serves at once (0: automatic, from the open-file limit; see
	// limits.go). MaxWaitingPolls bounds the polls waiting at once (0:
	// the max_connections value).
	MaxConnections  int `yaml:"max_connections"`
	MaxWaitingPolls int `yaml:"max_waiting_polls"`
	// TokenTTL is the lifetime of agent JWTs.
	TokenTTL Duration `yaml:"token_ttl"`
	// SweepInterval is how often timed-out orders are failed.
	SweepInterval Duration `yaml:"sweep_interval"`
	// Events configures the event sinks: files, NATS JetStream.
	Events EventsConfig `yaml:"events"`
	// Ingest bounds the event pushes of each agent and of the node.
	Ingest IngestConfig `yaml:"ingest"`
	// Files configures the store of files agents download (DATA/files).
	Files FilesConfig `yaml:"files"`
	// LogLevel is debug, info, warn or error; LogFormat text or json.
	LogLevel  string `yaml:"log_level"`
	LogFormat string `yaml:"log_format"`
	// OrderRetention is how long finished orders stay readable before they
	// are written to the event sinks and deleted; RetentionInterval how
	// often that runs.
	OrderRetention    Duration `yaml:"order_retention"`
	RetentionInterval Duration `yaml:"retention_interval"`

	// path is the configuration file read, for reload-config.
	path string
	// level is the running logger's level, for reload-config.
	level *slog.LevelVar
}

// TLSConfig points at an operator's own PKI.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// CAFile is the CA agents must trust; copied to DATA/tls/ca.crt.
	CAFile string `yaml:"ca_file"`
}

// EventsConfig configures the NDJSON file sink under DATA/events.
type EventsConfig struct {
	// MaxFileBytes and MaxFileAge close the open file at this size, or
	// this long after it was opened (once it holds events).
	MaxFileBytes int64    `yaml:"max_file_bytes"`
	MaxFileAge   Duration `yaml:"max_file_age"`
	// Compress compresses closed files with zstd (NAME.ndjson.zst).
	Compress bool `yaml:"compress"`
	// Retention deletes closed files whose last event is older than this
	// (0: no age limit); MaxTotalBytes deletes the oldest closed files
	// while the event files take more (0: no limit).
	Retention     Duration `yaml:"retention"`
	MaxTotalBytes int64    `yaml:"max_total_bytes"`
	// Files writes the event files (default true). NATS publishes the
	// events to NATS JetStream too, when its urls are set. At least one
	// of them is on.
	Files bool       `yaml:"files"`
	NATS  NATSConfig `yaml:"nats"`
}

// IngestConfig bounds event pushes: each agent's rates (0: no limit) and
// the node's in-flight budget (0: no limit). Past them a push is refused
// with RESOURCE_EXHAUSTED and a retry delay.
type IngestConfig struct {
	// AgentEventsPerSec and AgentBytesPerSec are an agent's sustained
	// rates; the bursts are what it may send at once after a quiet time
	// (0: two seconds of the rate).
	AgentEventsPerSec float64 `yaml:"agent_events_per_sec"`
	AgentEventsBurst  float64 `yaml:"agent_events_burst"`
	AgentBytesPerSec  float64 `yaml:"agent_bytes_per_sec"`
	AgentBytesBurst   float64 `yaml:"agent_bytes_burst"`
	// MaxInflightBatches and MaxInflightBytes bound the pushes the node
	// stores and writes to the sinks at once.
	MaxInflightBatches int   `yaml:"max_inflight_batches"`
	MaxInflightBytes   int64 `yaml:"max_inflight_bytes"`
	// BusyRetryDelay is the base delay given to a push refused by the
	// in-flight budget (the delay is between it and twice it).
	BusyRetryDelay Duration `yaml:"busy_retry_delay"`
}

// limits returns the ingest limits of c.
func (c IngestConfig) limits() ingest.Limits {
	return ingest.Limits{
		AgentEventsPerSec: c.AgentEventsPerSec, AgentEventsBurst: c.AgentEventsBurst,
		AgentBytesPerSec: c.AgentBytesPerSec, AgentBytesBurst: c.AgentBytesBurst,
		MaxInflightRequests: c.MaxInflightBatches, MaxInflightBytes: c.MaxInflightBytes,
		BusyRetryDelay: time.Duration(c.BusyRetryDelay),
	}
}

// FilesConfig configures the file store under DATA/files.
type FilesConfig struct {
	// MaxBytes is the largest file an upload may store.
	MaxBytes int64 `yaml:"max_bytes"`
}

// Duration is a time.Duration written as "50s" in YAML.
type Duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (examples: 50s, 5m, 1h)", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

func defaultConfig() Config {
	return Config{
		DataDir:       "/var/lib/tether-server",
		CommsAddr:     ":7443",
		APIAddr:       ":7444",
		PollWait:      Duration(50 * time.Second),
		MaxPollWait:   Duration(120 * time.Second),
		MaxBodyBytes:  8 << 20,
		TokenTTL:      Duration(15 * time.Minute),
		SweepInterval: Duration(time.Second),
		Events: EventsConfig{MaxFileBytes: 64 << 20, MaxFileAge: Duration(time.Hour), Compress: true,
			Retention: Duration(30 * 24 * time.Hour), MaxTotalBytes: 10 << 30,
			Files: true, NATS: defaultNATSConfig()},
		Ingest: IngestConfig{
			AgentEventsPerSec: ingest.DefaultAgentEventsPerSec, AgentBytesPerSec: ingest.DefaultAgentBytesPerSec,
			MaxInflightBatches: ingest.DefaultMaxInflightRequests, MaxInflightBytes: ingest.DefaultMaxInflightBytes,
			BusyRetryDelay: Duration(ingest.DefaultBusyRetryDelay),
		},
		Files:     FilesConfig{MaxBytes: files.DefaultMaxBytes},
		LogLevel:  "info",
		LogFormat: "text",

		OrderRetention:    Duration(7 * 24 * time.Hour),
		RetentionInterval: Duration(time.Minute),
	}
}

// readConfigFile merges the YAML file at path into c. Unknown keys are
// errors that name the key.
func readConfigFile(c *Config, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if err := checkKeys(data); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// checkKeys names the first unknown key of a configuration document, with
// the keys allowed at its level.
func checkKeys(data []byte) error {
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("not a YAML mapping of keys to values: %w", err)
	}
	return checkLevel("", doc, reflect.TypeOf(Config{}))
}

func checkLevel(prefix string, doc map[string]any, typ reflect.Type) error {
	known := map[string]reflect.Type{}
	var names []string
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		if tag := strings.Split(f.Tag.Get("yaml"), ",")[0]; tag != "" {
			known[tag] = f.Type
			names = append(names, tag)
		}
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ft, ok := known[k]
		if !ok {
			return fmt.Errorf("unknown key %q (allowed here: %s)", prefix+k, strings.Join(names, ", "))
		}
		if sub, isMap := doc[k].(map[string]any); isMap && ft.Kind() == reflect.Struct {
			if err := checkLevel(prefix+k+".", sub, ft); err != nil {
				return err
			}
		}
	}
	return nil
}

// validate checks c and names the key at fault.
func (c *Config) validate() error {
	if c.DataDir == "" {
		return errors.New("data_dir: required")
	}
	if c.DebugAddr != "" {
		if _, _, err := net.SplitHostPort(c.DebugAddr); err != nil {
			return fmt.Errorf("debug_addr: %q is not HOST:PORT (example: 127.0.0.1:6060; empty: off)", c.DebugAddr)
		}
	}
	if c.Store != "" && !postgres.IsURL(c.Store) {
		return errors.New("store: not a PostgreSQL URL: want postgres://USER@HOST:PORT/DATABASE?sslmode=… " +
			"(or empty, for SQLite in data_dir)")
	}
	for key, addr := range map[string]string{"comms_addr": c.CommsAddr, "api_addr": c.APIAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%s: %q is not HOST:PORT (examples: :7443, 127.0.0.1:7443)", key, addr)
		}
	}
	switch {
	case c.PollWait <= 0 || c.MaxPollWait <= 0:
		return errors.New("poll_wait, max_poll_wait: must be positive durations")
	case c.PollWait > c.MaxPollWait:
		return fmt.Errorf("poll_wait: %s is above max_poll_wait %s", time.Duration(c.PollWait), time.Duration(c.MaxPollWait))
	case c.MaxBodyBytes < 64<<10:
		return errors.New("max_body_bytes: at least 65536")
	case c.MaxConnections < 0:
		return errors.New("max_connections: 0 (automatic, from the open-file limit) or more")
	case c.MaxWaitingPolls < 0:
		return errors.New("max_waiting_polls: 0 (the max_connections value) or more")
	case c.TokenTTL < Duration(time.Minute) || c.TokenTTL > Duration(24*time.Hour):
		return errors.New("token_ttl: between 1m and 24h")
	case c.SweepInterval <= 0:
		return errors.New("sweep_interval: must be a positive duration")
	case c.OrderRetention < Duration(time.Minute):
		return errors.New("order_retention: at least 1m")
	case c.RetentionInterval <= 0:
		return errors.New("retention_interval: must be a positive duration")
	case c.Events.MaxFileBytes < 1:
		return errors.New("events.max_file_bytes: at least 1")
	case c.Events.MaxFileAge < Duration(time.Second):
		return errors.New("events.max_file_age: at least 1s")
	case c.Events.Retention < 0 || (c.Events.Retention > 0 && c.Events.Retention < Duration(time.Minute)):
		return errors.New("events.retention: 0 (no age limit) or at least 1m")
	case c.Events.MaxTotalBytes < 0 || (c.Events.MaxTotalBytes > 0 && c.Events.MaxTotalBytes < c.Events.MaxFileBytes):
		return fmt.Errorf("events.max_total_bytes: 0 (no limit) or at least events.max_file_bytes (%d)", c.Events.MaxFileBytes)
	case c.Ingest.AgentEventsPerSec < 0 || c.Ingest.AgentEventsBurst < 0:
		return errors.New("ingest.agent_events_per_sec, ingest.agent_events_burst: 0 (no limit, default burst) or more")
	case c.Ingest.AgentBytesPerSec < 0 || c.Ingest.AgentBytesBurst < 0:
		return errors.New("ingest.agent_bytes_per_sec, ingest.agent_bytes_burst: 0 (no limit, default burst) or more")
	case c.Ingest.MaxInflightBatches < 0:
		return errors.New("ingest.max_inflight_batches: 0 (no limit) or more")
	case c.Ingest.MaxInflightBytes < 0:
		return errors.New("ingest.max_inflight_bytes: 0 (no limit) or more")
	case c.Ingest.BusyRetryDelay < Duration(100*time.Millisecond) || c.Ingest.BusyRetryDelay > Duration(time.Minute):
		return errors.New("ingest.busy_retry_delay: between 100ms and 1m")
	case c.Files.MaxBytes < 1:
		return errors.New("files.max_bytes: at least 1")
	case (c.TLS.CertFile == "") != (c.TLS.KeyFile == ""):
		return errors.New("tls.cert_file, tls.key_file: set both or neither")
	case c.TLS.CertFile != "" && c.TLS.CAFile == "":
		return errors.New("tls.ca_file: required with tls.cert_file (the CA agents must trust)")
	}
	if err := c.Events.validateSinks(); err != nil {
		return err
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("log_format: %q is not one of text, json", c.LogFormat)
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log_level: %q is not one of debug, info, warn, error", s)
}
