package files_test

import (
	"encoding/json"
	"testing"

	"github.com/tetherhq/tether/server/files"
)

// FuzzDecodeInfo feeds the decoder of stored metadata arbitrary bytes: it
// never panics, and what it accepts is valid and survives a round trip.
func FuzzDecodeInfo(f *testing.F) {
	f.Add([]byte(`{"name":"tether-agent","size":12,"sha256":"` + sha([]byte("x")) + `","uploaded_at":"2026-03-04T05:06:07Z","uploader":"ops","signature":"c2ln"}`))
	f.Add([]byte(`{"name":"../x","size":-1}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"sha256":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := files.DecodeInfo(data)
		if err != nil {
			return
		}
		if files.CheckName("name", info.Name) != nil || files.CheckSHA256("sha256", info.SHA256) != nil || info.Size < 0 {
			t.Fatalf("accepted invalid metadata %+v", info)
		}
		b, err := json.Marshal(info)
		if err != nil {
			t.Fatal(err)
		}
		again, err := files.DecodeInfo(b)
		if err != nil || !again.UploadedAt.Equal(info.UploadedAt) || again.Name != info.Name || again.SHA256 != info.SHA256 {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, info)
		}
	})
}

// FuzzParseKey feeds the key decoder arbitrary bytes: it never panics and
// returns either an error or a whole Ed25519 key.
func FuzzParseKey(f *testing.F) {
	dir := f.TempDir()
	if _, err := files.EnsureKey(dir); err != nil {
		f.Fatal(err)
	}
	f.Add(readFile(f, dir+"/"+files.KeyFile))
	f.Add(readFile(f, dir+"/"+files.PublicKeyFile))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMC4CAQ==\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := files.ParseKey(data)
		if err == nil && len(key) != 64 {
			t.Fatalf("accepted a key of %d bytes", len(key))
		}
	})
}
