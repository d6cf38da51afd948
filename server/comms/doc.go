// Package comms serves the comms API (tether.comms.v1.AgentService) with
// connect-go, so that one set of handlers answers gRPC, gRPC-Web and the
// Connect protocol. It converts protobuf messages to domain types at the
// edge, authenticates agents with their JWT, and maps domain error codes to
// Connect codes in one place (errors.go).
package comms
