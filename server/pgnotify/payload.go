package pgnotify

import (
	"strings"
)

// The payload of a notification is one line of ASCII text, fields
// separated by single spaces:
//
//	tether1 <node> <kind> [<id> ...]
//
// "tether1" names the format and its version. <node> is the sending
// node's id (eight characters [a-z2-7]): a node ignores its own messages,
// having acted on them locally already. <kind> is one of
//
//	wake    wake the polls of the agents listed
//	agent   the records of the agents listed changed: drop cached copies
//	config  a group's configuration changed: drop cached configuration versions
//	all     something changed that the sender cannot list (it had more
//	        to send than it could hold): drop every cached record and
//	        wake every poll
//
// A payload is at most maxPayload bytes (PostgreSQL refuses 8,000 or more);
// a long list of ids is split over as many payloads as needed. A message a
// node cannot read (another version, another kind, a malformed line) is
// taken as "something changed": it drops every cached record and wakes
// every poll it holds, which is always safe, so that nodes of a newer
// version can add kinds during a rolling upgrade.
const (
	formatTag  = "tether1"
	maxPayload = 7999
	// maxIDBytes bounds an id carried in a payload; agent ids are UUIDs.
	maxIDBytes = 128
)

// Kinds of message.
const (
	kindWake   = "wake"
	kindAgent  = "agent"
	kindConfig = "config"
	kindAll    = "all"
)

// message is a decoded payload. known is false for a payload this version
// cannot read.
type message struct {
	node  string
	kind  string
	ids   []string
	known bool
}

// encode returns the payloads that carry kind and ids from node, each at
// most maxPayload bytes. Kinds without ids give one payload. Ids that could
// not be read back (empty, too long, with spaces or control characters)
// are left out.
func encode(node, kind string, ids []string) []string {
	head := formatTag + " " + node + " " + kind
	if len(ids) == 0 {
		if kind == kindWake || kind == kindAgent {
			return nil
		}
		return []string{head}
	}
	var out []string
	var b strings.Builder
	for _, id := range ids {
		if !validID(id) {
			continue
		}
		if b.Len() > 0 && b.Len()+1+len(id) > maxPayload {
			out = append(out, b.String())
			b.Reset()
		}
		if b.Len() == 0 {
			b.WriteString(head)
		}
		b.WriteByte(' ')
		b.WriteString(id)
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}

// decode reads a payload. It never fails: what it cannot read is a message
// with known false.
func decode(payload string) message {
	f := strings.Split(payload, " ")
	if len(f) < 3 || f[0] != formatTag || !validNode(f[1]) {
		return message{}
	}
	m := message{node: f[1], kind: f[2], known: true}
	switch m.kind {
	case kindWake, kindAgent:
		m.ids = f[3:]
		if len(m.ids) == 0 {
			return message{node: m.node}
		}
		for _, id := range m.ids {
			if !validID(id) {
				return message{node: m.node}
			}
		}
	case kindConfig, kindAll:
		if len(f) != 3 {
			return message{node: m.node}
		}
	default:
		return message{node: m.node}
	}
	return m
}

// validID reports whether id can travel in a payload: 1 to maxIDBytes
// printable ASCII characters other than space.
func validID(id string) bool {
	if id == "" || len(id) > maxIDBytes {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// nodeLen is the length of a node id.
const nodeLen = 8

// nodeAlphabet is the alphabet of node ids (lowercase base32).
const nodeAlphabet = "abcdefghijklmnopqrstuvwxyz234567"

func validNode(s string) bool {
	if len(s) != nodeLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(nodeAlphabet, s[i]) < 0 {
			return false
		}
	}
	return true
}
