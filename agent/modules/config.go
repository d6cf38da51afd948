package modules

import (
	"encoding/json"
	"fmt"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the modules' part of the agent's configuration: the keys
// logcollector, inventory, health and plugins of agent.yaml (and of a
// centralized configuration).
type Config struct {
	// LogCollector is the logcollector key.
	LogCollector LogCollectorConfig
	// Inventory is the inventory key.
	Inventory InventoryConfig
	// Health is the health key.
	Health HealthConfig
	// Plugins is the plugins key.
	Plugins []PluginConfig
}

// LogCollectorConfig is the logcollector key: the files to follow.
type LogCollectorConfig struct {
	// Files are the files to follow (files).
	Files []LogFile
	// MaxLineBytes is the longest line sent as one event; longer lines are
	// split into parts of this size (max_line_bytes).
	MaxLineBytes int
	// PollInterval is how often files are checked for new lines, new files
	// and rotation (poll_interval).
	PollInterval time.Duration
}

// LogFile is one entry of logcollector.files.
type LogFile struct {
	// Path is an absolute path or glob pattern (path).
	Path string
	// StartAt is where to start in the files that exist when the pattern
	// is first configured: "end" (default) or "beginning" (start_at).
	// Files that appear later are always read from their beginning.
	StartAt string
}

// InventoryConfig is the inventory key.
type InventoryConfig struct {
	// Enabled turns the module on (enabled, default true).
	Enabled bool
	// Interval is the time between two collections (interval).
	Interval time.Duration
	// ResendEvery is how often every document is sent again, changed or
	// not, so the server's state heals if it was lost (resend_every).
	ResendEvery time.Duration
}

// HealthConfig is the health key.
type HealthConfig struct {
	// Enabled turns the module on (enabled, default true).
	Enabled bool
	// Interval is the time between two health documents (interval).
	Interval time.Duration
}

// PluginConfig is one entry of plugins.
type PluginConfig struct {
	// Name names the plugin and is the module of its events (name).
	Name string
	// Command is the executable: a name inside DATA/plugins, or an
	// absolute path (local configuration only) (command).
	Command string
	// Args are its arguments (args).
	Args []string
	// Config is the plugin's own configuration, as JSON, given to it in
	// its Start frame (config; null when unset).
	Config json.RawMessage
}

// Limits and defaults of the module keys.
const (
	DefaultMaxLineBytes = 64 << 10
	minLineBytes        = 1 << 10
	maxLineBytes        = 512 << 10
)

// Keys are the configuration keys this package parses.
var Keys = []string{"health", "inventory", "logcollector", "plugins"}

// builtinModules are module names a plugin may not take.
var builtinModules = []string{"agent", "health", "inventory", "logcollector"}

var pluginNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// DefaultConfig is the modules' configuration when agent.yaml sets none of
// their keys: no files followed, inventory every hour, health every
// minute, no plugins.
func DefaultConfig() Config {
	return Config{
		LogCollector: LogCollectorConfig{MaxLineBytes: DefaultMaxLineBytes, PollInterval: 250 * time.Millisecond},
		Inventory:    InventoryConfig{Enabled: true, Interval: time.Hour, ResendEvery: 24 * time.Hour},
		Health:       HealthConfig{Enabled: true, Interval: time.Minute},
	}
}

// Parse parses one of the Keys into c. A key replaces what c had for it
// as a whole; within it, keys left out take their defaults. Errors name
// the key (logcollector.files[0].path) and the allowed values.
func (c *Config) Parse(key string, node *yaml.Node) error {
	var err error
	switch key {
	case "logcollector":
		c.LogCollector, err = parseLogCollector(key, node)
	case "inventory":
		c.Inventory, err = parseInventory(key, node)
	case "health":
		c.Health, err = parseHealth(key, node)
	case "plugins":
		c.Plugins, err = parsePlugins(key, node)
	default:
		err = fmt.Errorf("unknown key %q", key)
	}
	return err
}

// RefuseCentral refuses what a centralized configuration may not set in
// one of the Keys: a plugin whose command is an absolute path, so that
// whoever manages the server can start only executables the host's
// operator put in DATA/plugins.
func RefuseCentral(key string, node *yaml.Node) error {
	if key != "plugins" {
		return nil
	}
	plugins, err := parsePlugins(key, node)
	if err != nil {
		return err
	}
	for i, p := range plugins {
		if filepath.IsAbs(p.Command) {
			return fmt.Errorf("plugins[%d].command: %q not allowed here: a centralized configuration may name only executables inside the agent's plugins directory (DATA/plugins); absolute paths are for the local agent.yaml", i, p.Command)
		}
	}
	return nil
}

// Fields returns c with the configuration file's key names, for JSON.
func (c Config) Fields() map[string]any {
	files := []map[string]any{}
	for _, f := range c.LogCollector.Files {
		files = append(files, map[string]any{"path": f.Path, "start_at": f.StartAt})
	}
	plugins := []map[string]any{}
	for _, p := range c.Plugins {
		cfg := p.Config
		if cfg == nil {
			cfg = json.RawMessage("null")
		}
		plugins = append(plugins, map[string]any{"name": p.Name, "command": p.Command, "args": append([]string{}, p.Args...), "config": cfg})
	}
	return map[string]any{
		"logcollector": map[string]any{"files": files, "max_line_bytes": c.LogCollector.MaxLineBytes,
			"poll_interval": c.LogCollector.PollInterval.String()},
		"inventory": map[string]any{"enabled": c.Inventory.Enabled, "interval": c.Inventory.Interval.String(),
			"resend_every": c.Inventory.ResendEvery.String()},
		"health":  map[string]any{"enabled": c.Health.Enabled, "interval": c.Health.Interval.String()},
		"plugins": plugins,
	}
}

// mapping calls f for each key of a mapping node, refusing keys not in
// known.
func mapping(where string, node *yaml.Node, known []string, f func(key string, value *yaml.Node) error) error {
	if node.Kind != yaml.MappingNode {
		return fmt.Errorf("%s: want a mapping with the keys %s", where, strings.Join(known, ", "))
	}
	for i := 0; i+1 < len(node.Content); i += 2 {
		k, v := node.Content[i].Value, node.Content[i+1]
		if !slices.Contains(known, k) {
			return fmt.Errorf("%s: unknown key %q (known keys: %s)", where, k, strings.Join(known, ", "))
		}
		if err := f(k, v); err != nil {
			return err
		}
	}
	return nil
}

func duration(where string, node *yaml.Node, lo, hi time.Duration, example string) (time.Duration, error) {
	d, err := time.ParseDuration(node.Value)
	if node.Kind != yaml.ScalarNode || err != nil || d < lo || d > hi {
		return 0, fmt.Errorf("%s: %q is not valid: want a duration from %v to %v, like %q", where, node.Value, lo, hi, example)
	}
	return d, nil
}

func boolean(where string, node *yaml.Node) (bool, error) {
	var b bool
	if node.Kind != yaml.ScalarNode || node.Decode(&b) != nil {
		return false, fmt.Errorf("%s: %q is not valid: want true or false", where, node.Value)
	}
	return b, nil
}

func parseLogCollector(key string, node *yaml.Node) (LogCollectorConfig, error) {
	lc := DefaultConfig().LogCollector
	err := mapping(key, node, []string{"files", "max_line_bytes", "poll_interval"}, func(k string, v *yaml.Node) error {
		where := key + "." + k
		switch k {
		case "files":
			if v.Kind != yaml.SequenceNode {
				return fmt.Errorf("%s: want a list of {path: GLOB}", where)
			}
			lc.Files = nil
			for i, item := range v.Content {
				f, err := parseLogFile(fmt.Sprintf("%s[%d]", where, i), item)
				if err != nil {
					return err
				}
				if slices.ContainsFunc(lc.Files, func(g LogFile) bool { return g.Path == f.Path }) {
					return fmt.Errorf("%s[%d].path: %q is listed twice", where, i, f.Path)
				}
				lc.Files = append(lc.Files, f)
			}
		case "max_line_bytes":
			var n int
			if v.Kind != yaml.ScalarNode || v.Decode(&n) != nil || n < minLineBytes || n > maxLineBytes {
				return fmt.Errorf("%s: %q is not valid: want an integer from %d to %d", where, v.Value, minLineBytes, maxLineBytes)
			}
			lc.MaxLineBytes = n
		case "poll_interval":
			d, err := duration(where, v, 10*time.Millisecond, time.Minute, "250ms")
			if err != nil {
				return err
			}
			lc.PollInterval = d
		}
		return nil
	})
	return lc, err
}

func parseLogFile(where string, node *yaml.Node) (LogFile, error) {
	f := LogFile{StartAt: "end"}
	err := mapping(where, node, []string{"path", "start_at"}, func(k string, v *yaml.Node) error {
		switch k {
		case "path":
			p := v.Value
			if v.Kind != yaml.ScalarNode || !filepath.IsAbs(p) {
				return fmt.Errorf("%s.path: %q is not valid: want an absolute path or glob pattern, like /var/log/*.log", where, p)
			}
			if _, err := path.Match(p, ""); err != nil {
				return fmt.Errorf("%s.path: %q is not a valid glob pattern: %v", where, p, err)
			}
			f.Path = filepath.Clean(p)
		case "start_at":
			if v.Kind != yaml.ScalarNode || (v.Value != "end" && v.Value != "beginning") {
				return fmt.Errorf("%s.start_at: %q is not valid: want end or beginning", where, v.Value)
			}
			f.StartAt = v.Value
		}
		return nil
	})
	if err == nil && f.Path == "" {
		err = fmt.Errorf("%s.path: required", where)
	}
	return f, err
}

func parseInventory(key string, node *yaml.Node) (InventoryConfig, error) {
	inv := DefaultConfig().Inventory
	err := mapping(key, node, []string{"enabled", "interval", "resend_every"}, func(k string, v *yaml.Node) error {
		var err error
		switch k {
		case "enabled":
			inv.Enabled, err = boolean(key+"."+k, v)
		case "interval":
			inv.Interval, err = duration(key+"."+k, v, time.Second, 7*24*time.Hour, "1h")
		case "resend_every":
			inv.ResendEvery, err = duration(key+"."+k, v, time.Minute, 30*24*time.Hour, "24h")
		}
		return err
	})
	return inv, err
}

func parseHealth(key string, node *yaml.Node) (HealthConfig, error) {
	h := DefaultConfig().Health
	err := mapping(key, node, []string{"enabled", "interval"}, func(k string, v *yaml.Node) error {
		var err error
		switch k {
		case "enabled":
			h.Enabled, err = boolean(key+"."+k, v)
		case "interval":
			h.Interval, err = duration(key+"."+k, v, time.Second, 24*time.Hour, "1m")
		}
		return err
	})
	return h, err
}

func parsePlugins(key string, node *yaml.Node) ([]PluginConfig, error) {
	if node.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("%s: want a list of {name: NAME, command: EXECUTABLE}", key)
	}
	var out []PluginConfig
	for i, item := range node.Content {
		where := fmt.Sprintf("%s[%d]", key, i)
		var p PluginConfig
		err := mapping(where, item, []string{"args", "command", "config", "name"}, func(k string, v *yaml.Node) error {
			switch k {
			case "name":
				if v.Kind != yaml.ScalarNode || !pluginNameRE.MatchString(v.Value) {
					return fmt.Errorf("%s.name: %q is not valid: want 1 to 64 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit", where, v.Value)
				}
				if slices.Contains(builtinModules, v.Value) {
					return fmt.Errorf("%s.name: %q is a module of the agent: choose another name", where, v.Value)
				}
				p.Name = v.Value
			case "command":
				c := v.Value
				if v.Kind != yaml.ScalarNode || c == "" || (!filepath.IsAbs(c) && !filepath.IsLocal(c)) {
					return fmt.Errorf("%s.command: %q is not valid: want an executable's name inside DATA/plugins (without \"..\"), or an absolute path", where, c)
				}
				p.Command = filepath.Clean(c)
			case "args":
				if v.Kind != yaml.SequenceNode {
					return fmt.Errorf("%s.args: want a list of strings", where)
				}
				for _, a := range v.Content {
					if a.Kind != yaml.ScalarNode {
						return fmt.Errorf("%s.args: want a list of strings", where)
					}
					p.Args = append(p.Args, a.Value)
				}
			case "config":
				var x any
				if err := v.Decode(&x); err != nil {
					return fmt.Errorf("%s.config: %v", where, err)
				}
				b, err := json.Marshal(x)
				if err != nil {
					return fmt.Errorf("%s.config: not representable as JSON (keys must be strings): %v", where, err)
				}
				p.Config = b
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		switch {
		case p.Name == "":
			return nil, fmt.Errorf("%s.name: required", where)
		case p.Command == "":
			return nil, fmt.Errorf("%s.command: required", where)
		case slices.ContainsFunc(out, func(q PluginConfig) bool { return q.Name == p.Name }):
			return nil, fmt.Errorf("%s.name: %q is used twice", where, p.Name)
		}
		out = append(out, p)
	}
	return out, nil
}
