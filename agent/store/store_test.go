package store_test

import (
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/agent/store"
	"github.com/tetherhq/tether/client"
)

func open(t *testing.T, path string) *store.DB {
	t.Helper()
	db, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func order(id, action string) client.Order {
	return client.Order{ID: id, Action: action, Args: []byte("{}"), CreatedAt: time.Now()}
}

func TestOrdersDeduplicatedAndOrdered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	db := open(t, path)
	added, err := db.Orders.Add([]client.Order{order("b", "x"), order("a", "y"), order("c", "z")})
	if err != nil || len(added) != 3 {
		t.Fatalf("added %d, %v", len(added), err)
	}
	// Re-delivery of known ids (and one new) adds only the new one.
	added, err = db.Orders.Add([]client.Order{order("a", "y"), order("d", "w"), order("b", "x")})
	if err != nil || len(added) != 1 || added[0].Order.ID != "d" {
		t.Fatalf("added %+v, %v", added, err)
	}
	list, err := db.Orders.List()
	if err != nil {
		t.Fatal(err)
	}
	var ids string
	for _, o := range list {
		ids += o.Order.ID
	}
	if ids != "bacd" {
		t.Fatalf("order = %q, want arrival order bacd", ids)
	}
	// A finished and acknowledged order is still recognised.
	next, _ := db.Orders.Next()
	if err := db.Orders.Finish(next.Seq, client.Result{OrderID: "b", Success: true}); err != nil {
		t.Fatal(err)
	}
	if err := db.Orders.Ack([]string{"b"}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = open(t, path)
	defer db.Close()
	added, err = db.Orders.Add([]client.Order{order("b", "x")})
	if err != nil || len(added) != 0 {
		t.Fatalf("re-delivered finished order added: %+v %v", added, err)
	}
	if db.Orders.Len() != 3 {
		t.Fatalf("Len = %d, want 3", db.Orders.Len())
	}
	next, _ = db.Orders.Next()
	if next.Order.ID != "a" || next.Seq <= 1 {
		t.Fatalf("next = %+v", next)
	}
}

func TestResultsKeptUntilAck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	db := open(t, path)
	if _, err := db.Orders.Add([]client.Order{order("o1", "x"), order("o2", "x")}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		next, _ := db.Orders.Next()
		if err := db.Orders.MarkRunning(next.Seq); err != nil {
			t.Fatal(err)
		}
		if err := db.Orders.Finish(next.Seq, client.Result{OrderID: next.Order.ID, Success: true, Message: "done"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Orders.Finish(999, client.Result{}); !errors.Is(err, store.ErrUnknownOrder) {
		t.Fatalf("Finish(unknown) = %v", err)
	}
	db.Close()

	db = open(t, path)
	defer db.Close()
	if db.Orders.Len() != 0 || db.Orders.PendingResults() != 2 {
		t.Fatalf("Len=%d PendingResults=%d", db.Orders.Len(), db.Orders.PendingResults())
	}
	rs, err := db.Orders.Results(0)
	if err != nil || len(rs) != 2 || rs[0].OrderID != "o1" || rs[1].OrderID != "o2" {
		t.Fatalf("results = %+v, %v", rs, err)
	}
	if err := db.Orders.Ack([]string{"o2", "unknown"}); err != nil {
		t.Fatal(err)
	}
	rs, _ = db.Orders.Results(0)
	if len(rs) != 1 || rs[0].OrderID != "o1" || db.Orders.PendingResults() != 1 {
		t.Fatalf("after ack: %+v", rs)
	}
}

func rec(i int, stateful bool) store.Record {
	return store.Record{Stateful: stateful, Key: "k", Event: client.Event{ID: strconv.Itoa(i), Module: "m", Type: "t", Payload: []byte(`{}`)}}
}

func TestOutboxBatchesAndSequenceReuse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	db := open(t, path)
	if err := db.Outbox.Append(rec(1, false), rec(2, false), rec(3, false), rec(4, true), rec(5, false)); err != nil {
		t.Fatal(err)
	}
	b, err := db.Outbox.Next(2, 1<<20)
	if err != nil || b.Seq != 1 || b.Stateful || len(b.Records) != 2 || b.Records[0].Event.ID != "1" {
		t.Fatalf("batch = %+v, %v", b, err)
	}
	if err := db.Outbox.Append(rec(6, false)); err != nil {
		t.Fatal(err)
	}
	db.Close() // crash before the server's answer was seen

	db = open(t, path)
	defer db.Close()
	if db.Outbox.Len() != 6 {
		t.Fatalf("Len = %d", db.Outbox.Len())
	}
	b, err = db.Outbox.Next(100, 1<<20)
	if err != nil || b.Seq != 1 || len(b.Records) != 2 || b.Records[1].Event.ID != "2" {
		t.Fatalf("batch after reopen = %+v, %v (want the same batch 1)", b, err)
	}
	if err := db.Outbox.Ack(b); err != nil {
		t.Fatal(err)
	}
	b, _ = db.Outbox.Next(100, 1<<20)
	if b.Seq != 2 || b.Stateful || len(b.Records) != 1 || b.Records[0].Event.ID != "3" {
		t.Fatalf("batch 2 = %+v", b)
	}
	if err := db.Outbox.Drop(b); err != nil {
		t.Fatal(err)
	}
	b, _ = db.Outbox.Next(100, 1<<20)
	if b.Seq != 3 || !b.Stateful || len(b.Records) != 1 || b.Records[0].Key != "k" {
		t.Fatalf("batch 3 = %+v", b)
	}
	db.Outbox.Ack(b)
	b, _ = db.Outbox.Next(100, 1<<20)
	if b.Seq != 4 || len(b.Records) != 2 {
		t.Fatalf("batch 4 = %+v", b)
	}
	db.Outbox.Ack(b)
	if b, _ := db.Outbox.Next(100, 1<<20); b != nil || db.Outbox.Len() != 0 {
		t.Fatalf("outbox not empty: %+v len=%d", b, db.Outbox.Len())
	}
	if db.Outbox.Stats().DeadLetters != 1 || db.Outbox.LastSeq() != 4 {
		t.Fatalf("dead letters %d, last seq %d", db.Outbox.Stats().DeadLetters, db.Outbox.LastSeq())
	}
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	db := open(t, path)
	defer db.Close()
	if _, err := store.Open(path); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

func TestCancelSkipsOnlyQueuedOrders(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	db := open(t, path)
	if _, err := db.Orders.Add([]client.Order{order("a", "x"), order("b", "x"), order("c", "x"), order("d", "x")}); err != nil {
		t.Fatal(err)
	}
	// a runs, d is finished; b and c wait.
	first, _ := db.Orders.Next()
	if err := db.Orders.MarkRunning(first.Seq); err != nil {
		t.Fatal(err)
	}
	list, _ := db.Orders.List()
	if err := db.Orders.Finish(list[3].Seq, client.Result{OrderID: "d", Success: true}); err != nil {
		t.Fatal(err)
	}
	queued, err := db.Orders.Queued(10)
	if err != nil || strings.Join(queued, "") != "bc" {
		t.Fatalf("Queued = %q, %v; want b c", queued, err)
	}
	if q, _ := db.Orders.Queued(1); len(q) != 1 || q[0] != "b" {
		t.Fatalf("Queued(1) = %q", q)
	}

	done, err := db.Orders.Cancel([]string{"a", "c", "d", "unknown"}, client.Result{Message: "cancelled"})
	if err != nil || len(done) != 1 || done[0].Order.ID != "c" {
		t.Fatalf("Cancel = %+v, %v; want only c", done, err)
	}
	if db.Orders.Len() != 2 || db.Orders.PendingResults() != 2 {
		t.Fatalf("Len %d, PendingResults %d; want 2 and 2", db.Orders.Len(), db.Orders.PendingResults())
	}
	// The cancelled order's result is kept for the report, with its id.
	db.Close()
	db = open(t, path)
	defer db.Close()
	results, err := db.Orders.Results(0)
	if err != nil || len(results) != 2 || results[0].OrderID != "c" || results[0].Message != "cancelled" || results[0].Success {
		t.Fatalf("results = %+v, %v", results, err)
	}
	// A cancelled order is not run: it is gone from the queue, and a
	// re-delivery does not bring it back.
	if q, _ := db.Orders.Queued(10); strings.Join(q, "") != "b" {
		t.Fatalf("Queued after cancel = %q, want b", q)
	}
	if added, _ := db.Orders.Add([]client.Order{order("c", "x")}); len(added) != 0 {
		t.Fatal("cancelled order stored again on re-delivery")
	}
	if err := db.Orders.MarkRunning(done[0].Seq); !errors.Is(err, store.ErrUnknownOrder) {
		t.Fatalf("MarkRunning of a cancelled order: %v, want ErrUnknownOrder", err)
	}
}

func TestOutboxAppendWithMeta(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	db := open(t, path)
	if err := db.Outbox.AppendWith([]store.Record{rec(1, false), rec(2, false)}, map[string][]byte{"logcollector/a": []byte("120"), "logcollector/b": []byte("7")}); err != nil {
		t.Fatal(err)
	}
	if err := db.Outbox.AppendWith(nil, map[string][]byte{"logcollector/b": nil, "other": []byte("x")}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = open(t, path)
	defer db.Close()
	if v, err := db.Outbox.Meta("logcollector/a"); err != nil || string(v) != "120" {
		t.Fatalf("Meta(a) = %q, %v", v, err)
	}
	if v, _ := db.Outbox.Meta("logcollector/b"); v != nil {
		t.Fatalf("deleted key = %q", v)
	}
	m, err := db.Outbox.MetaPrefix("logcollector/")
	if err != nil || len(m) != 1 || string(m["logcollector/a"]) != "120" {
		t.Fatalf("MetaPrefix = %q, %v", m, err)
	}
	if db.Outbox.Len() != 2 {
		t.Fatalf("Len = %d", db.Outbox.Len())
	}
}
