// Package ingest is the server's event intake, between the comms handlers
// and the event sinks.
//
// A Limiter admits a batch or refuses it with a retry delay: each agent
// has a token bucket of events and of bytes per second, and the node has a
// budget of batches and bytes in flight. Past them, a push is refused at
// once with EEXHAUSTED and the delay after which it may pass, rather than
// queued without bound.
//
// An Ingester delivers an admitted batch into every sink exactly once per
// (agent, sequence), in three steps:
//
//  1. Store.BeginBatch records the sequence as accepted and pending, and
//     applies the batch's stateful events to the state store, in one
//     transaction. A sequence already accepted and no longer pending is a
//     retry of a delivered batch: it is acknowledged and written nowhere.
//  2. The batch is written to every sink. For a batch found pending (an
//     earlier attempt was cut short by a crash or a sink failure, so a
//     sink may hold part or all of it), a sink that can tell which of its
//     events it holds (a tether.HeldSink) is given only the others; any
//     other sink is given the whole batch, and de-duplicates by
//     Batch.ID() if it can.
//  3. Store.FinishBatch marks the batch delivered; only then is the push
//     acknowledged.
//
// A crash between any two steps leaves the batch pending, and the agent's
// retry (same sequence, same events) completes it. Batches of one agent
// are delivered one at a time on a node, so a retry that overtakes its
// first attempt waits for it instead of writing the batch a second time.
//
// For crash tests, CrashPointEnv makes the process kill itself between
// the steps.
package ingest
