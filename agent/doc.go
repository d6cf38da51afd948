// Package agent is the tether-agent runtime: enrollment (Enroll), the
// long-running agent (Run) and what `tether-agent status` reads
// (ReadStatus).
//
// Everything the agent keeps lives in its data directory (default
// /var/lib/tether-agent, mode 0700):
//
//	identity.json    agent id and key, server and comms URLs (0600, written by enroll)
//	ca.crt           the CA given at enrollment; verifies both APIs
//	agent.yaml       the local configuration (optional; written by people, never by enroll)
//	agent.db         bbolt: event outbox, batch sequence, orders, unacknowledged results
//	status.json      what run is doing, rewritten every ~2 s (bbolt locks agent.db)
//	dead-letter.ndjson  batches the server refused as invalid
//	plugins/         plugin executables a centralized configuration may name
//	plugin-state/    one directory per plugin, kept across runs
//	upgrade/         an upgrade's download in progress (SHA256.part) and the
//	                 record of the last upgrade (state.json; see Upgrader)
//
// Run keeps one long-poll open for orders, stores each order durably before
// acknowledging it, executes orders one at a time in arrival order, reports
// results until the server acknowledges them, and drains the event outbox
// in batches whose sequence numbers are persisted before they are sent.
package agent
