package files

import "io"

// SetWriteHook makes s write each upload through wrap (to inject disk
// errors).
func SetWriteHook(s *Store, wrap func(io.Writer) io.Writer) { s.wrap = wrap }

// DecodeInfo is decodeInfo, for the fuzz test.
var DecodeInfo = decodeInfo
