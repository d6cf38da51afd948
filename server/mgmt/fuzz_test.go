package mgmt_test

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tetherhq/tether"
)

// FuzzRequestBodies sends arbitrary bytes as the body of the POST routes,
// with a token allowed to call it: the answer must be a JSON error or a
// success, never a 500 or a panic.
func FuzzRequestBodies(f *testing.F) {
	f.Add(`{"groups":["web"],"ttl":"1h","max_uses":3}`)
	f.Add(`{"id":"0b6f3c5e-4a0e-4c7e-9a51-8f0d2f6f1f2a","hostname":"h"}`)
	f.Add(`{"target":{"type":"agent","id":"x"},"action":{"name":"restart","args":{"a":1}},"timeout":"5m"}`)
	f.Add(`{"groups":[1]}`)
	f.Add(`{"name":"web","description":"d","config":"a: {b: [1, 2]}\n"}`)
	f.Add(`{"name":"web","config":"? [1]\n: x\n"}`)
	f.Add(`{"name":"alice","role":"operator","kind":"user","ttl":"720h"}`)
	f.Add(`{`)
	e := newEnvWith(f, nil)
	h := e.srv.Config.Handler
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{"/api/v1/enrollment-tokens", "/api/v1/agents", "/api/v1/commands", "/api/v1/groups", "/api/v1/tokens"} {
			req := httptest.NewRequest("POST", path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+e.tokens[tether.RoleAdmin])
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code >= 500 {
				t.Fatalf("POST %s %q: %d %s", path, body, w.Code, w.Body)
			}
			if w.Code >= 400 && !strings.Contains(w.Body.String(), `"error"`) {
				t.Fatalf("POST %s %q: %d without an error body", path, body, w.Code)
			}
		}
	})
}
