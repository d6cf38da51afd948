package agent_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"connectrpc.com/connect"
	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"
)

// busyComms refuses the first pushes with RESOURCE_EXHAUSTED and a retry
// delay, the way a server over its budget does.
type busyComms struct {
	*fakeComms
	refuse   int
	delay    time.Duration
	attempts []time.Time
}

func (b *busyComms) PushStateless(ctx context.Context, req *connect.Request[commsv1.PushStatelessRequest]) (*connect.Response[commsv1.PushStatelessResponse], error) {
	b.mu.Lock()
	b.attempts = append(b.attempts, time.Now())
	refuse := len(b.attempts) <= b.refuse
	b.mu.Unlock()
	if refuse {
		ce := connect.NewError(connect.CodeResourceExhausted, errors.New("over the rate"))
		ce.Meta().Set("Retry-After", "2") // rounded up; the detail is exact
		d, _ := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(b.delay)})
		ce.AddDetail(d)
		return nil, ce
	}
	return b.fakeComms.PushStateless(ctx, req)
}

// TestSenderWaitsTheServersDelay: refused with RESOURCE_EXHAUSTED, the
// sender keeps the batch and sends it again after the delay the server
// gave (the exact RetryInfo delay, not the rounded Retry-After), with the
// same sequence number.
func TestSenderWaitsTheServersDelay(t *testing.T) {
	b := &busyComms{fakeComms: newFakeComms(), refuse: 2, delay: 300 * time.Millisecond}
	dir := setupWith(t, b, "poll_wait: 2s\nbatch_interval: 10ms\n")
	cancel, done := startRun(dir)
	defer cancel()
	waitFor(t, "the stateless events accepted", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.attempts) > b.refuse && len(b.events) > 0
	})
	cancel()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := 1; i <= b.refuse; i++ {
		gap := b.attempts[i].Sub(b.attempts[i-1])
		if gap < b.delay || gap >= 2*time.Second {
			t.Errorf("attempt %d came %v after the refusal; want the server's %v (plus jitter)", i+1, gap, b.delay)
		}
	}
	seen := map[uint64]bool{}
	for _, s := range b.seqs {
		if seen[s] {
			t.Fatalf("sequence %d accepted twice: %v", s, b.seqs)
		}
		seen[s] = true
	}
}
