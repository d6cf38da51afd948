package client_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies checks that the client library links no server code and
// not the domain package: a third-party agent imports only this.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "github.com/tetherhq/tether" || strings.HasPrefix(pkg, "github.com/tetherhq/tether/server") ||
			strings.HasPrefix(pkg, "github.com/tetherhq/tether/agent") {
			t.Errorf("client depends on %s", pkg)
		}
	}
}
