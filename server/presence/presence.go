// Package presence tracks when agents were last seen without one database
// write per request: calls mark agents in memory, and a flusher writes the
// marks to the store in one batch every few seconds.
package presence

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/tetherhq/tether"
)

// Tracker holds last-seen times not yet written to the store.
type Tracker struct {
	store tether.AgentStore
	log   *slog.Logger

	mu      sync.Mutex
	pending map[string]time.Time
	// recent keeps the latest mark of each agent seen since start, so reads
	// are exact even before a flush.
	recent map[string]time.Time
}

// New returns a tracker writing to store.
func New(store tether.AgentStore, log *slog.Logger) *Tracker {
	return &Tracker{store: store, log: log, pending: map[string]time.Time{}, recent: map[string]time.Time{}}
}

// Seen marks the agent as seen at t.
func (p *Tracker) Seen(agentID string, t time.Time) {
	p.mu.Lock()
	p.pending[agentID] = t
	p.recent[agentID] = t
	p.mu.Unlock()
}

// LastSeen returns the newer of the stored time and this node's mark.
func (p *Tracker) LastSeen(agentID string, stored time.Time) time.Time {
	p.mu.Lock()
	t := p.recent[agentID]
	p.mu.Unlock()
	if t.After(stored) {
		return t
	}
	return stored
}

// Forget drops the marks of a deleted agent.
func (p *Tracker) Forget(agentID string) {
	p.mu.Lock()
	delete(p.pending, agentID)
	delete(p.recent, agentID)
	p.mu.Unlock()
}

// Flush writes pending marks to the store in one call.
func (p *Tracker) Flush(ctx context.Context) error {
	p.mu.Lock()
	batch := p.pending
	p.pending = make(map[string]time.Time, len(batch))
	p.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	if err := p.store.TouchAgents(ctx, batch); err != nil {
		// Put the marks back unless newer ones arrived meanwhile.
		p.mu.Lock()
		for id, t := range batch {
			if cur, ok := p.pending[id]; !ok || cur.Before(t) {
				p.pending[id] = t
			}
		}
		p.mu.Unlock()
		return err
	}
	return nil
}

// Run flushes every interval until ctx ends, then flushes once more.
func (p *Tracker) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := p.Flush(fctx); err != nil {
				p.log.Warn("flush last-seen times", "err", err)
			}
			cancel()
			return
		case <-t.C:
			if err := p.Flush(ctx); err != nil && ctx.Err() == nil {
				p.log.Warn("flush last-seen times", "err", err)
			}
		}
	}
}
