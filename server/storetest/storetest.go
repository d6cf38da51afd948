// Package storetest is the conformance suite of tether.Store: every
// implementation (server/sqlite, server/postgres) runs the same test
// bodies, which use the store through the interface only.
//
// Usage, in the implementation's tests:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) tether.Store {
//			db, err := mystore.Open(…)
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { db.Close() })
//			return db
//		})
//	}
//
// The suite assumes nothing a database may legitimately change: times it
// stores have whole microseconds, JSON documents are compared as JSON values,
// and empty byte slices may come back nil.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tetherhq/tether"
)

// Run runs the suite. open must return a new, empty store for each call and
// arrange for it to be closed when the test ends (t.Cleanup).
func Run(t *testing.T, open func(t *testing.T) tether.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s tether.Store)
	}{
		{"Ping", testPing},
		{"Token", testToken},
		{"Tokens", testTokens},
		{"RevokeToken", testRevokeToken},
		{"TokenKind", testTokenKind},
		{"RevokeLastAdmin", testRevokeLastAdmin},
		{"RevokeLastAdminConcurrent", testRevokeLastAdminConcurrent},
		{"CreateFirstAdmin", testCreateFirstAdmin},
		{"CreateFirstAdminRevoked", testCreateFirstAdminRevoked},
		{"CreateFirstAdminConcurrent", testCreateFirstAdminConcurrent},
		{"RegisterAgent", testRegisterAgent},
		{"RegisterAgentAgain", testRegisterAgentAgain},
		{"RegisterAgentRefused", testRegisterAgentRefused},
		{"RegisterAgentTokenRace", testRegisterAgentTokenRace},
		{"Agents", testAgents},
		{"AgentsPagination", testAgentsPagination},
		{"DeleteAgent", testDeleteAgent},
		{"TouchAgents", testTouchAgents},
		{"BeginBatch", testBeginBatch},
		{"BeginBatchState", testBeginBatchState},
		{"BeginBatchConcurrent", testBeginBatchConcurrent},
		{"CreateCommand", testCreateCommand},
		{"CreateCommandRefused", testCreateCommandRefused},
		{"CreateCommandLarge", testCreateCommandLarge},
		{"Commands", testCommands},
		{"CreateGroupCommand", testCreateGroupCommand},
		{"CreateGroupCommandRefused", testCreateGroupCommandRefused},
		{"CreateGroupCommandLarge", testCreateGroupCommandLarge},
		{"CreateGroupCommandAtomic", testCreateGroupCommandAtomic},
		{"ServerOrders", testServerOrders},
		{"CancelOrders", testCancelOrders},
		{"Orders", testOrders},
		{"OrdersLimit", testOrdersLimit},
		{"OrdersPagination", testOrdersPagination},
		{"CommandsPagination", testCommandsPagination},
		{"CommandCounts", testCommandCounts},
		{"Retention", testRetention},
		{"RetentionLoop", testRetentionLoop},
		{"CancelOrdersConcurrent", testCancelOrdersConcurrent},
		{"FinishedAmong", testFinishedAmong},
		{"CountOrders", testCountOrders},
		{"OrderAgentGroups", testOrderAgentGroups},
		{"SetAgentVersion", testSetAgentVersion},
		{"ClaimServerOrdersConcurrent", testClaimServerOrdersConcurrent},
		{"DeliverOrders", testDeliverOrders},
		{"DeliverOrdersOrder", testDeliverOrdersOrder},
		{"DeliverOrdersLimit", testDeliverOrdersLimit},
		{"DeliverOrdersExpired", testDeliverOrdersExpired},
		{"DeliverOrdersBatch", testDeliverOrdersBatch},
		{"FinishOrder", testFinishOrder},
		{"FinishOrdersBatch", testFinishOrdersBatch},
		{"FinishOrderRefused", testFinishOrderRefused},
		{"ExpireOrders", testExpireOrders},
		{"ExpireOrdersConcurrent", testExpireOrdersConcurrent},
		{"ApplyState", testApplyState},
		{"ApplyStateSequence", testApplyStateSequence},
		{"SigningKeys", testSigningKeys},
		{"Secrets", testSecrets},
		{"PutSecretOnceRace", testPutSecretOnceRace},
		{"Groups", testGroups},
		{"GroupMembers", testGroupMembers},
		{"GroupConfigs", testGroupConfigs},
		{"ConcurrentWrites", testConcurrentWrites},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t))
		})
	}
}

