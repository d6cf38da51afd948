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

// flushChunk is the most marks written by one store call: a node of
// 100,000 agents flushes tens of thousands at a time, and one transaction
// for all would hold the store's writer long enough to delay the orders
// and results waiting behind it.
const flushChunk = 500

// Flush writes pending marks to the store, flushChunk agents per call.
func (p *Tracker) Flush(ctx context.Context) error {
	p.mu.Lock()
	batch := p.pending
	p.pending = make(map[string]time.Time, len(batch))
	p.mu.Unlock()
	chunk := make(map[string]time.Time, min(len(batch), flushChunk))
	for id, t := range batch {
		chunk[id] = t
		if len(chunk) < flushChunk && len(chunk) < len(batch) {
			continue
		}
		if err := p.store.TouchAgents(ctx, chunk); err != nil {
			p.putBack(batch)
			return err
		}
		for id := range chunk {
			delete(batch, id) // written: not put back on a later failure
		}
		clear(chunk)
	}
	return nil
}

// putBack returns marks that were not written to the pending ones, unless
// newer ones arrived meanwhile.
func (p *Tracker) putBack(marks map[string]time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, t := range marks {
		if cur, ok := p.pending[id]; !ok || cur.Before(t) {
			p.pending[id] = t
		}
	}
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
