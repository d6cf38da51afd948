package storetest

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether"
)

func testSigningKeys(t *testing.T, s tether.Store) {
	ks, err := s.SigningKeys(ctx(t))
	must(t, err)
	if len(ks) != 0 {
		t.Fatalf("new store has %d signing keys", len(ks))
	}
	old := &tether.SigningKey{ID: "k1", Private: bytes.Repeat([]byte{1}, 64), CreatedAt: t0, RetiredAt: at(time.Hour)}
	cur := &tether.SigningKey{ID: "k2", Private: bytes.Repeat([]byte{2}, 64), CreatedAt: at(time.Hour)}
	must(t, s.AddSigningKey(ctx(t), old))
	must(t, s.AddSigningKey(ctx(t), cur))
	wantCode(t, s.AddSigningKey(ctx(t), &tether.SigningKey{ID: "k1", Private: cur.Private, CreatedAt: t0}), tether.ECONFLICT)

	ks, err = s.SigningKeys(ctx(t))
	must(t, err)
	want := []*tether.SigningKey{cur, old}
	if len(ks) != len(want) {
		t.Fatalf("SigningKeys = %d keys, want %d", len(ks), len(want))
	}
	for i, w := range want {
		if ks[i].ID != w.ID {
			t.Errorf("key %d = %s, want %s", i, ks[i].ID, w.ID)
			continue
		}
		checkBytes(t, "Private", ks[i].Private, w.Private)
		checkTime(t, "CreatedAt", ks[i].CreatedAt, w.CreatedAt)
		checkTime(t, "RetiredAt", ks[i].RetiredAt, w.RetiredAt)
	}
}

func testSecrets(t *testing.T, s tether.Store) {
	_, err := s.Secret(ctx(t), "cookie")
	wantCode(t, err, tether.ENOTFOUND)

	got, err := s.PutSecretOnce(ctx(t), "cookie", []byte("first"))
	must(t, err)
	checkBytes(t, "PutSecretOnce", got, []byte("first"))
	got, err = s.PutSecretOnce(ctx(t), "cookie", []byte("second"))
	must(t, err)
	checkBytes(t, "PutSecretOnce again", got, []byte("first"))
	got, err = s.Secret(ctx(t), "cookie")
	must(t, err)
	checkBytes(t, "Secret", got, []byte("first"))

	got, err = s.PutSecretOnce(ctx(t), "other", []byte{0, 1, 2, 255})
	must(t, err)
	checkBytes(t, "PutSecretOnce binary", got, []byte{0, 1, 2, 255})
}

func testPutSecretOnceRace(t *testing.T, s tether.Store) {
	const n = 10
	got := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			v, err := s.PutSecretOnce(ctx(t), "jwt", fmt.Appendf(nil, "value-%d", i))
			if err != nil {
				t.Errorf("PutSecretOnce: %v", err)
			}
			got[i] = v
		})
	}
	wg.Wait()
	stored, err := s.Secret(ctx(t), "jwt")
	must(t, err)
	for i, v := range got {
		if !bytes.Equal(v, stored) {
			t.Errorf("PutSecretOnce %d returned %q, but %q is stored", i, v, stored)
		}
	}
}

// testConcurrentWrites runs every kind of write from many goroutines at
// once: none may fail because another holds a lock.
func testConcurrentWrites(t *testing.T, s tether.Store) {
	const agents, rounds = 4, 25
	var as []*tether.Agent
	for i := range agents {
		as = append(as, register(t, s, fmt.Sprintf("a%d", i)))
	}
	var wg sync.WaitGroup
	for _, a := range as {
		wg.Go(func() {
			var received []string
			for i := range rounds {
				now := at(time.Duration(i) * time.Second)
				steps := []func() error{
					func() error { return s.TouchAgents(ctx(t), map[string]time.Time{a.ID: now}) },
					func() error {
						state := []tether.Event{upsert("m", "k", fmt.Sprintf(`{"i": %d}`, i))}
						if _, _, err := s.BeginBatch(ctx(t), a.ID, uint64(i+1), state, now); err != nil {
							return err
						}
						return s.FinishBatch(ctx(t), a.ID, uint64(i+1))
					},
					func() error {
						r, orders := newCommand(now, time.Hour, a)
						return s.CreateCommand(ctx(t), r, orders)
					},
					func() error {
						orders, err := deliver(t, s, a.ID, received, 10, now)
						received = ids(orders)
						for _, o := range orders {
							if _, err := s.FinishOrder(ctx(t), a.ID, o.ID, tether.OrderSuccess, tether.Result{}, now); err != nil {
								return err
							}
						}
						return err
					},
					func() error { _, err := s.ExpireOrders(ctx(t), now); return err },
					func() error { return s.SetAgentGroups(ctx(t), a.ID, []string{"g-" + a.Name, "all"}) },
					func() error {
						r, tmpl := groupRequest("g-"+a.Name, now, time.Hour)
						orders, err := s.CreateGroupCommand(ctx(t), r, tmpl)
						if err != nil {
							return err
						}
						if len(orders) != 1 {
							return fmt.Errorf("group command: %d orders, want 1", len(orders))
						}
						_, _, err = s.CancelOrders(ctx(t), tether.CancelFilter{RequestID: r.ID}, now)
						return err
					},
					func() error {
						_, _, err := s.Orders(ctx(t), tether.OrderFilter{Group: "all", Limit: 10})
						return err
					},
					func() error {
						again := *a
						return s.RegisterAgent(ctx(t), &again, "", now)
					},
				}
				for _, step := range steps {
					if err := step(); err != nil {
						t.Errorf("agent %s round %d: %v", a.Name, i, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	for _, a := range as {
		got := getAgent(t, s, a.ID)
		if got.LastBatchSeq != rounds {
			t.Errorf("agent %s: LastBatchSeq = %d, want %d", a.Name, got.LastBatchSeq, rounds)
		}
		checkState(t, getState(t, s, a.ID, "m"), &tether.StateEntry{AgentID: a.ID, Module: "m", Key: "k",
			Doc: fmt.Appendf(nil, `{"i": %d}`, rounds-1), Sequence: rounds, UpdatedAt: at((rounds - 1) * time.Second)})
	}
}
