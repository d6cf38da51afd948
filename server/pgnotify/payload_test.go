package pgnotify

import (
	"slices"
	"strings"
	"testing"
)

func TestEncodeSplitsUnderTheLimit(t *testing.T) {
	node := "abcdefgh"
	var ids []string
	for i := range 1000 {
		ids = append(ids, strings.Repeat(string(rune('a'+i%26)), 36))
	}
	ids = append(ids, strings.Repeat("z", maxIDBytes)) // the longest id
	payloads := encode(node, kindWake, ids)
	if len(payloads) < 5 {
		t.Fatalf("%d payloads for %d ids of 36 bytes: want them split", len(payloads), len(ids))
	}
	var got []string
	for _, p := range payloads {
		if len(p) > maxPayload {
			t.Fatalf("payload of %d bytes, over %d", len(p), maxPayload)
		}
		m := decode(p)
		if !m.known || m.node != node || m.kind != kindWake {
			t.Fatalf("payload decoded as %+v", m)
		}
		got = append(got, m.ids...)
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("ids changed on the way: %d in, %d out", len(ids), len(got))
	}
}

func TestEncodeDecode(t *testing.T) {
	node := "k2m3n4p5"
	for _, tc := range []struct {
		kind string
		ids  []string
		want []string
	}{
		{kindWake, []string{"a", "b"}, []string{"tether1 k2m3n4p5 wake a b"}},
		{kindAgent, []string{"0b6f3c5e-4a0e-4c7e-9a51-8f0d2f6f1f2a"}, []string{"tether1 k2m3n4p5 agent 0b6f3c5e-4a0e-4c7e-9a51-8f0d2f6f1f2a"}},
		{kindConfig, nil, []string{"tether1 k2m3n4p5 config"}},
		{kindAll, nil, []string{"tether1 k2m3n4p5 all"}},
		{kindWake, nil, nil},
		// Ids that could not be read back are left out.
		{kindWake, []string{"", "a b", "x\n", strings.Repeat("y", maxIDBytes+1), "ok"}, []string{"tether1 k2m3n4p5 wake ok"}},
	} {
		got := encode(node, tc.kind, tc.ids)
		if !slices.Equal(got, tc.want) {
			t.Errorf("encode(%s, %q) = %q, want %q", tc.kind, tc.ids, got, tc.want)
		}
	}
}

func TestDecodeRefusesWhatItCannotRead(t *testing.T) {
	for _, p := range []string{
		"",
		"tether1",
		"tether1 abcdefgh",
		"tether2 abcdefgh wake a",      // another version
		"tether1 abcdefgh shard 3",     // another kind
		"tether1 ABCDEFGH wake a",      // not a node id
		"tether1 abcdefgh wake",        // no ids
		"tether1 abcdefgh wake a  b",   // an empty id
		"tether1 abcdefgh config x",    // arguments where none are expected
		"tether1 abcdefgh wake a\x00b", // a control character
	} {
		if m := decode(p); m.known {
			t.Errorf("decode(%q) = %+v, want it unknown", p, m)
		}
	}
}

// FuzzDecode checks that any payload is read without a panic, and that
// what is read encodes back to the same payload.
func FuzzDecode(f *testing.F) {
	f.Add("tether1 abcdefgh wake a b")
	f.Add("tether1 abcdefgh agent 0b6f3c5e-4a0e-4c7e-9a51-8f0d2f6f1f2a")
	f.Add("tether1 abcdefgh config")
	f.Add("tether1 abcdefgh all")
	f.Add("tether9 x y")
	f.Fuzz(func(t *testing.T, payload string) {
		m := decode(payload)
		if !m.known {
			return
		}
		if len(payload) > maxPayload {
			return // encode never makes one; decode still reads it
		}
		again := encode(m.node, m.kind, m.ids)
		if len(again) != 1 || again[0] != payload {
			t.Fatalf("decode(%q) = %+v, which encodes to %q", payload, m, again)
		}
	})
}
