package comms_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/tetherhq/tether"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"github.com/tetherhq/tether/gen/tether/comms/v1/commsv1connect"
	"github.com/tetherhq/tether/server/command"
	"github.com/tetherhq/tether/server/comms"
	"github.com/tetherhq/tether/server/metrics"
	"github.com/tetherhq/tether/server/presence"
)

// retryInfo returns the RetryInfo delay of a Connect error, or zero.
func retryInfo(ce *connect.Error) time.Duration {
	for _, d := range ce.Details() {
		if v, err := d.Value(); err == nil {
			if ri, ok := v.(*errdetails.RetryInfo); ok {
				return ri.GetRetryDelay().AsDuration()
			}
		}
	}
	return 0
}

// TestPollsPastTheLimitAreRefused: with max_waiting_polls 1, a second
// poll that would wait is answered at once RESOURCE_EXHAUSTED with the
// limit and a retry delay (RetryInfo and Retry-After); a poll with an
// order waiting for it is still answered with the order; once the waiting
// poll ends, another may wait.
func TestPollsPastTheLimitAreRefused(t *testing.T) {
	ctx := context.Background()
	e := newPollEnv(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	mx := metrics.New()
	const delay = 300 * time.Millisecond
	e.svc = comms.New(comms.Options{Store: e.db, Notifier: e.hub, Keys: e.keys, Presence: presence.New(e.db, log), Log: log,
		Metrics: mx, MaxWaitingPolls: 1, PollRetryDelay: delay})
	_, tokA := e.agent(t)
	idB, tokB := e.agent(t)

	first := e.waitingPoll(t, tokA, &commsv1.PollCommandsRequest{})
	if n := e.svc.WaitingPolls(); n != 1 {
		t.Fatalf("WaitingPolls = %d, want 1", n)
	}
	r := <-e.poll(tokB, &commsv1.PollCommandsRequest{})
	ce := wantCode(t, r.err, connect.CodeResourceExhausted, "this node holds its maximum of 1 waiting polls")
	if d := retryInfo(ce); d < delay || d >= 2*delay {
		t.Fatalf("RetryInfo delay %s, want between %s and %s", d, delay, 2*delay)
	}
	if ra := ce.Meta().Get("Retry-After"); ra != "1" {
		t.Fatalf("Retry-After %q, want 1 (seconds, rounded up)", ra)
	}
	if r.took > 5*time.Second {
		t.Fatalf("refused after %s: want at once", r.took)
	}

	// An order waiting for the agent is delivered: only waiting is refused.
	if _, _, err := e.mgr.Create(ctx, command.New{Target: tether.Target{Type: tether.TargetAgent, ID: idB}, Action: tether.Action{Name: "restart"}}); err != nil {
		t.Fatal(err)
	}
	got := answerOf(t, e.poll(tokB, &commsv1.PollCommandsRequest{}))
	if len(got.Orders) != 1 {
		t.Fatalf("past the limit, a poll with an order waiting got %d orders, want 1", len(got.Orders))
	}

	// The waiting poll ends (woken by an order): another may wait.
	idA := agentOf(t, e, tokA)
	if _, _, err := e.mgr.Create(ctx, command.New{Target: tether.Target{Type: tether.TargetAgent, ID: idA}, Action: tether.Action{Name: "restart"}}); err != nil {
		t.Fatal(err)
	}
	answerOf(t, first)
	if n := e.svc.WaitingPolls(); n != 0 {
		t.Fatalf("WaitingPolls = %d after the poll ended, want 0", n)
	}
	e.waitingPoll(t, tokB, &commsv1.PollCommandsRequest{ReceivedOrderIds: []string{got.Orders[0].OrderId}})

	rec := httptest.NewRecorder()
	mx.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if got := grepLines(rec.Body.String(), "tether_polls_refused_total"); got != "tether_polls_refused_total 1" {
		t.Fatalf("metrics: %q, want tether_polls_refused_total 1", got)
	}
}

// TestRefusal answers each protocol with the error, its code and its
// retry delay.
func TestRefusal(t *testing.T) {
	h := comms.Refusal(func() error {
		return &tether.Error{Code: tether.EUNAVAILABLE, Message: "full: go elsewhere", RetryAfter: 1500 * time.Millisecond}
	})
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()

	for _, opt := range []connect.ClientOption{connect.WithGRPC(), connect.WithGRPCWeb(), connect.WithProtoJSON()} {
		c := commsv1connect.NewAgentServiceClient(srv.Client(), srv.URL, opt)
		_, err := c.Authenticate(context.Background(), connect.NewRequest(&commsv1.AuthenticateRequest{}))
		ce := wantCode(t, err, connect.CodeUnavailable, "full: go elsewhere")
		if d := retryInfo(ce); d != 1500*time.Millisecond {
			t.Errorf("RetryInfo delay %s, want 1.5s", d)
		}
		if ra := ce.Meta().Get("Retry-After"); ra != "2" {
			t.Errorf("Retry-After %q, want 2", ra)
		}
	}

	// Plain HTTP: 503, Retry-After and the Connect error body.
	resp, err := srv.Client().Get(srv.URL + comms.FilePath + strings.Repeat("0", 64))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "2" ||
		!strings.Contains(string(body), `"code":"unavailable"`) || !strings.Contains(string(body), "full: go elsewhere") {
		t.Fatalf("plain GET: %d, Retry-After %q, %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
}
