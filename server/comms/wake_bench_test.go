package comms

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	commsv1 "github.com/tetherhq/tether/gen/tether/comms/v1"
)

// BenchmarkWakeUp measures what a waiting poll does when it is woken and
// finds nothing to answer (a wake-up for another reason, or one that
// another poll of the agent served): it reads its agent from the cache
// and looks at the store again, through the group commit.
//
//	go test -run '^$' -bench WakeUp -benchmem ./server/comms/
func BenchmarkWakeUp(b *testing.B) {
	ctx := context.Background()
	s, _, _, tok := testService(b)
	req := connect.NewRequest(&commsv1.PollCommandsRequest{})
	req.Header().Set("Authorization", "Bearer "+tok)
	w, err := s.startPoll(ctx, req)
	if err != nil {
		b.Fatal(err)
	}
	defer s.endPoll(w)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := s.lookAgain(ctx, w); err != nil {
			b.Fatal(err)
		}
		if w.ready() {
			b.Fatal("an answer from nowhere")
		}
	}
}
