// Package tether holds Tether's domain: the types that flow between the
// server's parts (agents, tokens, command requests and orders, events and
// state) and the interfaces that join those parts (Store, Sink, Notifier).
//
// It imports no adapter. Each technology lives in a package of its own
// (server/sqlite, server/sink/file, server/comms for the Connect handlers,
// server/api for the REST handlers) and only cmd/… wires them together.
package tether
