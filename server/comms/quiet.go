package comms

import (
	"context"
	"time"

	"github.com/tetherhq/tether"
)

// An idle agent polls again every 50 seconds or so, and its poll's first
// look at the store (DeliverOrders) is the one store call of a poll. A node
// of 100,000 idle agents would make 2,000 of them a second, finding
// nothing, and an order or result queued behind them would wait. So a
// node remembers the agents whose last poll ended with nothing to say
// ("quiet"), with the notification generation read before the look that
// found nothing; their next poll skips the look unless the Notifier named
// them since (an order or a cancel for them, on any node), a lost
// connection to the other nodes made it wake everyone (NotifyAll), the
// poll carries receipts or queued orders, or the last real look is older
// than maxQuiet.

// maxQuiet bounds how long polls skip the look: an order committed by a
// node that died before it could notify the others is still found.
const maxQuiet = 5 * time.Minute

// notifyLog is a Notifier that remembers which agents it notified
// (notify.Hub, pgnotify.Notifier). Without one, every poll looks.
type notifyLog interface {
	Generation() uint64
	NotifiedSince(agentID string, gen uint64) bool
}

// quietMark is what a node remembers of a quiet agent.
type quietMark struct {
	gen      uint64
	lookedAt int64 // Unix nanoseconds of the last real look
}

// firstLook takes the poll's first look at the store, or skips it when
// nothing can be waiting for the agent.
func (s *Service) firstLook(ctx context.Context, a *tether.Agent, w *waitingPoll) error {
	if m, ok := s.quietFor(w); ok {
		s.o.Metrics.PollLookSkipped()
		w.gen, w.lookedAt = m.gen, m.lookedAt
		v, err := s.configVersion(ctx, a.Groups)
		w.ans = answer{configVersion: v}
		return err
	}
	return s.lookAt(ctx, a, w)
}

// lookAt looks at the store for the poll, noting the generation first: a
// notification after it is one the look may have missed.
func (s *Service) lookAt(ctx context.Context, a *tether.Agent, w *waitingPoll) error {
	if l, ok := s.o.Notifier.(notifyLog); ok {
		w.gen = l.Generation()
	}
	w.lookedAt = time.Now().UnixNano()
	var err error
	w.ans, err = s.look(ctx, a, w.p)
	return err
}

// quietFor returns the agent's quiet mark when the poll may skip its look.
func (s *Service) quietFor(w *waitingPoll) (quietMark, bool) {
	l, ok := s.o.Notifier.(notifyLog)
	if !ok || len(w.p.received) > 0 || len(w.p.queued) > 0 {
		return quietMark{}, false
	}
	s.qmu.Lock()
	m, ok := s.quiet[w.id]
	s.qmu.Unlock()
	if !ok || time.Since(time.Unix(0, m.lookedAt)) > maxQuiet || l.NotifiedSince(w.id, m.gen) {
		return quietMark{}, false
	}
	return m, true
}

// noteQuiet marks the agent quiet when its poll waited to the end with
// nothing to answer, and forgets the mark otherwise.
func (s *Service) noteQuiet(w *waitingPoll) {
	if _, ok := s.o.Notifier.(notifyLog); !ok {
		return
	}
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if w.timedOut && len(w.ans.orders) == 0 && len(w.ans.cancelled) == 0 && w.lookedAt != 0 {
		s.quiet[w.id] = quietMark{gen: w.gen, lookedAt: w.lookedAt}
	} else {
		delete(s.quiet, w.id)
	}
}
