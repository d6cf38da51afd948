package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tetherhq/tether/agent/modules"
	"gopkg.in/yaml.v3"
)

// Config is the agent's local configuration (agent.yaml), with defaults
// applied.
type Config struct {
	// PollWait is how long the server may hold a poll (poll_wait).
	PollWait time.Duration
	// BatchMaxEvents is the most events sent in one batch
	// (batch_max_events).
	BatchMaxEvents int
	// BatchInterval is how long the sender waits for a batch to fill
	// (batch_interval).
	BatchInterval time.Duration
	// BatchMaxBytes is the most event bytes sent in one batch
	// (batch_max_bytes).
	BatchMaxBytes int
	// OutboxMaxBytes bounds the outbox (outbox_max_bytes); OutboxFsyncWindow
	// is how long appends may wait to share a commit (outbox_fsync_window).
	OutboxMaxBytes    int64
	OutboxFsyncWindow time.Duration
	// RateLimitEvents and RateLimitBytes cap what the sender sends per
	// second (rate_limit_events, rate_limit_bytes; 0: no limit).
	RateLimitEvents float64
	RateLimitBytes  int64
	// Compression of the pushes: zstd, gzip or none (compression).
	Compression string
	// LogLevel is debug, info, warn or error (log_level).
	LogLevel string
	// ActiveResponse configures the active-response action
	// (active_response).
	ActiveResponse ActiveResponseConfig
	// Modules configures the modules: the keys logcollector, inventory,
	// health and plugins.
	Modules modules.Config
}

// ActiveResponseConfig is the active_response key of agent.yaml.
type ActiveResponseConfig struct {
	// BinDirs are absolute directories, besides DATA/active-response/bin,
	// whose executables active-response may run (bin_dirs).
	BinDirs []string
}

// DefaultConfig is the configuration when agent.yaml sets nothing.
func DefaultConfig() Config {
	c := Config{PollWait: 50 * time.Second, BatchMaxEvents: 1000, BatchInterval: time.Second, LogLevel: "info"}
	defaultEventConfig(&c)
	c.Modules = modules.DefaultConfig()
	return c
}

var configKeys = slices.Concat([]string{"poll_wait", "batch_max_events", "batch_interval", "log_level", "active_response"}, eventKeys, modules.Keys)

var logLevels = []string{"debug", "info", "warn", "error"}

// MarshalJSON writes the configuration with its file's key names.
func (c Config) MarshalJSON() ([]byte, error) {
	m := map[string]any{
		"poll_wait":        c.PollWait.String(),
		"batch_max_events": c.BatchMaxEvents,
		"batch_interval":   c.BatchInterval.String(),
		"log_level":        c.LogLevel,
		"active_response":  map[string]any{"bin_dirs": append([]string{}, c.ActiveResponse.BinDirs...)},
	}
	maps.Copy(m, c.eventConfigFields())
	maps.Copy(m, c.Modules.Fields())
	return json.Marshal(m)
}

// SlogLevel is LogLevel as a slog.Level.
func (c Config) SlogLevel() slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(c.LogLevel))
	return l
}

