package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether"
)

func checkAgent(t *testing.T, got, want *tether.Agent) {
	t.Helper()
	if got.ID != want.ID || got.Name != want.Name || got.Disabled != want.Disabled ||
		got.Hostname != want.Hostname || got.OS != want.OS || got.Arch != want.Arch ||
		got.Version != want.Version || got.EnrolledBy != want.EnrolledBy || got.LastBatchSeq != want.LastBatchSeq {
		t.Errorf("agent = %+v, want %+v", got, want)
	}
	checkStrings(t, "Groups", got.Groups, want.Groups)
	checkBytes(t, "KeyHash", got.KeyHash, want.KeyHash)
	checkTime(t, "EnrolledAt", got.EnrolledAt, want.EnrolledAt)
	checkTime(t, "UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	checkTime(t, "LastSeen", got.LastSeen, want.LastSeen)
}

func getAgent(t *testing.T, s tether.Store, id string) *tether.Agent {
	t.Helper()
	a, err := s.Agent(ctx(t), id)
	must(t, err)
	return a
}

func testRegisterAgent(t *testing.T, s tether.Store) {
	tok := newToken("enroll", tether.RoleRegistrar, t0)
	tok.MaxUses = 2
	tok.ExpiresAt = at(time.Hour)
	must(t, s.CreateToken(ctx(t), tok))

	a := newAgent("web-1", "web", "eu-west")
	a.EnrolledAt, a.UpdatedAt, a.EnrolledBy = at(time.Minute), at(time.Minute), tok.ID
	want := *a
	must(t, s.RegisterAgent(ctx(t), a, tok.ID, at(time.Minute)))
	checkAgent(t, getAgent(t, s, a.ID), &want)

	got, err := s.Token(ctx(t), tok.ID)
	must(t, err)
	if got.Uses != 1 {
		t.Errorf("token uses = %d, want 1", got.Uses)
	}

	// An admin registers without a token.
	b := newAgent("web-2")
	b.EnrolledAt, b.UpdatedAt = t0, t0
	want = *b
	must(t, s.RegisterAgent(ctx(t), b, "", t0))
	checkAgent(t, getAgent(t, s, b.ID), &want)

	_, err = s.Agent(ctx(t), newID())
	wantCode(t, err, tether.ENOTFOUND)
}

func testRegisterAgentAgain(t *testing.T, s tether.Store) {
	tok := newToken("enroll", tether.RoleRegistrar, t0)
	must(t, s.CreateToken(ctx(t), tok))
	a := newAgent("old-name", "old-group")
	a.EnrolledAt, a.UpdatedAt, a.EnrolledBy = t0, t0, tok.ID
	must(t, s.RegisterAgent(ctx(t), a, tok.ID, t0))
	must(t, s.TouchAgents(ctx(t), map[string]time.Time{a.ID: at(time.Minute)}))
	if st, _, err := s.BeginBatch(ctx(t), a.ID, 7, nil, t0); err != nil || st != tether.BatchNew {
		t.Fatalf("BeginBatch(7) = %v, %v, want new", st, err)
	}

	// Re-enrollment: same id, new key, name, groups and facts.
	again := newAgent("new-name", "new-group", "eu")
	again.ID = a.ID
	again.OS, again.Arch, again.Version = "windows", "arm64", "2.0.0"
	again.EnrolledAt, again.UpdatedAt, again.EnrolledBy = at(time.Hour), at(time.Hour), tok.ID
	must(t, s.RegisterAgent(ctx(t), again, tok.ID, at(time.Hour)))

	want := *again
	want.EnrolledAt = t0
	want.LastSeen = at(time.Minute)
	want.LastBatchSeq = 7
	checkAgent(t, getAgent(t, s, a.ID), &want)
	checkAgent(t, again, &want) // *again now holds the agent as stored

	got, err := s.Token(ctx(t), tok.ID)
	must(t, err)
	if got.Uses != 2 {
		t.Errorf("token uses = %d, want 2", got.Uses)
	}
	for group, n := range map[string]int{"old-group": 0, "new-group": 1, "eu": 1} {
		as, err := s.Agents(ctx(t), tether.AgentFilter{Group: group})
		must(t, err)
		if len(as) != n {
			t.Errorf("agents in group %s = %d, want %d", group, len(as), n)
		}
	}
	as, err := s.Agents(ctx(t), tether.AgentFilter{})
	must(t, err)
	if len(as) != 1 {
		t.Errorf("agents = %d, want 1", len(as))
	}
}

func testRegisterAgentRefused(t *testing.T, s tether.Store) {
	tests := []struct {
		name  string
		token func(tok *tether.Token)
		code  tether.Code
	}{
		{"revoked", func(tok *tether.Token) { tok.RevokedAt = t0.Add(-time.Second) }, tether.EGONE},
		{"expired", func(tok *tether.Token) { tok.ExpiresAt = t0.Add(-time.Second) }, tether.EEXPIRED},
		{"expiring now", func(tok *tether.Token) { tok.ExpiresAt = t0 }, tether.EEXPIRED},
		{"used up", func(tok *tether.Token) { tok.MaxUses, tok.Uses = 3, 3 }, tether.EGONE},
		{"unknown", nil, tether.ENOTFOUND},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := newToken(tt.name, tether.RoleRegistrar, t0.Add(-time.Hour))
			if tt.token != nil {
				tt.token(tok)
				must(t, s.CreateToken(ctx(t), tok))
			}
			a := newAgent("refused")
			a.EnrolledAt, a.UpdatedAt = t0, t0
			wantCode(t, s.RegisterAgent(ctx(t), a, tok.ID, t0), tt.code)
			_, err := s.Agent(ctx(t), a.ID)
			wantCode(t, err, tether.ENOTFOUND)
			if tt.token != nil {
				got, err := s.Token(ctx(t), tok.ID)
				must(t, err)
				if got.Uses != tok.Uses {
					t.Errorf("token uses = %d, want %d", got.Uses, tok.Uses)
				}
			}
		})
	}

	// A refused re-enrollment leaves the agent as it was.
	a := register(t, s, "kept", "web")
	tok := newToken("revoked", tether.RoleRegistrar, t0)
	tok.RevokedAt = t0
	must(t, s.CreateToken(ctx(t), tok))
	again := newAgent("changed", "db")
	again.ID = a.ID
	again.EnrolledAt, again.UpdatedAt = at(time.Hour), at(time.Hour)
	wantCode(t, s.RegisterAgent(ctx(t), again, tok.ID, at(time.Hour)), tether.EGONE)
	checkAgent(t, getAgent(t, s, a.ID), a)
}

