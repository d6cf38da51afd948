package agent_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
)

// fullComms refuses the first polls with RESOURCE_EXHAUSTED and a retry
// delay, the way a node at its limit of waiting polls does.
type fullComms struct {
	*fakeComms
	refuse   int
	delay    time.Duration
	attempts []time.Time
}

func (f *fullComms) PollCommands(ctx context.Context, req *connect.Request[commsv1.PollCommandsRequest]) (*connect.Response[commsv1.PollCommandsResponse], error) {
	f.mu.Lock()
	f.attempts = append(f.attempts, time.Now())
	refuse := len(f.attempts) <= f.refuse
	f.mu.Unlock()
	if refuse {
		ce := connect.NewError(connect.CodeResourceExhausted, errors.New("this node holds its maximum of 1 waiting polls"))
		ce.Meta().Set("Retry-After", "1") // rounded up; the detail is exact
		d, _ := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(f.delay)})
		ce.AddDetail(d)
		return nil, ce
	}
	return f.fakeComms.PollCommands(ctx, req)
}

// TestPollWaitsTheServersDelay: a poll refused with RESOURCE_EXHAUSTED is
// sent again after the delay the server gave (the exact RetryInfo delay,
// not the rounded Retry-After), not sooner; then orders arrive as usual.
func TestPollWaitsTheServersDelay(t *testing.T) {
	f := &fullComms{fakeComms: newFakeComms(), refuse: 3, delay: 400 * time.Millisecond}
	f.addOrder("o-1", "ping")
	dir := setupWith(t, f, "poll_wait: 2s\nbatch_interval: 10ms\n")
	cancel, done := startRun(dir)
	defer cancel()
	waitFor(t, "the order's result", func() bool { return f.result("o-1") != nil })
	cancel()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := 1; i <= f.refuse; i++ {
		gap := f.attempts[i].Sub(f.attempts[i-1])
		if gap < f.delay || gap >= 2*time.Second {
			t.Errorf("poll %d came %v after the refusal; want the server's %v (plus jitter)", i+1, gap, f.delay)
		}
	}
}