// LoadConfig reads the configuration file at path. A missing file yields
// the defaults unless mustExist is set.
func LoadConfig(path string, mustExist bool) (Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !mustExist {
		return DefaultConfig(), nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	cfg, err := ParseConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig parses and validates agent.yaml's contents over the
// defaults. Errors name the key and the allowed values.
func ParseConfig(data []byte) (Config, error) {
	return parseConfigOver(DefaultConfig(), data)
}

// ApplyCentral returns the effective configuration: the centralized
// configuration doc (a JSON object from GetConfig; null or empty: none)
// over the local one. Its keys are those of agent.yaml, validated the same
// way; a key it sets overrides the local file's.
func ApplyCentral(local Config, doc json.RawMessage) (Config, error) {
	if len(doc) == 0 || string(doc) == "null" {
		return local, nil
	}
	cfg, err := parseConfigOver(local, doc) // JSON is YAML
	if err == nil {
		err = refuseLocalOnly(doc)
	}
	if err != nil {
		return local, fmt.Errorf("centralized configuration: %w", err)
	}
	return cfg, nil
}

// parseConfigOver parses a configuration document over cfg.
func parseConfigOver(cfg Config, data []byte) (Config, error) {
	var doc map[string]yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return cfg, fmt.Errorf("not a YAML mapping of keys to values: %w", err)
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		node := doc[k]
		var err error
		switch k {
		case "poll_wait":
			cfg.PollWait, err = durationKey(k, &node, time.Second, 5*time.Minute, "50s")
		case "batch_interval":
			cfg.BatchInterval, err = durationKey(k, &node, 10*time.Millisecond, time.Minute, "1s")
		case "batch_max_events":
			var n int
			if node.Decode(&n) != nil || n < 1 || n > 10000 {
				err = fmt.Errorf("%s: %q is not valid: want an integer from 1 to 10000", k, node.Value)
			}
			cfg.BatchMaxEvents = n
		case "log_level":
			v := strings.ToLower(node.Value)
			if node.Kind != yaml.ScalarNode || !slices.Contains(logLevels, v) {
				err = fmt.Errorf("%s: %q is not valid: want one of %s", k, node.Value, strings.Join(logLevels, ", "))
			}
			cfg.LogLevel = v
		case "active_response":
			cfg.ActiveResponse, err = activeResponseKey(k, &node)
		case "logcollector", "inventory", "health", "plugins":
			err = cfg.Modules.Parse(k, &node)
		default:
			var ok bool
			if ok, err = parseEventKey(&cfg, k, &node); !ok {
				err = fmt.Errorf("unknown key %q (known keys: %s)", k, strings.Join(configKeys, ", "))
			}
		}
		if err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

func durationKey(key string, node *yaml.Node, lo, hi time.Duration, example string) (time.Duration, error) {
	d, err := time.ParseDuration(node.Value)
	if node.Kind != yaml.ScalarNode || err != nil || d < lo || d > hi {
		return 0, fmt.Errorf("%s: %q is not valid: want a duration from %v to %v, like %q", key, node.Value, lo, hi, example)
	}
	return d, nil
}

// activeResponseKey parses active_response: {bin_dirs: [ABSOLUTE_DIR, ...]}.
func activeResponseKey(key string, node *yaml.Node) (ActiveResponseConfig, error) {
	var ar ActiveResponseConfig
	if node.Kind != yaml.MappingNode {
		return ar, fmt.Errorf("%s: want a mapping with the key bin_dirs", key)
	}
	for i := 0; i+1 < len(node.Content); i += 2 {
		name, value := node.Content[i].Value, node.Content[i+1]
		if name != "bin_dirs" {
			return ar, fmt.Errorf("%s: unknown key %q (known keys: bin_dirs)", key, name)
		}
		if value.Kind != yaml.SequenceNode {
			return ar, fmt.Errorf("%s.bin_dirs: want a list of absolute directory paths", key)
		}
		for _, item := range value.Content {
			dir := item.Value
			switch {
			case item.Kind != yaml.ScalarNode || !filepath.IsAbs(dir):
				return ar, fmt.Errorf("%s.bin_dirs: %q is not valid: want an absolute directory path", key, dir)
			case filepath.Dir(filepath.Clean(dir)) == filepath.Clean(dir):
				return ar, fmt.Errorf("%s.bin_dirs: %q is not valid: the root directory would allow every executable", key, dir)
			}
			ar.BinDirs = append(ar.BinDirs, filepath.Clean(dir))
		}
	}
	return ar, nil
}

// refuseLocalOnly refuses, in a centralized configuration, the keys only
// the host's own agent.yaml may set: active_response, and plugins given by
// absolute path, so that whoever manages the server cannot widen what the
// agent may run.
func refuseLocalOnly(doc []byte) error {
	var keys map[string]yaml.Node
	if err := yaml.Unmarshal(doc, &keys); err != nil {
		return err
	}
	if _, ok := keys["active_response"]; ok {
		return errors.New("active_response: not allowed here: the directories active-response may run from are set only in the agent's local agent.yaml")
	}
	if node, ok := keys["plugins"]; ok {
		return modules.RefuseCentral("plugins", &node)
	}
	return nil
}