func testRegisterAgentTokenRace(t *testing.T, s tether.Store) {
	tok := newToken("enroll", tether.RoleRegistrar, t0)
	tok.MaxUses = 3
	must(t, s.CreateToken(ctx(t), tok))

	const n = 10
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			a := newAgent(fmt.Sprintf("racer-%d", i))
			a.EnrolledAt, a.UpdatedAt = t0, t0
			errs[i] = s.RegisterAgent(ctx(t), a, tok.ID, t0)
		})
	}
	wg.Wait()
	ok, gone := 0, 0
	for _, err := range errs {
		switch tether.ErrorCode(err) {
		case "":
			ok++
		case tether.EGONE:
			gone++
		default:
			t.Errorf("RegisterAgent: %v", err)
		}
	}
	if ok != 3 || gone != n-3 {
		t.Errorf("registrations: %d succeeded and %d were refused, want 3 and %d", ok, gone, n-3)
	}
	got, err := s.Token(ctx(t), tok.ID)
	must(t, err)
	if got.Uses != 3 {
		t.Errorf("token uses = %d, want 3", got.Uses)
	}
	as, err := s.Agents(ctx(t), tether.AgentFilter{})
	must(t, err)
	if len(as) != 3 {
		t.Errorf("agents = %d, want 3", len(as))
	}
}

// agentIDs returns the sorted ids of the agents.
func agentIDs(as ...*tether.Agent) []string {
	var s []string
	for _, a := range as {
		s = append(s, a.ID)
	}
	slices.Sort(s)
	return s
}

