// Package files keeps the files agents download — upgrade packages, plugin
// binaries, shared files — content-addressed by SHA-256 in a directory of
// the server's data directory, and signs each with the server's
// release-signing key.
//
// # Layout
//
// DIR/<sha256> holds the bytes of a file, DIR/<sha256>.json its metadata
// (name, size, digest, upload time, uploader, signature). Uploads are
// written to a temporary file DIR/.upload-*, fsynced, and renamed under
// their digest, then the metadata is written the same way: a crash never
// leaves a partial file under a digest, and a file without its metadata is
// not served (the next upload of the same bytes completes it). Temporary
// files left by a crash are removed when the store is opened.
//
// # Signatures
//
// The release-signing key is an Ed25519 key (RFC 8032, pure Ed25519, no
// pre-hash), created at first start. A server keeps it in its store's
// secrets (EnsureSharedKey), so that every node of a cluster signs with the
// same key; EnsureKey keeps one in a PEM file instead (PKCS #8, mode 0600).
// For each file the server signs exactly the 32 bytes of the file's SHA-256
// digest (the raw digest, not its hex spelling). The signature is sent as
// standard base64 with padding (88 characters). To verify a downloaded
// file, an agent computes the SHA-256 of the bytes, checks it equals the
// digest it asked for, and checks
//
//	ed25519.Verify(releasePublicKey, digest[:], signature)
//
// with the public key it pinned at enrollment (the management API's
// registration answer carries it as release_public_key: the standard base64
// of its 32 bytes). The key signs nothing else.
package files
