package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/api"
)

// lastRequests returns the last n requests f saw.
func (f *fakeServer) lastRequests(n int) []string {
	reqs := f.requests()
	if len(reqs) < n {
		return reqs
	}
	return reqs[len(reqs)-n:]
}

// setClock makes now return t0, advanced by step at each call, until the
// test ends.
func setClock(t *testing.T, step time.Duration) {
	saved := now
	t.Cleanup(func() { now = saved })
	cur := t0
	now = func() time.Time {
		c := cur
		cur = cur.Add(step)
		return c
	}
}

// TestManageSmoke checks the request and both outputs of the commands that
// send one request.
func TestManageSmoke(t *testing.T) {
	setClock(t, 0)
	f := newFakeServer(t)
	runSmoke(t, f, []smokeCase{
		{args: []string{"commands", "cancel", "c-1"}, request: "POST /api/v1/commands/c-1/cancel?",
			table: []string{"command c-1: 2 order(s) cancelled"}, json: []string{"cancelled"}},
		{args: []string{"commands", "cancel", "--order", "o-1"}, request: "POST /api/v1/orders/o-1/cancel?",
			table: []string{"order o-1: 1 order(s) cancelled"}, json: []string{"cancelled"}},
		{args: []string{"commands", "cancel", "--order", "o-done"}, request: "POST /api/v1/orders/o-done/cancel?",
			table: []string{"order o-done: nothing to cancel"}, json: []string{"cancelled"}},
		{args: []string{"orders", "show", "o-9"}, request: "GET /api/v1/orders/o-9?",
			table: []string{"Order:", "o-9", "c-grpfail", "a-3", "failure", "timed out", "Attempts:"}, json: []string{"order_id", "status", "result"}},
		{args: []string{"groups", "list"}, request: "GET /api/v1/groups?",
			table: []string{"NAME", "MEMBERS", "web", "12", "0123456789abcdef", "front-end servers"}, json: []string{"items"}},
		{args: []string{"groups", "show", "a b"}, request: "GET /api/v1/groups/a%20b?",
			table: []string{"Members:", "12", "0123456789abcdef", "\nConfiguration:\nlog_level: debug\nevents:\n  batch: 100\n"},
			json:  []string{"name", "config", "version", "members"}},
		{args: []string{"groups", "show", "empty"}, request: "GET /api/v1/groups/empty?",
			table: []string{"Configuration: none"}, json: []string{"config"}},
		{args: []string{"groups", "delete", "web"}, request: "DELETE /api/v1/groups/web?",
			table: []string{"group web deleted"}, json: []string{"id", "status"}},
		{args: []string{"agents", "set-groups", "a-1", "web", "db"}, request: "PUT /api/v1/agents/a-1/groups?", body: `{"groups":["web","db"]}`,
			table: []string{"agent a-1 groups: web,db"}, json: []string{"id", "groups"}},
		{args: []string{"agents", "set-groups", "a-1", "--none"}, request: "PUT /api/v1/agents/a-1/groups?", body: `{"groups":[]}`,
			table: []string{"agent a-1 is in no group"}, json: []string{"id", "groups"}},
		{args: []string{"actions", "list"}, request: "GET /api/v1/actions?",
			table: []string{"RUNS ON", "version*:string note:string", "reload-config", "server", "Re-execute the agent."}, json: []string{"items"}},
		{args: []string{"actions", "show", "upgrade"}, request: "GET /api/v1/actions?",
			table: []string{"Runs on:", "ARGUMENT", "version", "yes", "a note for people"}, json: []string{"name", "target", "args"}},
		{args: []string{"actions", "show", "restart"}, request: "GET /api/v1/actions?",
			table: []string{"No arguments."}, json: []string{"name"}},
	})
}