func testAgents(t *testing.T, s tether.Store) {
	web1 := register(t, s, "web-1", "web", "eu")
	web2 := register(t, s, "web-2", "web")
	db1 := register(t, s, "db-1", "db", "eu")
	web10 := register(t, s, "web-10", "webserver")
	upper := register(t, s, "Web-3")
	must(t, s.TouchAgents(ctx(t), map[string]time.Time{
		web1.ID:  at(10 * time.Minute),
		web2.ID:  at(-time.Hour),
		web10.ID: t0,
	}))

	got := getAgent(t, s, web1.ID)
	want := *web1
	want.LastSeen = at(10 * time.Minute)
	checkAgent(t, got, &want)

	all := agentIDs(web1, web2, db1, web10, upper)
	tests := []struct {
		name   string
		filter tether.AgentFilter
		want   []string
	}{
		{"all", tether.AgentFilter{}, all},
		{"group", tether.AgentFilter{Group: "web"}, agentIDs(web1, web2)},
		{"group eu", tether.AgentFilter{Group: "eu"}, agentIDs(web1, db1)},
		{"group none", tether.AgentFilter{Group: "we"}, nil},
		{"name prefix", tether.AgentFilter{NamePrefix: "web-1"}, agentIDs(web1, web10)},
		{"name prefix case", tether.AgentFilter{NamePrefix: "web"}, agentIDs(web1, web2, web10)},
		{"name prefix none", tether.AgentFilter{NamePrefix: "web-1%"}, nil},
		{"seen since", tether.AgentFilter{SeenSince: t0}, agentIDs(web1, web10)},
		{"not seen since", tether.AgentFilter{NotSeenSince: t0}, agentIDs(web2)},
		{"never seen", tether.AgentFilter{NeverSeen: true}, agentIDs(db1, upper)},
		{"group and seen", tether.AgentFilter{Group: "web", SeenSince: t0}, agentIDs(web1)},
		{"group and prefix", tether.AgentFilter{Group: "eu", NamePrefix: "db"}, agentIDs(db1)},
		{"limit", tether.AgentFilter{Limit: 2}, all[:2]},
		{"after", tether.AgentFilter{After: all[2]}, all[3:]},
		{"after and limit", tether.AgentFilter{After: all[0], Limit: 2}, all[1:3]},
	}
	for _, tt := range tests {
		as, err := s.Agents(ctx(t), tt.filter)
		must(t, err)
		checkStrings(t, "Agents "+tt.name, agentIDs(as...), tt.want)
		for i := 1; i < len(as); i++ {
			if as[i-1].ID >= as[i].ID {
				t.Errorf("Agents %s: not ordered by id", tt.name)
			}
		}
	}
}

func testAgentsPagination(t *testing.T, s tether.Store) {
	var all []*tether.Agent
	for i := range 105 {
		all = append(all, register(t, s, fmt.Sprintf("host-%03d", i)))
	}
	want := agentIDs(all...)

	as, err := s.Agents(ctx(t), tether.AgentFilter{})
	must(t, err)
	if len(as) != 100 {
		t.Errorf("Agents with the default limit = %d agents, want 100", len(as))
	}

	var got []string
	f := tether.AgentFilter{Limit: 40}
	for page := 0; ; page++ {
		if page > 5 {
			t.Fatal("pagination does not end")
		}
		as, err := s.Agents(ctx(t), f)
		must(t, err)
		if len(as) == 0 {
			break
		}
		for _, a := range as {
			got = append(got, a.ID)
		}
		f.After = as[len(as)-1].ID
	}
	if !slices.Equal(got, want) {
		t.Errorf("paged through %d agents, want the %d in id order", len(got), len(want))
	}
}

