package comms

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/tetherhq/tether"
)

// DefaultPollRetryDelay is the default of Options.PollRetryDelay.
const DefaultPollRetryDelay = 5 * time.Second

// enterWait counts a poll that is about to wait, and returns the function
// to call when it stops waiting; past MaxWaitingPolls it refuses it with
// EEXHAUSTED and a retry delay (between PollRetryDelay and twice it, so
// that the polls refused together do not come back together).
func (s *Service) enterWait() (leave func(), err error) {
	n := s.waiting.Add(1)
	if limit := s.o.MaxWaitingPolls; limit > 0 && n > int64(limit) {
		s.waiting.Add(-1)
		s.o.Metrics.PollRefused()
		d := s.o.PollRetryDelay + rand.N(s.o.PollRetryDelay)
		return nil, &tether.Error{
			Code: tether.EEXHAUSTED,
			Message: fmt.Sprintf("this node holds its maximum of %d waiting polls: poll again in %s",
				limit, d.Round(time.Millisecond)),
			RetryAfter: d,
		}
	}
	return func() { s.waiting.Add(-1) }, nil
}

// WaitingPolls returns the number of polls waiting on this node.
func (s *Service) WaitingPolls() int { return int(s.waiting.Load()) }

// Refusal returns a handler that answers every request with the error
// err returns, as a refused call of the comms API: in the request's
// protocol (Connect, gRPC or gRPC-Web; the Connect JSON error body, with
// the code's HTTP status, for any other request), with the error's retry
// delay as Retry-After and a google.rpc.RetryInfo detail. The connection
// limit of a node answers with it.
func Refusal(err func() error) http.Handler {
	errw := connect.NewErrorWriter()
	log := slog.Default()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		_ = errw.Write(w, r, toConnect(log, r.URL.Path, err()))
	})
}
