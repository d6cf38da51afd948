package group

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/tetherhq/tether"
)

// Limits of a group's configuration.
const (
	// MaxConfigBytes bounds the YAML source of one group's configuration.
	MaxConfigBytes = 256 << 10
	// maxConfigValues bounds the values of a document once its aliases are
	// expanded, so that a small document cannot expand into a huge one.
	maxConfigValues = 100_000
	maxConfigDepth  = 64
)

// ParseConfig converts a group's YAML configuration to its JSON object and
// version. The document must be one YAML mapping whose keys are all strings
// (an empty document is the empty mapping, "{}"). Anchors, aliases and merge
// keys (<<) are expanded; timestamps stay the strings they were written as;
// infinities and NaN are refused (JSON has none). Errors are EINVALID on the
// field "config" and give the line at fault.
//
// The JSON is canonical (object keys sorted, no spaces), so the version —
// the first 16 hex digits of its SHA-256 — changes when the configuration's
// content does, and only then: comments, key order and quoting do not count.
func ParseConfig(src string) (doc []byte, version string, err error) {
	if len(src) > MaxConfigBytes {
		return nil, "", &tether.Error{Code: tether.ETOOLARGE, Field: "config",
			Message: fmt.Sprintf("config: larger than %d KiB", MaxConfigBytes>>10)}
	}
	dec := yaml.NewDecoder(strings.NewReader(src))
	var root yaml.Node
	switch err := dec.Decode(&root); {
	case errors.Is(err, io.EOF):
		// Empty, or only comments.
	case err != nil:
		return nil, "", yamlError(err)
	default:
		var next yaml.Node
		switch err := dec.Decode(&next); {
		case errors.Is(err, io.EOF):
		case err != nil:
			return nil, "", yamlError(err)
		default:
			return nil, "", tether.FieldError("config", "line %d: want one YAML document, found another", next.Line)
		}
	}
	m := map[string]any{}
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		top := root.Content[0]
		if top.Kind != yaml.MappingNode {
			return nil, "", tether.FieldError("config", "line %d: want a YAML mapping (key: value lines), found %s", top.Line, kindName(top))
		}
		c := converter{}
		v, err := c.convert(top, 0)
		if err != nil {
			return nil, "", err
		}
		m = v.(map[string]any)
	}
	// encoding/json sorts map keys: the encoding is canonical.
	doc, err = json.Marshal(m)
	if err != nil {
		return nil, "", fmt.Errorf("encode config: %w", err)
	}
	return doc, Version(doc), nil
}

// Version returns the version of a canonical JSON document: the first 16 hex
// digits of its SHA-256.
func Version(doc []byte) string {
	sum := sha256.Sum256(doc)
	return hex.EncodeToString(sum[:8])
}

func yamlError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	return tether.FieldError("config", "invalid YAML: %s", msg)
}

// converter turns YAML nodes into values encoding/json can encode.
type converter struct {
	values int
}

func (c *converter) convert(n *yaml.Node, depth int) (any, error) {
	c.values++
	if c.values > maxConfigValues {
		return nil, tether.FieldError("config", "line %d: more than %d values once aliases are expanded", n.Line, maxConfigValues)
	}
	if depth > maxConfigDepth {
		return nil, tether.FieldError("config", "line %d: nested deeper than %d levels", n.Line, maxConfigDepth)
	}
	switch n.Kind {
	case yaml.AliasNode:
		return c.convert(n.Alias, depth+1)
	case yaml.MappingNode:
		return c.mapping(n, depth)
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, e := range n.Content {
			v, err := c.convert(e, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.ScalarNode:
		return scalar(n)
	}
	return nil, tether.FieldError("config", "line %d: unexpected YAML node", n.Line)
}

// mapping converts a mapping. Merge keys (<<) bring the entries of other
// mappings; the mapping's own keys win over merged ones, and earlier merged
// mappings over later ones, as YAML defines.
func (c *converter) mapping(n *yaml.Node, depth int) (map[string]any, error) {
	out := make(map[string]any, len(n.Content)/2)
	var merges []*yaml.Node
	own := map[string]int{} // key → line
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			return nil, tether.FieldError("config", "line %d: a key is %s, want a string", k.Line, kindName(k))
		}
		if k.ShortTag() != "!!str" {
			return nil, tether.FieldError("config", "line %d: key %s is %s, want a string (quote it)", k.Line, k.Value, kindName(k))
		}
		if line, dup := own[k.Value]; dup {
			return nil, tether.FieldError("config", "line %d: key %q already set on line %d", k.Line, k.Value, line)
		}
		own[k.Value] = k.Line
		val, err := c.convert(v, depth+1)
		if err != nil {
			return nil, err
		}
		out[k.Value] = val
	}
	for _, m := range merges {
		srcs := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			srcs = m.Content
		}
		for _, src := range srcs {
			v, err := c.convert(src, depth+1)
			if err != nil {
				return nil, err
			}
			mm, ok := v.(map[string]any)
			if !ok {
				return nil, tether.FieldError("config", "line %d: a merge key (<<) takes a mapping or a list of mappings", src.Line)
			}
			for k, val := range mm {
				if _, set := out[k]; !set {
					out[k] = val
				}
			}
		}
	}
	return out, nil
}

func scalar(n *yaml.Node) (any, error) {
	switch n.ShortTag() {
	case "!!null":
		return nil, nil
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return nil, tether.FieldError("config", "line %d: %q is not a boolean", n.Line, n.Value)
		}
		return b, nil
	case "!!int", "!!float":
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, tether.FieldError("config", "line %d: %q is not a number", n.Line, n.Value)
		}
		if f, ok := v.(float64); ok && (math.IsInf(f, 0) || math.IsNaN(f)) {
			return nil, tether.FieldError("config", "line %d: %s has no JSON form (infinity and NaN are not numbers in JSON)", n.Line, n.Value)
		}
		return v, nil
	}
	// Strings, and timestamps and binary kept as they were written.
	return n.Value, nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	switch n.ShortTag() {
	case "!!null":
		return "null"
	case "!!bool":
		return "a boolean"
	case "!!int", "!!float":
		return "a number"
	case "!!timestamp":
		return "a timestamp"
	}
	return "a string"
}
