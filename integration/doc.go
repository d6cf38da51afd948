// Package integration holds end-to-end tests that build the real
// tether-server, tether-agent and tetherctl binaries, run them as processes
// on loopback ports and temporary directories, and drive them the way a
// user does.
package integration
