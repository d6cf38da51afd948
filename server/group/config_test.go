package group_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/group"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name, src string
		// json is the expected document; "" when an error is expected.
		json string
		// line is a part of the error message, such as "line 2".
		line string
	}{
		{"empty", "", "{}", ""},
		{"comments only", "# nothing yet\n", "{}", ""},
		{"empty mapping", "{}", "{}", ""},
		{"scalars", "b: true\na: 1\nc: 2.5\nd: hello\ne: null\nf: '007'\n", `{"a":1,"b":true,"c":2.5,"d":"hello","e":null,"f":"007"}`, ""},
		{"nested and sorted", "z:\n  y: [1, {x: 2}]\n  a: []\na: {}\n", `{"a":{},"z":{"a":[],"y":[1,{"x":2}]}}`, ""},
		{"timestamp kept as written", "since: 2024-01-02\n", `{"since":"2024-01-02"}`, ""},
		{"quoted number key", "'1': one\n", `{"1":"one"}`, ""},
		{"anchors and merge", "base: &b {level: info, out: file}\nlog:\n  <<: *b\n  level: debug\n", `{"base":{"level":"info","out":"file"},"log":{"level":"debug","out":"file"}}`, ""},
		{"big integer", "n: 18446744073709551615\n", `{"n":18446744073709551615}`, ""},

		{"not a mapping: list", "- a\n- b\n", "", "line 1: want a YAML mapping"},
		{"not a mapping: string", "hello\n", "", "line 1: want a YAML mapping"},
		{"not a mapping: number", "\n\n42\n", "", "line 3: want a YAML mapping"},
		{"integer key", "a: 1\n1: one\n", "", "line 2: key 1 is a number"},
		{"boolean key", "x:\n  true: yes\n", "", "line 2: key true is a boolean"},
		{"null key", "~: nothing\n", "", "line 1: key ~ is null"},
		{"nested integer key", "a:\n  b:\n    2: x\n", "", "line 3: key 2 is a number"},
		{"list key", "? [1, 2]\n: x\n", "", "line 1: a key is a list"},
		{"duplicate key", "a: 1\nb: 2\na: 3\n", "", "line 3: key \"a\" already set on line 1"},
		{"infinity", "limit: .inf\n", "", "line 1: .inf has no JSON form"},
		{"bad YAML", "a: 1\n b: 2\n", "", "invalid YAML: line 2"},
		{"bad YAML: unclosed", "a: [1, 2\n", "", "invalid YAML"},
		{"tab indentation", "a:\n\tb: 1\n", "", "invalid YAML"},
		{"two documents", "a: 1\n---\nb: 2\n", "", "want one YAML document"},
		{"bad merge", "a:\n  <<: 3\n", "", "line 2: a merge key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, version, err := group.ParseConfig(tt.src)
			if tt.json == "" {
				var te *tether.Error
				if !errors.As(err, &te) || te.Code != tether.EINVALID || te.Field != "config" {
					t.Fatalf("error %v; want EINVALID on the field config", err)
				}
				if !strings.Contains(te.Message, tt.line) || !strings.HasPrefix(te.Message, "config: ") {
					t.Errorf("message %q; want it to start with \"config: \" and say %q", te.Message, tt.line)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if string(doc) != tt.json {
				t.Errorf("doc %s, want %s", doc, tt.json)
			}
			if version != group.Version(doc) || len(version) != 16 {
				t.Errorf("version %q; want the 16 hex digits of the document's hash", version)
			}
		})
	}
}

func TestParseConfigVersionFollowsContent(t *testing.T) {
	version := func(src string) string {
		t.Helper()
		_, v, err := group.ParseConfig(src)
		if err != nil {
			t.Fatalf("ParseConfig(%q): %v", src, err)
		}
		return v
	}
	base := version("log:\n  level: info\n  files: [a, b]\n")
	for _, same := range []string{
		"# the same, reformatted\nlog: {files: [\"a\", 'b'], level: info}\n",
		"log:\n  files:\n    - a\n    - b\n  level: info   # comment\n",
	} {
		if v := version(same); v != base {
			t.Errorf("version of %q is %s, want %s: only the content counts", same, v, base)
		}
	}
	for _, other := range []string{
		"log:\n  level: debug\n  files: [a, b]\n",
		"log:\n  level: info\n  files: [b, a]\n",
		"log:\n  level: info\n  files: [a, b]\n  extra: null\n",
	} {
		if v := version(other); v == base {
			t.Errorf("version of %q equals the base: it changed", other)
		}
	}
	if version("") != version("{}") {
		t.Errorf("an empty document and {} differ")
	}
}

func TestParseConfigLimits(t *testing.T) {
	_, _, err := group.ParseConfig("a: " + strings.Repeat("x", group.MaxConfigBytes))
	if tether.ErrorCode(err) != tether.ETOOLARGE {
		t.Errorf("oversized config: %v; want too_large", err)
	}
	// A billion laughs: aliases that expand exponentially are refused.
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 10; i++ {
		b.WriteString("a" + string(rune('0'+i)) + ": &a" + string(rune('0'+i)) + " [")
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*a" + string(rune('0'+i-1)))
		}
		b.WriteString("]\n")
	}
	_, _, err = group.ParseConfig(b.String())
	if tether.ErrorCode(err) != tether.EINVALID || !strings.Contains(tether.ErrorMessage(err), "aliases") {
		t.Errorf("alias bomb: %v; want invalid, naming the aliases", err)
	}
}
