package storetest

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether"
)

func checkGroup(t *testing.T, got, want *tether.Group) {
	t.Helper()
	if got.Name != want.Name || got.Description != want.Description || got.Version != want.Version ||
		got.Members != want.Members {
		t.Errorf("group = %+v, want %+v", got, want)
	}
	checkBytes(t, "group "+want.Name+" Config", got.Config, want.Config)
	checkJSON(t, "group "+want.Name+" ConfigJSON", got.ConfigJSON, want.ConfigJSON)
	checkTime(t, "group "+want.Name+" CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTime(t, "group "+want.Name+" UpdatedAt", got.UpdatedAt, want.UpdatedAt)
}

func getGroup(t *testing.T, s tether.Store, name string) *tether.Group {
	t.Helper()
	g, err := s.Group(ctx(t), name)
	must(t, err)
	return g
}

func groupNames(gs []*tether.Group) []string {
	var s []string
	for _, g := range gs {
		s = append(s, g.Name)
	}
	return s
}

func testGroups(t *testing.T, s tether.Store) {
	gs, err := s.Groups(ctx(t))
	must(t, err)
	if len(gs) != 0 {
		t.Fatalf("new store has %d groups", len(gs))
	}
	web := &tether.Group{
		Name:        "web",
		Description: "front web servers",
		Config:      []byte("log_level: debug\n"),
		ConfigJSON:  []byte(`{"log_level": "debug"}`),
		Version:     "0a1b2c",
		CreatedAt:   t0,
		UpdatedAt:   t0,
	}
	want := *web
	must(t, s.CreateGroup(ctx(t), web))
	checkGroup(t, web, &want)
	checkGroup(t, getGroup(t, s, "web"), &want)

	// An empty configuration is stored as an empty JSON object; a zero
	// UpdatedAt is the creation time.
	db := &tether.Group{Name: "db", CreatedAt: at(time.Minute)}
	must(t, s.CreateGroup(ctx(t), db))
	wantDB := tether.Group{Name: "db", ConfigJSON: []byte("{}"), CreatedAt: at(time.Minute), UpdatedAt: at(time.Minute)}
	checkGroup(t, getGroup(t, s, "db"), &wantDB)

	// Zero times are set by the store.
	now := &tether.Group{Name: "now"}
	must(t, s.CreateGroup(ctx(t), now))
	if now.CreatedAt.IsZero() || !now.UpdatedAt.Equal(now.CreatedAt) {
		t.Errorf("CreateGroup with zero times: CreatedAt %v, UpdatedAt %v", now.CreatedAt, now.UpdatedAt)
	}

	wantCode(t, s.CreateGroup(ctx(t), &tether.Group{Name: "web", CreatedAt: t0}), tether.ECONFLICT)
	checkGroup(t, getGroup(t, s, "web"), &want)
	for _, name := range []string{"", "-x", "a b", "é"} {
		wantCode(t, s.CreateGroup(ctx(t), &tether.Group{Name: name, CreatedAt: t0}), tether.EINVALID)
	}
	for _, doc := range []string{`[1]`, `{"a":`, `"x"`} {
		wantCode(t, s.CreateGroup(ctx(t), &tether.Group{Name: "bad", ConfigJSON: []byte(doc), CreatedAt: t0}), tether.EINVALID)
	}
	_, err = s.Group(ctx(t), "bad")
	wantCode(t, err, tether.ENOTFOUND)

	gs, err = s.Groups(ctx(t))
	must(t, err)
	checkStrings(t, "Groups", groupNames(gs), []string{"db", "now", "web"})
	if len(gs) == 3 {
		checkGroup(t, gs[0], &wantDB)
		checkGroup(t, gs[2], &want)
	}

	// UpdateGroup replaces everything but the name and creation time.
	upd := &tether.Group{
		Name:        "web",
		Description: "all web servers",
		Config:      []byte("log_level: info\nmodules: [inventory]\n"),
		ConfigJSON:  []byte(`{"log_level": "info", "modules": ["inventory"]}`),
		Version:     "3d4e5f",
		CreatedAt:   at(time.Hour), // ignored
		UpdatedAt:   at(2 * time.Hour),
	}
	must(t, s.UpdateGroup(ctx(t), upd))
	want = tether.Group{Name: "web", Description: upd.Description, Config: upd.Config, ConfigJSON: upd.ConfigJSON,
		Version: upd.Version, CreatedAt: t0, UpdatedAt: at(2 * time.Hour)}
	checkGroup(t, upd, &want)
	checkGroup(t, getGroup(t, s, "web"), &want)

	// Clearing the configuration leaves "{}".
	clear := &tether.Group{Name: "web", Version: "empty", UpdatedAt: at(3 * time.Hour)}
	must(t, s.UpdateGroup(ctx(t), clear))
	want = tether.Group{Name: "web", ConfigJSON: []byte("{}"), Version: "empty", CreatedAt: t0, UpdatedAt: at(3 * time.Hour)}
	checkGroup(t, getGroup(t, s, "web"), &want)

	wantCode(t, s.UpdateGroup(ctx(t), &tether.Group{Name: "missing", UpdatedAt: t0}), tether.ENOTFOUND)
	wantCode(t, s.UpdateGroup(ctx(t), &tether.Group{Name: "web", ConfigJSON: []byte(`[]`), UpdatedAt: t0}), tether.EINVALID)
	checkGroup(t, getGroup(t, s, "web"), &want)

	must(t, s.DeleteGroup(ctx(t), "db"))
	_, err = s.Group(ctx(t), "db")
	wantCode(t, err, tether.ENOTFOUND)
	wantCode(t, s.DeleteGroup(ctx(t), "db"), tether.ENOTFOUND)
	gs, err = s.Groups(ctx(t))
	must(t, err)
	checkStrings(t, "Groups after delete", groupNames(gs), []string{"now", "web"})
}

func testGroupMembers(t *testing.T, s tether.Store) {
	a := register(t, s, "a", "web", "eu")
	b := register(t, s, "b", "eu", "web", "canary")
	c := register(t, s, "c", "db")
	for _, name := range []string{"web", "db", "empty"} {
		must(t, s.CreateGroup(ctx(t), &tether.Group{Name: name, CreatedAt: t0}))
	}

	// Groups lists created groups only, counting the agents that name
	// them; Group counts too. "eu" and "canary" were never created.
	gs, err := s.Groups(ctx(t))
	must(t, err)
	checkStrings(t, "Groups", groupNames(gs), []string{"db", "empty", "web"})
	members := func() map[string]int {
		t.Helper()
		gs, err := s.Groups(ctx(t))
		must(t, err)
		m := map[string]int{}
		for _, g := range gs {
			m[g.Name] = g.Members
		}
		return m
	}
	checkMembers := func(what string, want map[string]int) {
		t.Helper()
		got := members()
		for name, n := range want {
			if got[name] != n {
				t.Errorf("%s: group %s has %d members, want %d", what, name, got[name], n)
			}
			if g := getGroup(t, s, name); g.Members != n {
				t.Errorf("%s: Group(%s).Members = %d, want %d", what, name, g.Members, n)
			}
		}
	}
	checkMembers("registered", map[string]int{"web": 2, "db": 1, "empty": 0})
	_, err = s.Group(ctx(t), "eu")
	wantCode(t, err, tether.ENOTFOUND)

	inGroup := func(group string) []string {
		t.Helper()
		as, err := s.Agents(ctx(t), tether.AgentFilter{Group: group})
		must(t, err)
		return agentIDs(as...)
	}

	// SetAgentGroups replaces the list, in order, and the membership.
	must(t, s.SetAgentGroups(ctx(t), c.ID, []string{"web", "empty", "db"}))
	checkStrings(t, "c's groups", getAgent(t, s, c.ID).Groups, []string{"web", "empty", "db"})
	checkMembers("c joined", map[string]int{"web": 3, "db": 1, "empty": 1})
	must(t, s.SetAgentGroups(ctx(t), a.ID, []string{"eu"}))
	checkStrings(t, "a's groups", getAgent(t, s, a.ID).Groups, []string{"eu"})
	checkMembers("a left web", map[string]int{"web": 2, "db": 1, "empty": 1})
	checkStrings(t, "agents in web", inGroup("web"), agentIDs(sortAgents(b, c)...))
	must(t, s.SetAgentGroups(ctx(t), a.ID, nil))
	checkStrings(t, "a's groups", getAgent(t, s, a.ID).Groups, nil)
	checkStrings(t, "agents in eu", inGroup("eu"), agentIDs(b))
	// The rest of the agent is kept.
	got := getAgent(t, s, a.ID)
	if got.Name != "a" || !got.EnrolledAt.Equal(t0) {
		t.Errorf("agent after SetAgentGroups: %+v", got)
	}

	wantCode(t, s.SetAgentGroups(ctx(t), newID(), []string{"web"}), tether.ENOTFOUND)
	wantCode(t, s.SetAgentGroups(ctx(t), b.ID, []string{"web", "web"}), tether.EINVALID)
	wantCode(t, s.SetAgentGroups(ctx(t), b.ID, []string{"not valid"}), tether.EINVALID)
	checkStrings(t, "b's groups", getAgent(t, s, b.ID).Groups, []string{"eu", "web", "canary"})

	// Deleting a group removes it from its members' lists, keeping the
	// order of the rest.
	must(t, s.DeleteGroup(ctx(t), "web"))
	checkStrings(t, "b's groups", getAgent(t, s, b.ID).Groups, []string{"eu", "canary"})
	checkStrings(t, "c's groups", getAgent(t, s, c.ID).Groups, []string{"empty", "db"})
	checkStrings(t, "agents in web", inGroup("web"), nil)
	// A group that was never created but has members can be deleted too.
	must(t, s.DeleteGroup(ctx(t), "canary"))
	checkStrings(t, "b's groups", getAgent(t, s, b.ID).Groups, []string{"eu"})
	wantCode(t, s.DeleteGroup(ctx(t), "canary"), tether.ENOTFOUND)
	wantCode(t, s.DeleteGroup(ctx(t), "nobody"), tether.ENOTFOUND)
	checkMembers("after deletes", map[string]int{"db": 1, "empty": 1})

	// A deleted agent is no member any more.
	must(t, s.DeleteAgent(ctx(t), c.ID))
	checkMembers("after agent delete", map[string]int{"db": 0, "empty": 0})

	// Re-creating a deleted group counts the agents that name it again.
	must(t, s.SetAgentGroups(ctx(t), b.ID, []string{"eu", "web"}))
	must(t, s.CreateGroup(ctx(t), &tether.Group{Name: "web", CreatedAt: at(time.Hour)}))
	checkMembers("web again", map[string]int{"web": 1})
}

// sortAgents returns the agents ordered by id.
func sortAgents(as ...*tether.Agent) []*tether.Agent {
	out := slices.Clone(as)
	slices.SortFunc(out, func(x, y *tether.Agent) int { return strings.Compare(x.ID, y.ID) })
	return out
}

func testGroupConfigs(t *testing.T, s tether.Store) {
	cs, err := s.GroupConfigs(ctx(t), []string{"web"})
	must(t, err)
	if len(cs) != 0 {
		t.Fatalf("new store has %d group configs", len(cs))
	}
	web := &tether.Group{Name: "web", ConfigJSON: []byte(`{"log_level": "debug"}`), Version: "v1", CreatedAt: t0}
	db := &tether.Group{Name: "db", ConfigJSON: []byte(`{"modules": ["inventory"]}`), Version: "v2", CreatedAt: at(time.Minute)}
	bare := &tether.Group{Name: "bare", CreatedAt: at(time.Minute)}
	must(t, s.CreateGroup(ctx(t), web))
	must(t, s.CreateGroup(ctx(t), db))
	must(t, s.CreateGroup(ctx(t), bare))
	// An agent naming a group nobody created gets nothing for it.
	register(t, s, "a", "web", "missing")

	cfg := func(g *tether.Group) *tether.GroupConfig {
		doc := g.ConfigJSON
		if len(doc) == 0 {
			doc = []byte("{}")
		}
		return &tether.GroupConfig{Group: g.Name, Doc: doc, Version: g.Version, UpdatedAt: g.UpdatedAt}
	}
	check := func(groups []string, want ...*tether.GroupConfig) {
		t.Helper()
		cs, err := s.GroupConfigs(ctx(t), groups)
		must(t, err)
		if len(cs) != len(want) {
			t.Fatalf("GroupConfigs(%q) = %d configs, want %d", groups, len(cs), len(want))
		}
		for i, w := range want {
			if cs[i].Group != w.Group {
				t.Errorf("GroupConfigs(%q)[%d] = %s, want %s", groups, i, cs[i].Group, w.Group)
				continue
			}
			checkJSON(t, "Doc", cs[i].Doc, w.Doc)
			if cs[i].Version != w.Version {
				t.Errorf("GroupConfigs(%q)[%d].Version = %q, want %q", groups, i, cs[i].Version, w.Version)
			}
			checkTime(t, "UpdatedAt", cs[i].UpdatedAt, w.UpdatedAt)
		}
	}
	check([]string{"db", "missing", "web"}, cfg(db), cfg(web))
	check([]string{"web", "db", "web"}, cfg(web), cfg(db))
	check([]string{"bare"}, cfg(bare))
	check([]string{"missing"})
	check(nil)

	web2 := &tether.Group{Name: "web", ConfigJSON: []byte(`{"log_level": "info"}`), Version: "v3", UpdatedAt: at(time.Hour)}
	must(t, s.UpdateGroup(ctx(t), web2))
	check([]string{"web", "db"}, cfg(web2), cfg(db))
	must(t, s.DeleteGroup(ctx(t), "db"))
	check([]string{"web", "db"}, cfg(web2))
}
