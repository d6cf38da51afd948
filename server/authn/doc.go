// Package authn holds the server's credentials: the EdDSA JSON Web Tokens
// agents use on the comms API (signing keys live in the shared store, so any
// node verifies a token another node issued), management API bearer tokens,
// and agent keys. Secrets are kept only as SHA-256 hashes.
package authn