func testDeleteAgent(t *testing.T, s tether.Store) {
	a := register(t, s, "doomed")
	b := register(t, s, "survivor")
	r, orders := createCommand(t, s, t0, time.Hour, a, b)
	_, done := createCommand(t, s, t0, time.Hour, a)
	_, sent := createCommand(t, s, at(time.Second), time.Hour, a)
	_, err := s.FinishOrder(ctx(t), a.ID, done[0].ID, tether.OrderSuccess, tether.Result{Message: "ok"}, at(time.Minute))
	must(t, err)
	delivered, err := deliver(t, s, a.ID, []string{}, 10, at(time.Second))
	must(t, err)
	checkStrings(t, "delivered", ids(delivered), append(ids(orders[:1]), ids(sent)...))
	for _, ag := range []*tether.Agent{a, b} {
		must(t, s.ApplyState(ctx(t), ag.ID, 1, []tether.Event{
			{Module: "inventory", Key: "os", Op: tether.StateUpsert, Payload: []byte(`{"name":"linux"}`)},
		}, t0))
	}

	must(t, s.DeleteAgent(ctx(t), a.ID))
	_, err = s.Agent(ctx(t), a.ID)
	wantCode(t, err, tether.ENOTFOUND)
	wantCode(t, s.DeleteAgent(ctx(t), a.ID), tether.ENOTFOUND)

	var orderA, orderB *tether.Order
	for _, o := range orders {
		if o.AgentID == a.ID {
			orderA = o
		} else {
			orderB = o
		}
	}
	// The deleted agent's unfinished orders failed; its finished ones and
	// the other agent's are unchanged.
	got := getOrder(t, s, orderA.ID)
	if got.Status != tether.OrderFailure || got.Result.Message != "agent deleted" || got.FinishedAt.IsZero() ||
		got.AgentID != a.ID {
		t.Errorf("order of the deleted agent: agent %s, status %s, message %q, finished at %v; want agent %s, failure, \"agent deleted\", a finish time",
			got.AgentID, got.Status, got.Result.Message, got.FinishedAt, a.ID)
	}
	checkOrder(t, getOrder(t, s, orderB.ID), orderB)
	want := *done[0]
	want.Status, want.Result, want.FinishedAt = tether.OrderSuccess, tether.Result{Message: "ok"}, at(time.Minute)
	checkOrder(t, getOrder(t, s, done[0].ID), &want)
	want = *sent[0]
	want.Status, want.SentAt, want.Attempts = tether.OrderFailure, at(time.Second), 1
	want.Result, want.FinishedAt = tether.Result{Message: "agent deleted"}, getOrder(t, s, sent[0].ID).FinishedAt
	checkOrder(t, getOrder(t, s, sent[0].ID), &want)

	// The requests stay, with every order.
	gotR, gotOrders, err := s.Command(ctx(t), r.ID)
	must(t, err)
	if gotR.ID != r.ID {
		t.Errorf("command id = %s, want %s", gotR.ID, r.ID)
	}
	checkStrings(t, "orders after delete", sortedIDs(gotOrders), sortedIDs(orders))

	// Nothing is delivered for the deleted id.
	delivered, err = deliver(t, s, a.ID, nil, 10, at(2*time.Minute))
	if err == nil && len(delivered) != 0 {
		t.Errorf("delivered %d orders to a deleted agent", len(delivered))
	}

	st, err := s.State(ctx(t), a.ID, "")
	must(t, err)
	if len(st) != 0 {
		t.Errorf("state of deleted agent = %d entries, want 0", len(st))
	}
	st, err = s.State(ctx(t), b.ID, "")
	must(t, err)
	if len(st) != 1 {
		t.Errorf("state of other agent = %d entries, want 1", len(st))
	}

	// Re-registering the id starts afresh.
	again := newAgent("doomed")
	again.ID = a.ID
	again.EnrolledAt, again.UpdatedAt = at(time.Hour), at(time.Hour)
	must(t, s.RegisterAgent(ctx(t), again, "", at(time.Hour)))
	gotA := getAgent(t, s, a.ID)
	checkTime(t, "EnrolledAt after re-registration", gotA.EnrolledAt, at(time.Hour))
	if gotA.LastBatchSeq != 0 {
		t.Errorf("LastBatchSeq after re-registration = %d, want 0", gotA.LastBatchSeq)
	}
}

func testTouchAgents(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	b := register(t, s, "b")
	c := register(t, s, "c")
	must(t, s.TouchAgents(ctx(t), nil))
	must(t, s.TouchAgents(ctx(t), map[string]time.Time{
		a.ID:    at(time.Minute),
		b.ID:    at(2 * time.Minute),
		newID(): at(3 * time.Minute), // unknown: ignored
	}))
	// Older times do not replace newer ones.
	must(t, s.TouchAgents(ctx(t), map[string]time.Time{
		a.ID: at(2 * time.Minute),
		b.ID: at(time.Second),
	}))
	for id, want := range map[string]time.Time{
		a.ID: at(2 * time.Minute),
		b.ID: at(2 * time.Minute),
		c.ID: {},
	} {
		checkTime(t, "LastSeen", getAgent(t, s, id).LastSeen, want)
	}
}

// testSetAgentVersion records the version an agent runs.
func testSetAgentVersion(t *testing.T, s tether.Store) {
	a := register(t, s, "a")
	must(t, s.SetAgentVersion(ctx(t), a.ID, "2.0.0"))
	got, err := s.Agent(ctx(t), a.ID)
	must(t, err)
	if got.Version != "2.0.0" || got.Name != a.Name || !slices.Equal(got.Groups, a.Groups) {
		t.Errorf("agent after SetAgentVersion = %+v", got)
	}
	wantCode(t, s.SetAgentVersion(ctx(t), newID(), "2.0.0"), tether.ENOTFOUND)
}
