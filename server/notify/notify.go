// Package notify is the in-process Notifier: it wakes the long-polls held by
// this server node when orders are created for their agents.
package notify

import "sync"

// Hub is an in-process tether.Notifier. The zero value is not usable; call
// NewHub.
type Hub struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	return &Hub{subs: make(map[string]map[chan struct{}]struct{})}
}

// Subscribe returns a channel woken by Notify(agentID) and its release
// function. Notifications coalesce: the channel has a buffer of one.
func (h *Hub) Subscribe(agentID string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	m := h.subs[agentID]
	if m == nil {
		m = make(map[chan struct{}]struct{})
		h.subs[agentID] = m
	}
	m[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(m, ch)
		if len(m) == 0 { // m is still h.subs[agentID]: it is removed only when empty
			delete(h.subs, agentID)
		}
		h.mu.Unlock()
	}
}

// Notify wakes every subscriber of the agents.
func (h *Hub) Notify(agentIDs ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range agentIDs {
		for ch := range h.subs[id] {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// NotifyAll wakes every subscriber: each waiting poll looks at the store
// again. A cluster Notifier calls it after it may have missed notifications
// (its connection to the other nodes was lost and is back).
func (h *Hub) NotifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.subs {
		for ch := range m {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// Waiting returns the number of subscriptions held (for metrics).
func (h *Hub) Waiting() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.subs {
		n += len(m)
	}
	return n
}
