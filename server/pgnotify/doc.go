// Package pgnotify is the Notifier of a cluster of server nodes that share
// one PostgreSQL database: it carries, over LISTEN/NOTIFY, the wake-ups of
// the long-polls that the nodes hold, and the news that an agent's record
// or a configuration changed, so that every node drops what it cached of
// them.
//
// Notify wakes the polls this node holds at once, and queues the agent ids
// for the other nodes. One goroutine sends what is queued with
// pg_notify, many ids per payload (a payload stays under PostgreSQL's
// 8,000-byte limit) and many payloads per round trip; a burst of calls is
// sent together. One dedicated connection LISTENs and wakes the polls the
// other nodes asked for. PostgreSQL delivers a notification only once the
// transaction that sent it committed, and the callers notify after their
// change committed, so a woken poll finds what it was woken for.
//
// When the listening connection is lost (the database restarted, the
// network failed, an administrator ended it), it is re-established with
// backoff; notifications sent in between are lost, so the notifier then
// drops everything the node cached and wakes every poll the node holds:
// each looks at the store again (catch-up), and none waits for the end of
// its window for an order created meanwhile. An idle listening connection
// is pinged every 30 s so that one the network dropped silently is found.
//
// The payload format is described in payload.go and in
// docs/architecture.md.
package pgnotify
