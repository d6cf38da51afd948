package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/api"
)

// waitServer serves a command of two orders whose progress route behaves
// as mode says: "stream" (the whole stream), "absent" (404), "break" (one
// event, then the end). The command finishes at the third poll.
type waitServer struct {
	mode  string
	polls atomic.Int32
	lists atomic.Int32
	// truncated makes the command list one order of 3 (the others come
	// from GET /api/v1/orders, in two pages).
	truncated bool
}

func (s *waitServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/commands/c1/progress", func(w http.ResponseWriter, r *http.Request) {
		switch s.mode {
		case "absent":
			w.WriteHeader(404)
			io.WriteString(w, `{"error":{"code":"not_found","message":"not found"}}`)
		case "break":
			io.WriteString(w, "event: progress\ndata: {\"request_id\":\"c1\",\"total\":2,\"sent\":2}\n\n")
		default:
			io.WriteString(w, "event: progress\ndata: {\"request_id\":\"c1\",\"total\":2,\"pending\":2}\n\n: keep-alive\n\n")
			w.(http.Flusher).Flush()
			io.WriteString(w, "event: progress\ndata: {\"request_id\":\"c1\",\"total\":2,\"success\":1,\"failure\":1,\"done\":true}\n\n")
		}
	})
	mux.HandleFunc("GET /api/v1/commands/c1", func(w http.ResponseWriter, r *http.Request) {
		n := s.polls.Add(1)
		status := "sent"
		if n >= 3 || s.mode == "stream" {
			status = "failure"
		}
		cmd := api.Command{ID: "c1", Total: 2, Counts: map[string]int{"success": 1, status: 1}, Orders: []api.Order{
			{OrderID: "o1", Status: "success"},
			{OrderID: "o2", Status: status},
		}}
		if s.truncated {
			cmd.Total, cmd.Counts["success"] = 3, 2
			cmd.Orders = cmd.Orders[:1]
		}
		json.NewEncoder(w).Encode(cmd)
	})
	mux.HandleFunc("GET /api/v1/orders", func(w http.ResponseWriter, r *http.Request) {
		s.lists.Add(1)
		if r.URL.Query().Get("request") != "c1" || r.URL.Query().Get("limit") != "1000" {
			w.WriteHeader(400)
			return
		}
		if r.URL.Query().Get("cursor") == "" {
			io.WriteString(w, `{"items":[{"order_id":"o1","status":"success"},{"order_id":"o2","status":"success"}],"next":"p2"}`)
			return
		}
		io.WriteString(w, `{"items":[{"order_id":"o3","status":"failure"}]}`)
	})
	return mux
}