func TestCommandsSendTargets(t *testing.T) {
	f := newFakeServer(t)
	r := f.run(t, "commands", "send", "--group", "web", "restart", "--arg", "delay=1s").ok(t)
	var req api.CreateCommandRequest
	json.Unmarshal(f.body(), &req)
	if req.Target != (api.Target{Type: "group", ID: "web"}) || string(req.Action.Args) != `{"delay":"1s"}` {
		t.Errorf("request = %+v", req)
	}
	for _, want := range []string{"command c-grp created: 3 order(s) for group/web", "o-1", "a-3"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}

	r = f.run(t, "commands", "send", "--to-server", "reload-config").ok(t)
	if !strings.Contains(string(f.body()), `"target":{"type":"server","id":""}`) {
		t.Errorf("body = %s", f.body())
	}
	if !strings.Contains(r.stdout, "1 order(s) for server") || !strings.Contains(r.stdout, "(server)") {
		t.Errorf("output:\n%s", r.stdout)
	}

	// Many orders: a summary and the failed ones only.
	r = f.run(t, "commands", "send", "--group", "big", "restart").ok(t)
	for _, want := range []string{"60 orders: 58 pending, 0 sent, 0 success, 2 failure", "tetherctl orders list --command c-big", "Failed orders:", "o-07", "o-42"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "o-00") {
		t.Errorf("a pending order is listed:\n%s", r.stdout)
	}
}

func TestCommandsSendGroupWait(t *testing.T) {
	tests := []struct {
		action   string
		code     int
		progress string
	}{
		{"restart", exitOK, "0/3 finished: 0 success, 0 failure\n1/3 finished: 1 success, 0 failure\n3/3 finished: 3 success, 0 failure\n"},
		{"fail", exitFailed, "0/3 finished: 0 success, 0 failure\n1/3 finished: 1 success, 0 failure\n3/3 finished: 2 success, 1 failure\n" +
			"tetherctl: 1 of 3 orders failed\n"},
	}
	for _, tt := range tests {
		for _, out := range []string{"table", "json"} {
			t.Run(tt.action+"/"+out, func(t *testing.T) {
				setClock(t, 2*time.Second) // every line is shown
				f := newFakeServer(t)
				r := f.run(t, "commands", "send", "--group", "web", tt.action, "--wait", "-o", out)
				if r.code != tt.code {
					t.Fatalf("exit code %d, want %d; stderr:\n%s", r.code, tt.code, r.stderr)
				}
				if r.stderr != tt.progress {
					t.Errorf("stderr:\n%s\nwant:\n%s", r.stderr, tt.progress)
				}
				id := "c-grp"
				if tt.action == "fail" {
					id = "c-grpfail"
				}
				want := []string{"POST /api/v1/commands?", "GET /api/v1/commands/" + id + "/progress?", "GET /api/v1/commands/" + id + "?"}
				if got := f.requests(); strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
				if out == "json" {
					c := decode[api.Command](t, r.stdout)
					if c.ID != id || len(c.Orders) != 3 || c.Orders[2].Result == nil {
						t.Fatalf("command = %+v", c)
					}
					if tt.code == exitFailed && (c.Orders[2].Status != "failure" || c.Orders[2].Result.Message != "timed out") {
						t.Errorf("order 3 = %+v", c.Orders[2])
					}
					return
				}
				if !strings.HasPrefix(r.stdout, "command "+id+" created, waiting for 3 order(s)\n") {
					t.Errorf("stdout:\n%s", r.stdout)
				}
				for _, want := range []string{"o-1", "o-3", "a-3"} {
					if !strings.Contains(r.stdout, want) {
						t.Errorf("table lacks %q:\n%s", want, r.stdout)
					}
				}
				if tt.code == exitFailed && !strings.Contains(r.stdout, "timed out") {
					t.Errorf("table lacks the failure:\n%s", r.stdout)
				}
			})
		}
	}
}

