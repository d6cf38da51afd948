package ingest

// Buckets returns how many agents' buckets l holds.
func Buckets(l *Limiter) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
