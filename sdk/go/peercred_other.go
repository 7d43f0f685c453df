//go:build !linux && !darwin

package keyward

import (
	"errors"
	"net"
)

// peerUID cannot be read here, so every connection is refused rather than trusted blindly.
func peerUID(*net.UnixConn) (uint32, error) {
	return 0, errors.New("this system has no peer credentials the SDK can read (only Linux and macOS are supported)")
}