func TestWaitCommand(t *testing.T) {
	tests := []struct {
		mode      string
		polls     int32
		truncated bool
		progress  []api.Progress
	}{
		{mode: "stream", polls: 1, progress: []api.Progress{
			{RequestID: "c1", Total: 2, Pending: 2},
			{RequestID: "c1", Total: 2, Success: 1, Failure: 1, Done: true},
		}},
		{mode: "absent", polls: 3, progress: []api.Progress{
			{RequestID: "c1", Total: 2, Success: 1, Sent: 1},
			{RequestID: "c1", Total: 2, Success: 1, Sent: 1},
			{RequestID: "c1", Total: 2, Success: 1, Failure: 1, Done: true},
		}},
		{mode: "break", polls: 3, progress: []api.Progress{
			{RequestID: "c1", Total: 2, Sent: 2},
			{RequestID: "c1", Total: 2, Success: 1, Sent: 1},
			{RequestID: "c1", Total: 2, Success: 1, Sent: 1},
			{RequestID: "c1", Total: 2, Success: 1, Failure: 1, Done: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			s := &waitServer{mode: tt.mode}
			c := newClient(t, s.handler())
			var seen []api.Progress
			cmd, err := c.WaitCommand(context.Background(), "c1", time.Millisecond, func(p api.Progress) { seen = append(seen, p) })
			if err != nil {
				t.Fatal(err)
			}
			if s.polls.Load() != tt.polls {
				t.Errorf("%d polls, want %d", s.polls.Load(), tt.polls)
			}
			if len(seen) != len(tt.progress) {
				t.Fatalf("progress = %+v, want %+v", seen, tt.progress)
			}
			for i := range seen {
				if seen[i] != tt.progress[i] {
					t.Errorf("progress %d = %+v, want %+v", i, seen[i], tt.progress[i])
				}
			}
			if len(cmd.Orders) != 2 || cmd.Orders[1].Status != "failure" {
				t.Errorf("orders = %+v", cmd.Orders)
			}
		})
	}
}

func TestWaitCommandListsEveryOrder(t *testing.T) {
	s := &waitServer{mode: "stream", truncated: true}
	c := newClient(t, s.handler())
	cmd, err := c.WaitCommand(context.Background(), "c1", time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cmd.Orders) != 3 || cmd.Orders[2].OrderID != "o3" || s.lists.Load() != 2 {
		t.Errorf("orders = %+v after %d lists", cmd.Orders, s.lists.Load())
	}
}

func TestWaitCommandOtherErrors(t *testing.T) {
	rec := &recorder{status: 403, answer: `{"error":{"code":"forbidden","message":"no"}}`}
	c := newClient(t, rec)
	_, err := c.WaitCommand(context.Background(), "c1", time.Millisecond, nil)
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != 403 {
		t.Fatalf("err = %v, want the 403", err)
	}
	if rec.rawPath != "/api/v1/commands/c1/progress" {
		t.Errorf("a 403 on the stream led to %s", rec.rawPath)
	}
}

func TestWaitCommandContextEnds(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/commands/c1/progress" {
			io.WriteString(w, "data: {\"request_id\":\"c1\",\"total\":4,\"success\":1,\"pending\":3}\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		io.WriteString(w, `{"id":"c1","orders":[{"order_id":"o1","status":"pending"}]}`)
	})
	c := newClient(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.WaitCommand(ctx, "c1", 5*time.Millisecond, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	var we *api.WaitError
	if !errors.As(err, &we) || we.Error() != "wait for command c1: 1/4 orders finished: context deadline exceeded" {
		t.Errorf("err = %v", err)
	}

	// Polling ends the same way.
	s := &waitServer{mode: "absent"}
	c = newClient(t, s.handler())
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = c.WaitCommand(ctx, "c1", time.Hour, nil)
	if !errors.As(err, &we) || !errors.Is(err, context.DeadlineExceeded) || we.Progress.Sent != 1 {
		t.Fatalf("err = %v, want a WaitError after the first poll", err)
	}
}

func TestCommandProgress(t *testing.T) {
	listed := api.Command{ID: "c1", Orders: []api.Order{{Status: "success"}, {Status: "pending"}, {Status: "failure"}}}
	if p := listed.Progress(); p != (api.Progress{RequestID: "c1", Total: 3, Pending: 1, Success: 1, Failure: 1}) {
		t.Errorf("from orders: %+v", p)
	}
	counted := api.Command{ID: "c1", Total: 5, Counts: map[string]int{"success": 4, "failure": 1}}
	if p := counted.Progress(); p != (api.Progress{RequestID: "c1", Total: 5, Success: 4, Failure: 1, Done: true}) {
		t.Errorf("from counts: %+v", p)
	}
}

func TestAllOrders(t *testing.T) {
	var calls atomic.Int32
	c := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		io.WriteString(w, `{"items":[{"order_id":"o"}],"next":"same"}`)
	}))
	orders, err := c.AllOrders(context.Background(), api.OrderQuery{})
	if err == nil || len(orders) != 2 || calls.Load() != 2 {
		t.Errorf("a repeated cursor: %d orders, %d calls, err %v", len(orders), calls.Load(), err)
	}
}