// t0 is the base time of the tests: stores keep at least microseconds.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// newID returns a random UUID (version 4) in canonical form.
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// wantCode fails the test unless err has the code.
func wantCode(t *testing.T, err error, code tether.Code) {
	t.Helper()
	if got := tether.ErrorCode(err); got != code {
		t.Fatalf("error code = %q, want %q (error: %v)", got, code, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func checkTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// jsonEqual reports whether two JSON texts hold the same value (nil and
// empty both stand for none).
func jsonEqual(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	return reflect.DeepEqual(x, y)
}

func checkJSON(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !jsonEqual(got, want) {
		t.Errorf("%s = %s, want %s", what, got, want)
	}
}

func checkBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s = %x, want %x", what, got, want)
	}
}

func checkStrings(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

func ctx(t *testing.T) context.Context { return t.Context() }

// newAgent returns an agent to register, named name.
func newAgent(name string, groups ...string) *tether.Agent {
	return &tether.Agent{
		ID:       newID(),
		Name:     name,
		Groups:   groups,
		KeyHash:  hash("key of " + name),
		Hostname: name + ".example.net",
		OS:       "linux",
		Arch:     "amd64",
		Version:  "1.2.3",
	}
}

// register registers an agent named name, without a token, at t0.
func register(t *testing.T, s tether.Store, name string, groups ...string) *tether.Agent {
	t.Helper()
	a := newAgent(name, groups...)
	a.EnrolledAt, a.UpdatedAt = t0, t0
	must(t, s.RegisterAgent(ctx(t), a, "", t0))
	return a
}

// newCommand returns a request created at created, aimed at the agents, with
// one order for each, whose window ends timeout later.
func newCommand(created time.Time, timeout time.Duration, agents ...*tether.Agent) (*tether.CommandRequest, []*tether.Order) {
	r := &tether.CommandRequest{
		ID:        newID(),
		Target:    tether.Target{Type: tether.TargetGroup, ID: "web"},
		Action:    tether.Action{Name: "restart", Args: json.RawMessage(`{"delay": 5, "why": "upgrade"}`), Version: "2"},
		Timeout:   timeout,
		Source:    "user",
		User:      "alice",
		CreatedAt: created,
	}
	if len(agents) == 1 {
		r.Target = tether.Target{Type: tether.TargetAgent, ID: agents[0].ID}
	}
	var orders []*tether.Order
	for _, a := range agents {
		orders = append(orders, &tether.Order{
			ID:        newID(),
			RequestID: r.ID,
			AgentID:   a.ID,
			Action:    r.Action,
			Status:    tether.OrderPending,
			User:      r.User,
			CreatedAt: created,
			TimeoutAt: created.Add(timeout),
		})
	}
	return r, orders
}

// createCommand stores a new command for the agents and returns its orders.
func createCommand(t *testing.T, s tether.Store, created time.Time, timeout time.Duration, agents ...*tether.Agent) (*tether.CommandRequest, []*tether.Order) {
	t.Helper()
	r, orders := newCommand(created, timeout, agents...)
	must(t, s.CreateCommand(ctx(t), r, orders))
	return r, orders
}

// ids returns the ids of the orders.
func ids(orders []*tether.Order) []string {
	var s []string
	for _, o := range orders {
		s = append(s, o.ID)
	}
	return s
}

// reqIDs returns the ids of the requests.
func reqIDs(rs []*tether.CommandRequest) []string {
	var s []string
	for _, r := range rs {
		s = append(s, r.ID)
	}
	return s
}

// sortedIDs returns the ids of the orders, sorted.
func sortedIDs(orders []*tether.Order) []string {
	s := ids(orders)
	slices.Sort(s)
	return s
}

func testPing(t *testing.T, s tether.Store) {
	must(t, s.Ping(ctx(t)))
}

// deliver serves one poll of the agent through DeliverOrders.
func deliver(t *testing.T, s tether.Store, agentID string, received []string, limit int, now time.Time) ([]*tether.Order, error) {
	t.Helper()
	got, err := s.DeliverOrders(ctx(t), []tether.Delivery{{AgentID: agentID, Received: received, Limit: limit}}, now)
	if err != nil {
		return nil, err
	}
	if len(got) != 1 {
		t.Fatalf("DeliverOrders of one poll returned %d lists", len(got))
	}
	return got[0], nil
}

func sortedStrings(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
