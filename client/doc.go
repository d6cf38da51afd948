// Package client is the Go client of Tether's comms API (package
// tether.comms.v1): what an agent uses to authenticate, push events, poll for
// orders, report their results, fetch its centralized configuration and
// download the files the server stores (Download, with Range to resume).
//
// The tether-agent runtime uses it, and so may any third-party agent (a cloud
// collector, a container sidecar): it imports only the standard library,
// connect, protobuf and the generated code, never server or agent code.
//
// A Client is safe for concurrent use. It authenticates lazily, caches the
// bearer token, refreshes it before it expires and, when a call answers
// UNAUTHENTICATED, authenticates again and retries that call once. Every
// error it returns for a call is a *Error, whose Retryable and Denied
// methods tell the caller how to react.
//
// A Client given several comms URLs, or one whose host name resolves to
// several addresses, spreads agents across them: it starts at an endpoint
// drawn at random and keeps to it while it works. A call that cannot reach
// its endpoint (a network failure, UNAVAILABLE, no answer in time) is sent
// at once to another; the failed endpoint is avoided for a while, longer
// after each failure in a row, and used again once that is over. Every
// so often the client draws its endpoint again, so that agents spread back
// over a node that returned. The token is valid on every node, so moving
// costs no new authentication. See Config.URLs and Failover.
package client