func TestCommandsSendWaitThrottled(t *testing.T) {
	setClock(t, 0) // the clock stands still: only the first and last lines
	f := newFakeServer(t)
	r := f.run(t, "commands", "send", "--group", "web", "fail", "--wait", "-o", "json")
	if r.code != exitFailed {
		t.Fatalf("exit code %d", r.code)
	}
	if want := "0/3 finished: 0 success, 0 failure\n3/3 finished: 2 success, 1 failure\ntetherctl: 1 of 3 orders failed\n"; r.stderr != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", r.stderr, want)
	}
}

func TestCommandsListPage(t *testing.T) {
	setClock(t, 0)
	f := newFakeServer(t)
	r := f.run(t, "commands", "list", "--cursor", "n2", "--limit", "3").ok(t)
	if got, want := f.lastRequests(1)[0], "GET /api/v1/commands?cursor=n2&limit=3"; got != want {
		t.Errorf("request = %q, want %q", got, want)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 5 {
		t.Fatalf("want a header, 3 rows and a next-page line:\n%s", r.stdout)
	}
	if h := strings.Fields(lines[0]); strings.Join(h[3:9], " ") != "STATUS TOTAL PENDING SENT SUCCESS FAILURE" {
		t.Errorf("header = %q", lines[0])
	}
	if row := strings.Fields(lines[2]); strings.Join(row[:9], " ") != "c-grp restart group/web sent 7 1 2 3 1" {
		t.Errorf("row = %q", lines[2])
	}
	if row := strings.Fields(lines[3]); row[2] != "server" {
		t.Errorf("server row = %q", lines[3])
	}
	if strings.Index(lines[0], "TOTAL") != strings.Index(lines[2], "7") {
		t.Errorf("columns not aligned:\n%s", r.stdout)
	}
	if lines[4] != "(more: --cursor n3)" {
		t.Errorf("next-page line = %q", lines[4])
	}
	page := decode[api.CommandList](t, f.run(t, "commands", "list", "--cursor", "n2", "-o", "json").ok(t).stdout)
	if page.Next != "n3" || len(page.Items) != 3 || page.Items[1].Counts["failure"] != 1 {
		t.Errorf("page = %+v", page)
	}
}

func TestCommandsShowManyOrders(t *testing.T) {
	f := newFakeServer(t)
	r := f.run(t, "commands", "show", "c-grpfail").ok(t)
	for _, want := range []string{"Target:", "group/web", "Orders:", "3 (2 success, 1 failure)", "o-3"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestOrdersList(t *testing.T) {
	setClock(t, 0)
	f := newFakeServer(t)
	r := f.run(t, "orders", "list", "--command", "c-grpfail", "--agent", "a-1", "--group", "web", "--status", "failure",
		"--action", "restart", "--since", "1h", "--until", "2026-01-02T03:00:00Z", "--limit", "2").ok(t)
	want := "GET /api/v1/orders?action=restart&agent=a-1&created_after=2026-01-02T02%3A04%3A05Z&created_before=2026-01-02T03%3A00%3A00Z&group=web&limit=2&request=c-grpfail&status=failure"
	if got := f.lastRequests(1)[0]; got != want {
		t.Errorf("request =\n%s\nwant\n%s", got, want)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ORDER ") || !strings.Contains(lines[1], "o-1") ||
		!strings.Contains(lines[1], "c-grpfail") || lines[3] != "(more: --cursor p2)" {
		t.Errorf("output:\n%s", r.stdout)
	}

	midnight, _ := time.ParseInLocation(time.DateOnly, "2026-01-01", time.Local)
	f.run(t, "orders", "list", "--since", "2026-01-01", "--cursor", "p2").ok(t)
	want = "GET /api/v1/orders?created_after=" + strings.ReplaceAll(midnight.UTC().Format(time.RFC3339Nano), ":", "%3A") + "&cursor=p2"
	if got := f.lastRequests(1)[0]; got != want {
		t.Errorf("request = %s, want %s", got, want)
	}
}

func TestOrdersListAll(t *testing.T) {
	f := newFakeServer(t)
	r := f.run(t, "orders", "list", "--command", "c-grpfail", "--limit", "2", "--all", "-o", "json").ok(t)
	list := decode[api.OrderList](t, r.stdout)
	if len(list.Items) != 3 || list.Items[2].OrderID != "o-3" || list.Next != "" {
		t.Errorf("list = %+v", list)
	}
	want := []string{"GET /api/v1/orders?limit=2&request=c-grpfail", "GET /api/v1/orders?cursor=p2&limit=2&request=c-grpfail"}
	if got := f.requests(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	r = f.run(t, "orders", "list", "--all").ok(t)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || !strings.Contains(lines[3], "o-3") || !strings.Contains(lines[3], "timed out") {
		t.Errorf("want a header and 3 rows, no next-page line:\n%s", r.stdout)
	}
}

func TestGroupsConfig(t *testing.T) {
	f := newFakeServer(t)
	file := filepath.Join(t.TempDir(), "web.yaml")
	if err := os.WriteFile(file, []byte("log_level: info\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := f.run(t, "groups", "create", "web", "--description", "front", "--config-file", file).ok(t)
	if got, want := string(f.body()), `{"name":"web","description":"front","config":"log_level: info\n"}`; got != want {
		t.Errorf("body = %s, want %s", got, want)
	}
	if r.stdout != "group web created (configuration version v1)\n" {
		t.Errorf("stdout = %q", r.stdout)
	}

	r = f.runStdin(t, "a: 1\n", "groups", "create", "db", "--config-file", "-", "-o", "json").ok(t)
	if g := decode[api.Group](t, r.stdout); g.Name != "db" || g.Config != "a: 1\n" {
		t.Errorf("group = %+v", g)
	}
	if got, want := f.lastRequests(1)[0], "POST /api/v1/groups?"; got != want {
		t.Errorf("request = %q", got)
	}

	f.run(t, "groups", "create", "bare").ok(t)
	if got, want := string(f.body()), `{"name":"bare"}`; got != want {
		t.Errorf("body = %s, want %s", got, want)
	}

	r = f.runStdin(t, "events:\n  batch: 5\n", "groups", "set-config", "web", "--config-file", "-").ok(t)
	if got, want := f.lastRequests(1)[0], "PATCH /api/v1/groups/web?"; got != want {
		t.Errorf("request = %q", got)
	}
	if got, want := string(f.body()), `{"config":"events:\n  batch: 5\n"}`; got != want {
		t.Errorf("body = %s, want %s", got, want)
	}
	if r.stdout != "group web configuration set: version v2, 12 member(s)\n" {
		t.Errorf("stdout = %q", r.stdout)
	}

	r = f.run(t, "groups", "show", "web", "--config").ok(t)
	if r.stdout != webGroup().Config {
		t.Errorf("--config printed %q", r.stdout)
	}
}

func TestActionsShowUnknown(t *testing.T) {
	f := newFakeServer(t)
	r := f.run(t, "actions", "show", "frob")
	if r.code != exitFailure {
		t.Errorf("exit code %d, want 1", r.code)
	}
	oneErrorLine(t, r.stderr, `"frob" is not a built-in action`)
}

func TestProgressThrottle(t *testing.T) {
	setClock(t, 300*time.Millisecond)
	var buf strings.Builder
	p := &progress{w: &buf, every: time.Second}
	for i := range 10 {
		p.update(i, 10, i, 0)
	}
	p.done()
	// Shown at 0s, then the first update a second later or more (t=1.2s:
	// update 4), and so on; 9/10 is held back and shown at the end.
	want := "0/10 finished: 0 success, 0 failure\n4/10 finished: 4 success, 0 failure\n8/10 finished: 8 success, 0 failure\n9/10 finished: 9 success, 0 failure\n"
	if buf.String() != want {
		t.Errorf("lines:\n%s\nwant:\n%s", buf.String(), want)
	}
}
