package mgmt_test

import (
	"net/http"
	"testing"

	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/api"
)

// woken reports whether a notification is waiting on ch. Handlers notify
// before they answer, so once the answer is read no wait is needed.
func woken(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestGroupChangesWakeTheirAgents(t *testing.T) {
	e := newEnv(t)
	admin := e.tokens[tether.RoleAdmin]
	member, outsider := uuid.NewString(), uuid.NewString()
	for _, id := range []string{member, outsider} {
		if status, body := e.do(t, "POST", "/api/v1/agents", admin, api.RegisterAgentRequest{ID: id}); status != http.StatusCreated {
			t.Fatalf("register: %d %s", status, body)
		}
	}
	mw, release := e.hub.Subscribe(member)
	defer release()
	ow, release2 := e.hub.Subscribe(outsider)
	defer release2()
	step := func(name, method, path string, body any, wantMember bool) {
		t.Helper()
		if status, data := e.do(t, method, path, admin, body); status/100 != 2 {
			t.Fatalf("%s: %d %s", name, status, data)
		}
		if got := woken(mw); got != wantMember {
			t.Errorf("%s: member woken %v, want %v", name, got, wantMember)
		}
		if woken(ow) {
			t.Errorf("%s: an agent outside the group was woken", name)
		}
	}
	step("join a group", "PUT", "/api/v1/agents/"+member+"/groups", api.SetAgentGroupsRequest{Groups: []string{"web"}}, true)
	step("same groups again", "PUT", "/api/v1/agents/"+member+"/groups", api.SetAgentGroupsRequest{Groups: []string{"web"}}, false)
	step("create the group with a config", "POST", "/api/v1/groups", api.CreateGroupRequest{Name: "web", Config: "a: 1\n"}, true)
	step("create another group", "POST", "/api/v1/groups", api.CreateGroupRequest{Name: "db", Config: "a: 2\n"}, false)
	desc, same, changed := "front ends", "a: 1 # same\n", "a: 3\n"
	step("change the description", "PATCH", "/api/v1/groups/web", api.UpdateGroupRequest{Description: &desc}, false)
	step("rewrite the same config", "PATCH", "/api/v1/groups/web", api.UpdateGroupRequest{Config: &same}, false)
	step("change the config", "PATCH", "/api/v1/groups/web", api.UpdateGroupRequest{Config: &changed}, true)
	step("delete the group", "DELETE", "/api/v1/groups/web", nil, true)
}
