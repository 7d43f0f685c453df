package keyward

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is an error from the agent (or about a call to it). It carries the gRPC status:
// status.FromError, status.Code and errors.As all work on it. Its message is the agent's,
// which names the key and says what to do.
type Error struct {
	// Op is the call that failed: "sign", "get public key", "list keys", "generate key".
	Op string
	// KeyID is the key the call was about (empty for list keys).
	KeyID string
	st    *status.Status
}

func (e *Error) Error() string {
	return e.st.Message()
}

// Code is the gRPC status code (codes.NotFound, codes.PermissionDenied, ...).
func (e *Error) Code() codes.Code {
	return e.st.Code()
}

// GRPCStatus lets status.FromError and status.Code read the error.
func (e *Error) GRPCStatus() *status.Status {
	return e.st
}

// wrapCall turns an RPC error into an *Error; a failed connection reports the connection
// error the dialer recorded (a refused socket says why), not grpc's generic "unavailable".
func (c *Client) wrapCall(op, keyID string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		st = status.New(codes.Unknown, err.Error())
	}
	if st.Code() == codes.Unavailable {
		if dialErr := c.lastDialError(); dialErr != nil {
			var trustErr *TrustError
			if errors.As(dialErr, &trustErr) {
				return trustErr
			}
			if s, ok := status.FromError(dialErr); ok {
				st = s
			}
		}
	}
	return &Error{Op: op, KeyID: keyID, st: st}
}

// invalid is an error the SDK raises before asking the agent: the caller passed something
// that cannot work.
func invalid(op, keyID, format string, args ...any) error {
	return &Error{Op: op, KeyID: keyID, st: status.New(codes.InvalidArgument, fmt.Sprintf(format, args...))}
}
