package keyward

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// SocketEnv names the agent's socket, like SSH_AUTH_SOCK.
const SocketEnv = "KEYWARD_SOCK"

// AgentUIDEnv names a uid besides your own and root's that may run your agent
// (a service account running keywardd for you), like the WithTrustedUID option.
const AgentUIDEnv = "KEYWARD_AGENT_UID"

// DefaultSocketPath is the socket keywardd listens on when started without --socket or a
// configured path: $XDG_RUNTIME_DIR/keyward/agent.sock, or $TMPDIR/keyward-<uid>/agent.sock
// (with /tmp for an unset TMPDIR) when XDG_RUNTIME_DIR is unset. It does not look at
// KEYWARD_SOCK; SocketPath does. The Rust SDK's default_socket_path answers the same.
func DefaultSocketPath() string {
	if runtime := os.Getenv("XDG_RUNTIME_DIR"); runtime != "" {
		return filepath.Join(runtime, "keyward", "agent.sock")
	}
	tmp := os.Getenv("TMPDIR")
	if tmp == "" {
		tmp = "/tmp"
	}
	return filepath.Join(tmp, fmt.Sprintf("keyward-%d", os.Getuid()), "agent.sock")
}

// SocketPath is $KEYWARD_SOCK when it is set and not empty, else DefaultSocketPath.
func SocketPath() string {
	if path := os.Getenv(SocketEnv); path != "" {
		return path
	}
	return DefaultSocketPath()
}

// trust is who may own the agent's socket and run the agent: the caller, root, and
// optionally one more uid.
type trust struct {
	caller     uint32
	trustedUID *uint32
}

func (t trust) allows(uid uint32) bool {
	return uid == t.caller || uid == 0 || (t.trustedUID != nil && uid == *t.trustedUID)
}

// who names the uids that would have been accepted, for error messages.
func (t trust) who() string {
	if t.trustedUID != nil {
		return fmt.Sprintf("you (uid %d), root or uid %d (%s)", t.caller, *t.trustedUID, AgentUIDEnv)
	}
	return fmt.Sprintf("you (uid %d) or root", t.caller)
}

// trustFromEnv is the trust of this process: its uid, and KEYWARD_AGENT_UID unless an option
// already named a uid.
func trustFromEnv(option *uint32) (trust, error) {
	t := trust{caller: uint32(os.Getuid()), trustedUID: option}
	if option == nil {
		if text := os.Getenv(AgentUIDEnv); text != "" {
			uid, err := strconv.ParseUint(text, 10, 32)
			if err != nil {
				return t, status.Errorf(codes.InvalidArgument,
					"%s=%q is not a uid: set it to the numeric uid that runs your agent, or unset it", AgentUIDEnv, text)
			}
			u := uint32(uid)
			t.trustedUID = &u
		}
	}
	return t, nil
}

// TrustError is a refusal to talk to a socket or a server that may not be your agent. It
// carries the gRPC status PermissionDenied (status.FromError works on it) and says what was
// found and how to fix it.
type TrustError struct {
	// Socket is the socket path asked for.
	Socket string
	// Reason says what was wrong.
	Reason string
}

func (e *TrustError) Error() string {
	return fmt.Sprintf("refusing to use the agent socket %s: %s", e.Socket, e.Reason)
}

// GRPCStatus lets status.FromError and status.Code read the error.
func (e *TrustError) GRPCStatus() *status.Status {
	return status.New(codes.PermissionDenied, e.Error())
}

// fixes says how to get out of a refusal caused by a file owned by uid.
func fixes(uid uint32) string {
	return fmt.Sprintf("remove it if it is not yours, set XDG_RUNTIME_DIR (or %s) to a directory of your own, or set %s=%d if that user runs your agent",
		SocketEnv, AgentUIDEnv, uid)
}

// checkSocketPath is trust rule 1: the directory holding the socket (symlinks resolved) is
// owned by a trusted uid and not writable by group or others, and the socket is a socket
// owned by a trusted uid. It returns the resolved socket path to connect to.
func checkSocketPath(socket string, t trust) (string, error) {
	refuse := func(format string, args ...any) error {
		return &TrustError{Socket: socket, Reason: fmt.Sprintf(format, args...)}
	}
	resolved, err := filepath.EvalSymlinks(socket)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", status.Errorf(codes.Unavailable,
				"cannot connect to the keyward agent at %s: no socket there (the agent is not running); start it with `keywardd`, or point %s at its socket",
				socket, SocketEnv)
		}
		return "", status.Errorf(codes.Unavailable, "cannot connect to the keyward agent at %s: %v", socket, err)
	}
	dir := filepath.Dir(resolved)
	dirInfo, err := os.Stat(dir)
	if err != nil {
		return "", status.Errorf(codes.Unavailable, "cannot connect to the keyward agent at %s: %v", socket, err)
	}
	dirOwner, err := ownerOf(dirInfo)
	if err != nil {
		return "", refuse("%v", err)
	}
	if !t.allows(dirOwner) {
		return "", refuse("its directory %s belongs to uid %d, not to %s; %s", dir, dirOwner, t.who(), fixes(dirOwner))
	}
	if mode := dirInfo.Mode().Perm(); mode&0o022 != 0 {
		return "", refuse("its directory %s has mode %04o, so other users can put a socket of their own there; use a directory only you can write to (chmod 700 %s), or set XDG_RUNTIME_DIR",
			dir, mode, dir)
	}
	info, err := os.Lstat(resolved)
	if err != nil {
		return "", status.Errorf(codes.Unavailable, "cannot connect to the keyward agent at %s: %v", socket, err)
	}
	if info.Mode().Type() != fs.ModeSocket {
		return "", refuse("%s is not a socket but a %s; point %s at the agent's socket", resolved, kindOf(info.Mode()), SocketEnv)
	}
	owner, err := ownerOf(info)
	if err != nil {
		return "", refuse("%v", err)
	}
	if !t.allows(owner) {
		return "", refuse("the socket belongs to uid %d, not to %s; %s", owner, t.who(), fixes(owner))
	}
	return resolved, nil
}

// checkPeer is trust rule 2: the process serving the socket runs as a trusted uid.
func checkPeer(socket string, peerUID uint32, t trust) error {
	if t.allows(peerUID) {
		return nil
	}
	return &TrustError{Socket: socket, Reason: fmt.Sprintf(
		"the process serving it runs as uid %d, not as %s; it may not be your agent: stop it if it is not yours, or set %s=%d if that user runs your agent",
		peerUID, t.who(), AgentUIDEnv, peerUID)}
}

func ownerOf(info fs.FileInfo) (uint32, error) {
	stat, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("cannot read the owner of %s on this system", info.Name())
	}
	return stat.Uid, nil
}

func kindOf(mode fs.FileMode) string {
	switch {
	case mode.IsDir():
		return "directory"
	case mode.IsRegular():
		return "regular file"
	case mode&fs.ModeNamedPipe != 0:
		return "named pipe"
	case mode&fs.ModeDevice != 0:
		return "device"
	default:
		return "special file"
	}
}
