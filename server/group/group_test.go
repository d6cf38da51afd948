package group_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether"
	"github.com/tetherhq/tether/server/group"
	"github.com/tetherhq/tether/server/notify"
	"github.com/tetherhq/tether/server/sqlite"
)

// newService returns a Service over a real SQLite store and the in-process
// notifier.
func newService(t *testing.T) (*group.Service, *sqlite.DB, *notify.Hub) {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "tether.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	hub := notify.NewHub()
	return &group.Service{Store: db, Notifier: hub}, db, hub
}

// addAgent registers an agent in the groups and returns its id.
func addAgent(t *testing.T, db *sqlite.DB, groups ...string) string {
	t.Helper()
	now := time.Now().UTC()
	a := &tether.Agent{ID: uuid.NewString(), Name: "host", Groups: groups, KeyHash: []byte("hash"), EnrolledAt: now, UpdatedAt: now}
	if err := db.RegisterAgent(context.Background(), a, "", now); err != nil {
		t.Fatalf("register agent: %v", err)
	}
	return a.ID
}

// woken reports whether a notification is waiting on ch. The Service
// notifies before it returns, so no wait is needed.
func woken(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestServiceVersionsAndWakesMembers(t *testing.T) {
	s, db, hub := newService(t)
	ctx := context.Background()
	member, other := addAgent(t, db, "web"), addAgent(t, db, "db")
	mw, release := hub.Subscribe(member)
	defer release()
	ow, release2 := hub.Subscribe(other)
	defer release2()

	g, err := s.Create(ctx, "web", "front ends", "log:\n  level: info\n")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if string(g.ConfigJSON) != `{"log":{"level":"info"}}` || string(g.Config) != "log:\n  level: info\n" ||
		len(g.Version) != 16 || g.Members != 1 || g.Description != "front ends" {
		t.Fatalf("created %+v", g)
	}
	if !woken(mw) || woken(ow) {
		t.Errorf("creating a configured group: want its member woken, and only it")
	}
	v1 := g.Version

	// The description alone: same version, nobody woken.
	desc := "web front ends"
	if g, err = s.Update(ctx, "web", &desc, nil); err != nil {
		t.Fatalf("update description: %v", err)
	}
	if g.Version != v1 || g.Description != desc || woken(mw) {
		t.Errorf("description change: version %s (want %s), woken %v", g.Version, v1, woken(mw))
	}
	// The same content written differently: same version, nobody woken.
	same := "# reformatted\nlog: {level: info}\n"
	if g, err = s.Update(ctx, "web", nil, &same); err != nil {
		t.Fatalf("update config: %v", err)
	}
	if g.Version != v1 || string(g.Config) != same || woken(mw) {
		t.Errorf("reformatted config: version %s (want %s), config %q", g.Version, v1, g.Config)
	}
	// A new content: new version, the member is woken.
	changed := "log:\n  level: debug\n"
	if g, err = s.Update(ctx, "web", nil, &changed); err != nil {
		t.Fatalf("update config: %v", err)
	}
	if g.Version == v1 || !woken(mw) || woken(ow) {
		t.Errorf("changed config: version %s (was %s); want a new version and the member woken", g.Version, v1)
	}
	got, err := s.Get(ctx, "web")
	if err != nil || got.Version != g.Version || got.Description != desc {
		t.Errorf("get: %+v, %v", got, err)
	}

	// A bad update changes nothing.
	bad := "- a list\n"
	if _, err := s.Update(ctx, "web", &desc, &bad); tether.ErrorCode(err) != tether.EINVALID {
		t.Errorf("bad config: %v; want invalid", err)
	}
	if got, _ := s.Get(ctx, "web"); got.Version != g.Version {
		t.Errorf("a refused update changed the version")
	}

	// Deleting the group wakes its former members.
	if err := s.Delete(ctx, "web"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if !woken(mw) || woken(ow) {
		t.Errorf("delete: want the former member woken, and only it")
	}
	if _, err := s.Get(ctx, "web"); tether.ErrorCode(err) != tether.ENOTFOUND {
		t.Errorf("get deleted group: %v", err)
	}
	a, _ := db.Agent(ctx, member)
	if len(a.Groups) != 0 {
		t.Errorf("member still lists %v", a.Groups)
	}
}

func TestServiceWakesEveryMemberPageByPage(t *testing.T) {
	s, db, hub := newService(t)
	ctx := context.Background()
	// More members than one page of the member list.
	const n = 1001
	chans := make([]<-chan struct{}, n)
	for i := range n {
		id := addAgent(t, db, "fleet")
		var release func()
		chans[i], release = hub.Subscribe(id)
		defer release()
	}
	if _, err := s.Create(ctx, "fleet", "", "a: 1\n"); err != nil {
		t.Fatalf("create: %v", err)
	}
	for i, ch := range chans {
		if !woken(ch) {
			t.Fatalf("member %d of %d not woken", i+1, n)
		}
	}
}

func TestServiceSetAgentGroups(t *testing.T) {
	s, db, hub := newService(t)
	ctx := context.Background()
	id := addAgent(t, db, "web")
	ch, release := hub.Subscribe(id)
	defer release()

	a, err := s.SetAgentGroups(ctx, id, []string{"prod", "web"})
	if err != nil {
		t.Fatalf("set groups: %v", err)
	}
	if !slices.Equal(a.Groups, []string{"prod", "web"}) || !woken(ch) {
		t.Errorf("groups %v, woken %v; want [prod web] and the agent woken", a.Groups, woken(ch))
	}
	// The same list again: no change, no wake-up.
	if _, err := s.SetAgentGroups(ctx, id, []string{"prod", "web"}); err != nil || woken(ch) {
		t.Errorf("unchanged groups: err %v, woken %v; want no wake-up", err, woken(ch))
	}
	if a, err = s.SetAgentGroups(ctx, id, nil); err != nil || len(a.Groups) != 0 || !woken(ch) {
		t.Errorf("no groups: %v, %v, woken %v", a, err, woken(ch))
	}
	for _, groups := range [][]string{{"a b"}, {"x", "x"}} {
		_, err := s.SetAgentGroups(ctx, id, groups)
		if tether.ErrorCode(err) != tether.EINVALID || fieldOf(err) != "groups" {
			t.Errorf("groups %q: %v; want invalid on the field groups", groups, err)
		}
	}
	if _, err := s.SetAgentGroups(ctx, uuid.NewString(), []string{"web"}); tether.ErrorCode(err) != tether.ENOTFOUND {
		t.Errorf("unknown agent: %v; want not found", err)
	}
}

func TestServiceValidation(t *testing.T) {
	s, _, _ := newService(t)
	ctx := context.Background()
	long := string(make([]byte, group.MaxDescriptionBytes+1))
	for _, tt := range []struct {
		name, group, desc, config, field string
	}{
		{"bad name", "a b", "", "", "name"},
		{"empty name", "", "", "", "name"},
		{"long description", "web", long, "", "description"},
		{"bad utf-8", "web", "\xff", "", "description"},
		{"config not a mapping", "web", "", "[1]", "config"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Create(ctx, tt.group, tt.desc, tt.config)
			if fieldOf(err) != tt.field {
				t.Errorf("error %v; want one on the field %s", err, tt.field)
			}
		})
	}
	if _, err := s.Create(ctx, "web", "", ""); err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := s.Create(ctx, "web", "", ""); tether.ErrorCode(err) != tether.ECONFLICT {
		t.Errorf("duplicate: %v; want conflict", err)
	}
	if _, err := s.Update(ctx, "nope", nil, nil); tether.ErrorCode(err) != tether.ENOTFOUND {
		t.Errorf("update unknown: %v; want not found", err)
	}
	if err := s.Delete(ctx, "nope"); tether.ErrorCode(err) != tether.ENOTFOUND {
		t.Errorf("delete unknown: %v; want not found", err)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "web" || string(list[0].ConfigJSON) != "{}" {
		t.Errorf("list: %v, %v", list, err)
	}
}

// fieldOf returns the field an error names ("" for none).
func fieldOf(err error) string {
	var te *tether.Error
	if errors.As(err, &te) {
		return te.Field
	}
	return ""
}
