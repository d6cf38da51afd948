package modules

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParseDpkgStatus(t *testing.T) {
	f, err := os.Open("testdata/dpkg-status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	items, err := parseDpkgStatus(f)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, it := range items {
		keys = append(keys, it.Key)
	}
	// removed-pkg is not installed (only its configuration files are left).
	if want := []string{"package:openssl:amd64", "package:curl:amd64", "package:libc6:i386"}; !slices.Equal(keys, want) {
		t.Fatalf("keys %q, want %q", keys, want)
	}
	var p packageDoc
	if err := json.Unmarshal(items[0].Doc, &p); err != nil {
		t.Fatal(err)
	}
	want := packageDoc{Name: "openssl", Version: "3.0.15-1~deb12u1", Architecture: "amd64", Format: "deb", Section: "utils",
		InstalledSize: 2130 * 1024, Summary: "Secure Sockets Layer toolkit - cryptographic utility"}
	if p != want {
		t.Fatalf("openssl: %+v, want %+v", p, want)
	}
	if !strings.Contains(string(items[2].Doc), `"source":"glibc"`) {
		t.Fatalf("libc6: %s", items[2].Doc)
	}
}

func TestParseRPMList(t *testing.T) {
	out := "bash\t(none)\t5.1.8-9.el9\tx86_64\t7738634\tbash-5.1.8-9.el9.src.rpm\tUnspecified\tThe GNU Bourne Again shell\n" +
		"gpg-pubkey\t(none)\t8483c65d-5ccc5b19\t(none)\t0\t(none)\tPublic Keys\tgpg(CentOS)\n" +
		"openssl\t1\t3.0.7-27.el9\tx86_64\t1916486\topenssl-3.0.7-27.el9.src.rpm\tUnspecified\tUtilities from the general purpose cryptography library\n" +
		"garbage line\n"
	items := parseRPMList(out)
	var keys []string
	for _, it := range items {
		keys = append(keys, it.Key)
	}
	if want := []string{"package:bash:x86_64", "package:gpg-pubkey", "package:openssl:x86_64"}; !slices.Equal(keys, want) {
		t.Fatalf("keys %q, want %q", keys, want)
	}
	var p packageDoc
	_ = json.Unmarshal(items[2].Doc, &p)
	if p.Version != "1:3.0.7-27.el9" || p.Format != "rpm" || p.InstalledSize != 1916486 {
		t.Fatalf("openssl: %+v", p)
	}
}

func TestDiffInventory(t *testing.T) {
	doc := func(v string) []byte { return []byte(`{"v":"` + v + `"}`) }
	item := func(key, v string) invItem {
		typ, _, _ := strings.Cut(key, ":")
		return invItem{Key: key, Type: typ, Doc: doc(v)}
	}
	_, sent := diffInventory(nil, []invItem{item("package:a", "1"), item("host", "h"), item("package:b", "1"), item("interface:eth0", "up")}, false, false)
	type change struct {
		key    string
		delete bool
	}
	tests := []struct {
		name          string
		items         []invItem
		all, partial  bool
		want          []change
		wantRemaining []string
	}{
		{name: "nothing changed", items: []invItem{item("host", "h"), item("package:a", "1"), item("package:b", "1"), item("interface:eth0", "up")},
			wantRemaining: []string{"host", "interface:eth0", "package:a", "package:b"}},
		{name: "changed, added, removed", items: []invItem{item("package:c", "1"), item("host", "h2"), item("package:a", "2"), item("interface:eth0", "up")},
			want:          []change{{"host", false}, {"package:a", false}, {"package:c", false}, {"package:b", true}},
			wantRemaining: []string{"host", "interface:eth0", "package:a", "package:c"}},
		{name: "everything again", all: true, items: []invItem{item("host", "h"), item("package:a", "1"), item("package:b", "1"), item("interface:eth0", "up")},
			want:          []change{{"host", false}, {"interface:eth0", false}, {"package:a", false}, {"package:b", false}},
			wantRemaining: []string{"host", "interface:eth0", "package:a", "package:b"}},
		{name: "a source failed: nothing deleted", partial: true, items: []invItem{item("host", "h")},
			wantRemaining: []string{"host", "interface:eth0", "package:a", "package:b"}},
		{name: "everything gone", items: nil,
			want: []change{{"host", true}, {"interface:eth0", true}, {"package:a", true}, {"package:b", true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, next := diffInventory(sent, tt.items, tt.all, tt.partial)
			var got []change
			for _, r := range recs {
				if !r.Stateful || r.Event.Module != "inventory" || r.Event.ID == "" {
					t.Fatalf("record %+v", r)
				}
				if typ, _, _ := strings.Cut(r.Key, ":"); r.Event.Type != typ {
					t.Fatalf("record %s has type %s", r.Key, r.Event.Type)
				}
				if r.Delete != (r.Event.Payload == nil) {
					t.Fatalf("record %+v: a delete has no payload, an upsert has one", r)
				}
				got = append(got, change{r.Key, r.Delete})
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("changes %v, want %v", got, tt.want)
			}
			var remaining []string
			for k := range next {
				remaining = append(remaining, k)
			}
			slices.Sort(remaining)
			if !slices.Equal(remaining, tt.wantRemaining) {
				t.Fatalf("remembered %q, want %q", remaining, tt.wantRemaining)
			}
		})
	}
}
