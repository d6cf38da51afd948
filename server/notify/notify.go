// Package notify is the in-process Notifier: it wakes the long-polls held by
// this server node when orders are created for their agents.
package notify

import "sync"

// Hub is an in-process tether.Notifier. The zero value is not usable; call
// NewHub.
//
// A node holds one subscription per waiting poll, thousands at once, so a
// subscription is kept small: the agent's subscriptions are a list (almost
// always of one) rather than a map of their own.
type Hub struct {
	mu   sync.Mutex
	subs map[string]*subscription
	n    int // subscriptions held

	// gen counts Notify and NotifyAll calls; notified holds the gen of
	// each agent's latest notification, allAt that of the latest
	// NotifyAll (see NotifiedSince).
	gen      uint64
	notified map[string]uint64
	allAt    uint64
}

// subscription is one Subscribe call.
type subscription struct {
	hub     *Hub
	agentID string
	ch      chan struct{}
	next    *subscription // the agent's next subscription
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	return &Hub{subs: make(map[string]*subscription), notified: make(map[string]uint64)}
}

// Subscribe returns a channel woken by Notify(agentID) and its release
// function. Notifications coalesce: the channel has a buffer of one.
func (h *Hub) Subscribe(agentID string) (<-chan struct{}, func()) {
	s := &subscription{hub: h, agentID: agentID, ch: make(chan struct{}, 1)}
	h.mu.Lock()
	s.next = h.subs[agentID]
	h.subs[agentID] = s
	h.n++
	h.mu.Unlock()
	return s.ch, s.release
}

// release removes s from its agent's list; releasing twice is harmless.
func (s *subscription) release() {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	for p := h.subs[s.agentID]; p != nil; p = p.next {
		switch {
		case p == s && p == h.subs[s.agentID]:
			if s.next == nil {
				delete(h.subs, s.agentID)
			} else {
				h.subs[s.agentID] = s.next
			}
		case p.next == s:
			p.next = s.next
		default:
			continue
		}
		h.n--
		return
	}
}

// Notify wakes every subscriber of the agents.
func (h *Hub) Notify(agentIDs ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gen++
	for _, id := range agentIDs {
		h.notified[id] = h.gen
		for s := h.subs[id]; s != nil; s = s.next {
			wake(s.ch)
		}
	}
}

// NotifyAll wakes every subscriber: each waiting poll looks at the store
// again. A cluster Notifier calls it after it may have missed notifications
// (its connection to the other nodes was lost and is back).
func (h *Hub) NotifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gen++
	h.allAt = h.gen
	clear(h.notified) // allAt says more
	for _, first := range h.subs {
		for s := first; s != nil; s = s.next {
			wake(s.ch)
		}
	}
}

// Generation returns the count of notifications so far. Read it before
// looking at the store for an agent's orders: NotifiedSince then tells
// whether anything was notified for the agent after that look began.
func (h *Hub) Generation() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gen
}

// NotifiedSince reports whether Notify named the agent, or NotifyAll ran,
// after Generation returned gen. Orders are notified after they are
// committed, so when it is false a look at the store that began after
// Generation returned gen saw every order of the agent there is.
func (h *Hub) NotifiedSince(agentID string, gen uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.allAt > gen || h.notified[agentID] > gen
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Waiting returns the number of subscriptions held (for metrics).
func (h *Hub) Waiting() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}
