package client

import (
	"context"
	"net"
	"syscall"
	"testing"

	"connectrpc.com/connect"
)

func TestCutConnectionIsUnavailable(t *testing.T) {
	for _, cause := range []error{syscall.EPIPE, syscall.ECONNRESET} {
		// What connect-go returns when the server cut the connection
		// while the request was written.
		err := connect.NewError(connect.CodeCanceled, &net.OpError{Op: "write", Net: "tcp", Err: cause})
		if got := toError(err); got.Code != connect.CodeUnavailable || !got.Retryable() {
			t.Errorf("%v: code %v, want retryable unavailable", cause, got.Code)
		}
	}
	if got := toError(connect.NewError(connect.CodeCanceled, context.Canceled)); got.Code != connect.CodeCanceled {
		t.Errorf("a cancelled call: code %v, want canceled", got.Code)
	}
}
