package agent

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhq/tether/agent/store"
	"github.com/tetherhq/tether/client"
	"gopkg.in/yaml.v3"
)

// Defaults and bounds of the event keys of agent.yaml.
const (
	DefaultBatchMaxBytes = 1 << 20
	maxBatchBytes        = 4 << 20 // well under the server's default 8 MiB body limit
	minOutboxBytes       = 1 << 20
	maxOutboxBytes       = 1 << 40
	maxFsyncWindow       = time.Second
)

// eventKeys are the keys of agent.yaml about the outbox and the sender,
// besides batch_max_events and batch_interval.
var eventKeys = []string{"batch_max_bytes", "outbox_max_bytes", "outbox_fsync_window", "rate_limit_events", "rate_limit_bytes", "compression"}

var compressions = []string{client.CompressionZstd, client.CompressionGzip, client.CompressionNone}

// defaultEventConfig sets the defaults of the event keys.
func defaultEventConfig(c *Config) {
	c.BatchMaxBytes = DefaultBatchMaxBytes
	c.OutboxMaxBytes = store.DefaultOutboxMaxBytes
	c.OutboxFsyncWindow = store.DefaultFsyncWindow
	c.Compression = client.CompressionZstd
}

// eventConfigFields are the event keys as MarshalJSON writes them.
func (c Config) eventConfigFields() map[string]any {
	return map[string]any{
		"batch_max_bytes":     c.BatchMaxBytes,
		"outbox_max_bytes":    c.OutboxMaxBytes,
		"outbox_fsync_window": c.OutboxFsyncWindow.String(),
		"rate_limit_events":   c.RateLimitEvents,
		"rate_limit_bytes":    c.RateLimitBytes,
		"compression":         c.Compression,
	}
}

// parseEventKey parses one of eventKeys into cfg; ok is false for another
// key.
func parseEventKey(cfg *Config, k string, node *yaml.Node) (ok bool, err error) {
	switch k {
	case "batch_max_bytes":
		var n int64
		n, err = sizeKey(k, node, 1<<10, maxBatchBytes, "1MiB")
		cfg.BatchMaxBytes = int(n)
	case "outbox_max_bytes":
		cfg.OutboxMaxBytes, err = sizeKey(k, node, minOutboxBytes, maxOutboxBytes, "1GiB")
	case "outbox_fsync_window":
		cfg.OutboxFsyncWindow, err = durationKey(k, node, 0, maxFsyncWindow, "100ms")
	case "rate_limit_events":
		var f float64
		if node.Kind != yaml.ScalarNode || node.Decode(&f) != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			err = fmt.Errorf("%s: %q is not valid: want events per second, 0 for no limit", k, node.Value)
		}
		cfg.RateLimitEvents = f
	case "rate_limit_bytes":
		cfg.RateLimitBytes, err = sizeKey(k, node, 0, maxOutboxBytes, "512KiB")
		if err != nil {
			err = fmt.Errorf("%s (bytes per second, 0 for no limit)", err)
		}
	case "compression":
		v := strings.ToLower(node.Value)
		if node.Kind != yaml.ScalarNode || !slices.Contains(compressions, v) {
			err = fmt.Errorf("%s: %q is not valid: want one of %s", k, node.Value, strings.Join(compressions, ", "))
		}
		cfg.Compression = v
	default:
		return false, nil
	}
	return true, err
}

var sizeUnits = []struct {
	suffix string
	n      int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

// sizeKey parses a size: an integer of bytes, or a number with a unit
// (KiB, MiB, GiB, TiB, or KB, MB, GB, TB), from lo to hi bytes.
func sizeKey(key string, node *yaml.Node, lo, hi int64, example string) (int64, error) {
	n, ok := parseSize(node.Value)
	if node.Kind != yaml.ScalarNode || !ok || n < lo || n > hi {
		return 0, fmt.Errorf("%s: %q is not valid: want a size from %s to %s, like %q or a number of bytes", key, node.Value, formatSize(lo), formatSize(hi), example)
	}
	return n, nil
}

func parseSize(v string) (int64, bool) {
	v = strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			v, mult = strings.TrimSpace(num), u.n
			break
		}
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || math.IsNaN(f) || f*float64(mult) > math.MaxInt64/2 {
		return 0, false
	}
	return int64(f * float64(mult)), true
}

func formatSize(n int64) string {
	for _, u := range sizeUnits[:4] {
		if n >= u.n && n%u.n == 0 && n/u.n < 1024 {
			return strconv.FormatInt(n/u.n, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}
