package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

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
	// LogLevel is debug, info, warn or error (log_level).
	LogLevel string
}

// DefaultConfig is the configuration when agent.yaml sets nothing.
func DefaultConfig() Config {
	return Config{PollWait: 50 * time.Second, BatchMaxEvents: 1000, BatchInterval: time.Second, LogLevel: "info"}
}

var configKeys = []string{"poll_wait", "batch_max_events", "batch_interval", "log_level"}

var logLevels = []string{"debug", "info", "warn", "error"}

// MarshalJSON writes the configuration with its file's key names.
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{
		"poll_wait":        c.PollWait.String(),
		"batch_max_events": c.BatchMaxEvents,
		"batch_interval":   c.BatchInterval.String(),
		"log_level":        c.LogLevel,
	})
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
		default:
			err = fmt.Errorf("unknown key %q (known keys: %s)", k, strings.Join(configKeys, ", "))
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
