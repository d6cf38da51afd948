package main

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tetherhq/tether/api"
	"github.com/tetherhq/tether/client"
	"github.com/tetherhq/tether/server/pgnotify"
	"github.com/tetherhq/tether/server/postgres"
	"github.com/tetherhq/tether/server/postgres/pgtest"
)

func TestNotifyChannel(t *testing.T) {
	for url, want := range map[string]string{
		"postgres://u@db:5432/tether":                                     "tether_notify",
		"postgres://u@db:5432/tether?sslmode=require":                     "tether_notify",
		"postgres://u@db:5432/tether?search_path=Fleet-EU":                "tether_notify_fleet_eu",
		"postgresql://u@db/t?search_path=" + strings.Repeat("a", 80):      "tether_notify_" + strings.Repeat("a", 49),
		"postgresql://u@db/t?sslmode=disable&search_path=tether&x=y#frag": "tether_notify_tether",
	} {
		if got := notifyChannel(url); got != want {
			t.Errorf("notifyChannel(%q) = %q, want %q", url, got, want)
		}
	}
}

func TestOpenNotifierAloneIsInProcess(t *testing.T) {
	n, err := openNotifier(context.Background(), Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, ok := n.(localHub); !ok {
		t.Fatalf("notifier of a SQLite node is %T, want the in-process hub", n)
	}
}

// TestClusterWakesPollsAcrossNodes starts two nodes on one PostgreSQL
// store and an agent that polls the second: an order created, a group
// configuration changed and the agent deleted through the first each end
// its poll at once, also when the second node's listening connection was
// just cut; and an agent given both nodes carries on through one when the
// other stops.
func TestClusterWakesPollsAcrossNodes(t *testing.T) {
	store := pgtest.URL(t)
	nodes := startNodes(t, store, t.TempDir(), t.TempDir())
	a, b := nodes[0], nodes[1]
	if !a.FirstStart {
		a, b = b, a // a holds the admin token
	}
	ctx := context.Background()
	admin := adminClient(t, a)
	id, key := enrollRaw(t, a) // in group "test"
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(b.CACertFile)
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("CA of the nodes: %v", err)
	}
	onB, err := client.New(client.Config{URLs: []string{b.CommsURL}, AgentID: id, AgentKey: key, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	type polled struct {
		res  client.PollResult
		err  error
		took time.Duration
	}
	// poll starts a poll of up to a minute on b and returns once b holds it.
	poll := func(p client.PollRequest) <-chan polled {
		t.Helper()
		before := b.notifier.Waiting()
		ch := make(chan polled, 1)
		go func() {
			p.Wait = time.Minute
			start := time.Now()
			res, err := onB.Poll(ctx, p)
			ch <- polled{res, err, time.Since(start)}
		}()
		deadline := time.Now().Add(10 * time.Second)
		for b.notifier.Waiting() == before {
			if time.Now().After(deadline) {
				t.Fatal("the poll is not waiting on node b after 10 s")
			}
			time.Sleep(time.Millisecond)
		}
		return ch
	}
	await := func(ch <-chan polled, what string) polled {
		t.Helper()
		select {
		case p := <-ch:
			if p.took > 30*time.Second {
				t.Fatalf("%s: the poll was held %s: not woken", what, p.took)
			}
			return p
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: the poll on node b was not answered within 30 s", what)
			return polled{}
		}
	}
	command := func() string {
		t.Helper()
		cmd, err := admin.CreateCommand(ctx, api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: id}, Action: api.Action{Name: "restart"}})
		if err != nil || len(cmd.Orders) != 1 {
			t.Fatalf("create command through node a: %v, %v", cmd, err)
		}
		return cmd.Orders[0].OrderID
	}

	// An order created through a.
	ch := poll(client.PollRequest{})
	order := command()
	if p := await(ch, "order"); p.err != nil || len(p.res.Orders) != 1 || p.res.Orders[0].ID != order {
		t.Fatalf("poll on node b answered %+v, %v; want order %s", p.res, p.err, order)
	}
	received := []string{order}

	// A configuration changed through a: b drops the version it cached.
	first, err := onB.Poll(ctx, client.PollRequest{Wait: time.Millisecond, Received: received})
	if err != nil {
		t.Fatal(err)
	}
	version := first.ConfigVersion
	ch = poll(client.PollRequest{ConfigVersion: version})
	cfg := "log_level: debug\n"
	if _, err := admin.CreateGroup(ctx, api.CreateGroupRequest{Name: "test", Config: cfg}); err != nil {
		t.Fatal(err)
	}
	p := await(ch, "configuration")
	if p.err != nil || p.res.ConfigVersion == version {
		t.Fatalf("after a configuration change through node a, the poll on node b answered %+v, %v", p.res, p.err)
	}
	version = p.res.ConfigVersion

	// b's listening connection is cut, and an order created at once
	// through a: b hears it, or catches up once it listens again.
	pg := b.notifier.(*pgnotify.Notifier)
	ch = poll(client.PollRequest{ConfigVersion: version})
	terminateListener(t, store, pg.Node())
	order = command()
	if p := await(ch, "order while b reconnects"); p.err != nil || len(p.res.Orders) != 1 || p.res.Orders[0].ID != order {
		t.Fatalf("poll on node b answered %+v, %v; want order %s", p.res, p.err, order)
	}
	received = []string{order}
	deadline := time.Now().Add(10 * time.Second)
	for !pg.Listening() || pg.Reconnects() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("node b: listening %v after %d reconnections; want it back after 1", pg.Listening(), pg.Reconnects())
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The agent deleted through a: its poll on b ends, denied.
	ch = poll(client.PollRequest{Received: received, ConfigVersion: version})
	if err := admin.DeleteAgent(ctx, id); err != nil {
		t.Fatal(err)
	}
	var ce *client.Error
	if p := await(ch, "deletion"); !errors.As(p.err, &ce) || !ce.Denied() {
		t.Fatalf("poll of a deleted agent on node b answered %+v, %v; want permission_denied", p.res, p.err)
	}

	// An agent given both nodes carries on through one when the other
	// stops.
	id, key = enrollRaw(t, a)
	both, err := client.New(client.Config{URLs: []string{a.CommsURL, b.CommsURL}, AgentID: id, AgentKey: key, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := both.Poll(ctx, client.PollRequest{Wait: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	used, left := a, b
	if both.URL() == b.CommsURL {
		used, left = b, a
	}
	stopNode(t, used)
	if _, err := both.Poll(ctx, client.PollRequest{Wait: time.Millisecond}); err != nil {
		t.Fatalf("poll once the node in use stopped: %v", err)
	}
	if both.URL() != left.CommsURL {
		t.Fatalf("the agent uses %s, want %s", both.URL(), left.CommsURL)
	}
}

// terminateListener ends the listening connection of the notifier node.
func terminateListener(t *testing.T, url, node string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var ended int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = $1) t`, "tether-listen "+node).Scan(&ended); err != nil || ended != 1 {
		t.Fatalf("ended %d listening connections (%v), want 1", ended, err)
	}
}

// TestClusterOrderLatency measures, on two nodes sharing a PostgreSQL
// store, how long an order created through the first node's management
// API takes to reach the poll its agent holds on the second: from the
// request to the poll's answer, through TLS, the store, LISTEN/NOTIFY and
// the poll's look. It logs the distribution (run with -v) and asserts
// nothing about time.
func TestClusterOrderLatency(t *testing.T) {
	store := pgtest.URL(t)
	nodes := startNodes(t, store, t.TempDir(), t.TempDir())
	a, b := nodes[0], nodes[1]
	if !a.FirstStart {
		a, b = b, a
	}
	ctx := context.Background()
	admin := adminClient(t, a)
	id, key := enrollRaw(t, a)
	pool := x509.NewCertPool()
	if pem, err := os.ReadFile(b.CACertFile); err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("CA of the nodes: %v", err)
	}
	agent, err := client.New(client.Config{URLs: []string{b.CommsURL}, AgentID: id, AgentKey: key, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	d := make([]time.Duration, 0, n)
	var received []string
	for range n {
		before := b.notifier.Waiting()
		type polled struct {
			res client.PollResult
			err error
		}
		ch := make(chan polled, 1)
		go func() {
			res, err := agent.Poll(ctx, client.PollRequest{Wait: time.Minute, Received: received})
			ch <- polled{res, err}
		}()
		deadline := time.Now().Add(10 * time.Second)
		for b.notifier.Waiting() == before {
			if time.Now().After(deadline) {
				t.Fatal("the poll is not waiting on node b after 10 s")
			}
			time.Sleep(100 * time.Microsecond)
		}
		start := time.Now()
		if _, err := admin.CreateCommand(ctx, api.CreateCommandRequest{Target: api.Target{Type: "agent", ID: id}, Action: api.Action{Name: "restart"}}); err != nil {
			t.Fatal(err)
		}
		var p polled
		select {
		case p = <-ch:
		case <-time.After(30 * time.Second):
			t.Fatal("the poll on node b was not answered within 30 s")
		}
		d = append(d, time.Since(start))
		if p.err != nil || len(p.res.Orders) != 1 {
			t.Fatalf("poll answered %+v, %v; want one order", p.res, p.err)
		}
		received = []string{p.res.Orders[0].ID}
	}
	slices.Sort(d)
	t.Logf("order created through node A's API to the answer of the poll on node B, over %d orders: p50 %v, p90 %v, p99 %v, max %v",
		n, d[n/2], d[n*90/100], d[n*99/100], d[n-1])
}

func TestExclusiveRunsOnOneNodeAtATime(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	open := func() *postgres.DB {
		t.Helper()
		db, err := postgres.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	// A key of the test's own: advisory locks are per database, and other
	// tests' nodes may be archiving on this one.
	key := lockArchive + 1 + time.Now().UnixNano()%1_000_000
	one, two := exclusive(open(), key), exclusive(open(), key)

	held, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- one(ctx, func(context.Context) error { close(held); <-release; return nil })
	}()
	<-held
	ran := false
	if err := two(ctx, func(context.Context) error { ran = true; return nil }); err != nil || ran {
		t.Fatalf("while the first node holds the lock, the second ran its pass (%v, %v)", ran, err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Released: the second node takes it.
	if err := two(ctx, func(context.Context) error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("once released, the second node did not run its pass (%v, %v)", ran, err)
	}
	failed := errors.New("sink down")
	if err := one(ctx, func(context.Context) error { return failed }); !errors.Is(err, failed) {
		t.Fatalf("a pass's error came back as %v", err)
	}

	if f := exclusive(nil, key); f != nil {
		t.Fatal("a store no other node shares has a cluster lock")
	}
}
