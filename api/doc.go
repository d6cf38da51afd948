// Package api is the Go client of Tether's management API (REST and JSON
// under /api/v1) and the definition of its request and response bodies.
// tetherctl and `tether-agent enroll` use it; so may any Go program.
//
// It imports nothing of the server, so a program that uses it links no
// server code.
package api
