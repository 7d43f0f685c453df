package keyward

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyward/keyward/sdk/go/keywardv1"
)

func TestSocketDiscovery(t *testing.T) {
	t.Setenv(SocketEnv, "")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/77")
	if got := SocketPath(); got != "/run/user/77/keyward/agent.sock" {
		t.Errorf("with XDG_RUNTIME_DIR: %s", got)
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("TMPDIR", "/var/tmp")
	want := filepath.Join("/var/tmp", "keyward-"+itoa(os.Getuid()), "agent.sock")
	if got := DefaultSocketPath(); got != want {
		t.Errorf("with TMPDIR: %s, want %s", got, want)
	}
	t.Setenv("TMPDIR", "")
	want = filepath.Join("/tmp", "keyward-"+itoa(os.Getuid()), "agent.sock")
	if got := DefaultSocketPath(); got != want {
		t.Errorf("with nothing set: %s, want %s", got, want)
	}
	t.Setenv(SocketEnv, "/somewhere/agent.sock")
	if got := SocketPath(); got != "/somewhere/agent.sock" {
		t.Errorf("with KEYWARD_SOCK: %s", got)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func fmtInt(n int) string { return strconv.Itoa(n) }

// agentSocket makes dir/run (0700) with a listening socket in it, as keywardd does.
func agentSocket(t *testing.T) (string, net.Listener) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "agent.sock")
	listener, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { listener.Close() })
	return socket, listener
}

// foreignOwner makes path belong to a uid that is not the (possibly simulated) caller's and
// returns that uid and a trust for the caller. As root the file is given to uid 4242 and the
// caller is root; otherwise the file stays ours and the caller is simulated as another uid.
func foreignOwner(t *testing.T, path string) (uint32, trust) {
	t.Helper()
	if os.Getuid() == 0 {
		if err := os.Chown(path, 4242, 4242); err != nil {
			t.Fatal(err)
		}
		return 4242, trust{caller: 0}
	}
	me := uint32(os.Getuid())
	return me, trust{caller: me + 1}
}

func TestTrustAcceptsOwnSocket(t *testing.T) {
	socket, _ := agentSocket(t)
	resolved, err := checkSocketPath(socket, trust{caller: uint32(os.Getuid())})
	if err != nil || resolved != socket {
		t.Fatalf("own socket refused: %q %v", resolved, err)
	}
}

func TestTrustRefusesForeignDirectory(t *testing.T) {
	socket, _ := agentSocket(t)
	foreign, who := foreignOwner(t, filepath.Dir(socket))
	_, err := checkSocketPath(socket, who)
	var trustErr *TrustError
	if !errors.As(err, &trustErr) {
		t.Fatalf("foreign directory accepted: %v", err)
	}
	for _, want := range []string{
		"refusing to use the agent socket " + socket,
		"its directory " + filepath.Dir(socket) + " belongs to uid " + fmtInt(int(foreign)),
		"remove it if it is not yours",
		"KEYWARD_AGENT_UID=" + fmtInt(int(foreign)),
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("status code %s", status.Code(err))
	}
	// Trusting that uid (KEYWARD_AGENT_UID / WithTrustedUID) accepts it; the socket itself
	// stays the caller's or root's, which are trusted anyway.
	who.trustedUID = &foreign
	if os.Getuid() == 0 {
		if err := os.Chown(socket, int(foreign), int(foreign)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := checkSocketPath(socket, who); err != nil {
		t.Fatalf("trusted uid refused: %v", err)
	}
}

func TestTrustRefusesForeignSocket(t *testing.T) {
	socket, _ := agentSocket(t)
	if os.Getuid() != 0 {
		t.Log("the socket's own owner check needs root to chown; the directory check covers the rule otherwise")
		return
	}
	if err := os.Chown(socket, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	_, err := checkSocketPath(socket, trust{caller: 0})
	if err == nil || !strings.Contains(err.Error(), "the socket belongs to uid 4242") {
		t.Fatalf("foreign socket accepted: %v", err)
	}
}

func TestTrustRefusesWritableDirectory(t *testing.T) {
	socket, _ := agentSocket(t)
	if err := os.Chmod(filepath.Dir(socket), 0o770); err != nil {
		t.Fatal(err)
	}
	_, err := checkSocketPath(socket, trust{caller: uint32(os.Getuid())})
	if err == nil || !strings.Contains(err.Error(), "has mode 0770") {
		t.Fatalf("group-writable directory accepted: %v", err)
	}
}

func TestTrustResolvesSymlinks(t *testing.T) {
	socket, _ := agentSocket(t)
	// A link in a world-writable directory to a socket in a private one: what counts is the
	// directory the socket really is in.
	public := t.TempDir()
	if err := os.Chmod(public, 0o777); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(public, "agent.sock")
	if err := os.Symlink(socket, link); err != nil {
		t.Fatal(err)
	}
	resolved, err := checkSocketPath(link, trust{caller: uint32(os.Getuid())})
	if err != nil || resolved != socket {
		t.Fatalf("link to a private socket: %q %v", resolved, err)
	}
	// And the other way round: a link from a private directory into a writable one is refused.
	inPublic := filepath.Join(public, "real.sock")
	listener, err := net.Listen("unix", inPublic)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	private := filepath.Join(t.TempDir(), "agent.sock")
	if err := os.Symlink(inPublic, private); err != nil {
		t.Fatal(err)
	}
	if _, err := checkSocketPath(private, trust{caller: uint32(os.Getuid())}); err == nil {
		t.Fatal("a link to a socket in a world-writable directory was accepted")
	}
}

func TestTrustRefusesNonSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "agent.sock")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := checkSocketPath(file, trust{caller: uint32(os.Getuid())})
	if err == nil || !strings.Contains(err.Error(), "is not a socket but a regular file") {
		t.Fatalf("regular file accepted: %v", err)
	}
	_, err = checkSocketPath(filepath.Join(dir, "missing.sock"), trust{caller: uint32(os.Getuid())})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "the agent is not running") {
		t.Fatalf("missing socket: %v", err)
	}
}

func TestPeerCheck(t *testing.T) {
	me := uint32(os.Getuid())
	if err := checkPeer("/s", me, trust{caller: me}); err != nil {
		t.Error(err)
	}
	if err := checkPeer("/s", 0, trust{caller: 1000}); err != nil {
		t.Error("root refused:", err)
	}
	err := checkPeer("/s", 1001, trust{caller: 1000})
	if err == nil || !strings.Contains(err.Error(), "runs as uid 1001, not as you (uid 1000) or root") ||
		!strings.Contains(err.Error(), "KEYWARD_AGENT_UID=1001") {
		t.Errorf("foreign peer: %v", err)
	}
	trusted := uint32(1001)
	if err := checkPeer("/s", 1001, trust{caller: 1000, trustedUID: &trusted}); err != nil {
		t.Error("trusted uid refused:", err)
	}
}

// The peer credentials the dialer reads are the kernel's: a listener of our own is us.
func TestDialReadsPeerCredentials(t *testing.T) {
	socket, listener := agentSocket(t)
	go func() {
		conn, err := listener.Accept()
		if err == nil {
			conn.Close()
		}
	}()
	conn, err := dialChecked(context.Background(), socket, trust{caller: uint32(os.Getuid())})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	uid, err := peerUID(conn.(*net.UnixConn))
	if err != nil || uid != uint32(os.Getuid()) {
		t.Fatalf("peer uid %d (%v), want %d", uid, err, os.Getuid())
	}
	if os.Getuid() != 0 {
		// Simulated as another caller, our own listener is a stranger.
		_, err = dialChecked(context.Background(), socket, trust{caller: uint32(os.Getuid()) + 1})
		if err == nil {
			t.Fatal("a socket served by another uid was accepted")
		}
	}
}

func TestAgentUIDEnv(t *testing.T) {
	t.Setenv(AgentUIDEnv, "1234")
	tr, err := trustFromEnv(nil)
	if err != nil || tr.trustedUID == nil || *tr.trustedUID != 1234 {
		t.Fatalf("%+v %v", tr, err)
	}
	option := uint32(99)
	if tr, _ := trustFromEnv(&option); *tr.trustedUID != 99 {
		t.Error("the option did not win over the environment")
	}
	t.Setenv(AgentUIDEnv, "alice")
	if _, err := trustFromEnv(nil); err == nil || !strings.Contains(err.Error(), "is not a uid") {
		t.Errorf("a name was accepted as a uid: %v", err)
	}
	if _, err := Dial(context.Background(), "/nonexistent/agent.sock"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Dial with a bad KEYWARD_AGENT_UID: %v", err)
	}
}

func TestSignerOptsMapping(t *testing.T) {
	p256 := keywardv1.KeySpec_KEY_SPEC_EC_P256
	rsa2048 := keywardv1.KeySpec_KEY_SPEC_RSA_2048
	ed := keywardv1.KeySpec_KEY_SPEC_ED25519
	for _, c := range []struct {
		spec keywardv1.KeySpec
		opts crypto.SignerOpts
		want string
	}{
		{p256, crypto.SHA384, "ecdsa-sha384"},
		{rsa2048, crypto.SHA256, "rsa-pkcs1-sha256"},
		{rsa2048, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA512}, "rsa-pss-sha512"},
		{rsa2048, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256}, "rsa-pss-sha256"},
		{rsa2048, &rsa.PSSOptions{SaltLength: 48, Hash: crypto.SHA384}, "rsa-pss-sha384"},
		{ed, crypto.Hash(0), "ed25519"},
		{ed, &ed25519.Options{}, "ed25519"},
	} {
		got, err := algorithmForSignerOpts(c.spec, c.opts)
		if err != nil || AlgorithmName(got) != c.want {
			t.Errorf("%s %#v: %s %v, want %s", KeySpecName(c.spec), c.opts, AlgorithmName(got), err, c.want)
		}
	}
	for _, c := range []struct {
		spec keywardv1.KeySpec
		opts crypto.SignerOpts
		why  string
	}{
		{rsa2048, &rsa.PSSOptions{SaltLength: 20, Hash: crypto.SHA256}, "20-byte salt"},
		{rsa2048, crypto.Hash(0), "not a message with no hash"},
		{p256, crypto.SHA1, "not a SHA-1 digest"},
		{ed, crypto.SHA512, "signs the message itself"},
		{ed, &ed25519.Options{Hash: crypto.SHA512}, "Ed25519ph"},
		{ed, &ed25519.Options{Context: "x"}, "context"},
		{p256, nil, "no crypto.SignerOpts"},
	} {
		_, err := algorithmForSignerOpts(c.spec, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%s %#v: %v, want an error about %q", KeySpecName(c.spec), c.opts, err, c.why)
		}
	}
}

func TestDecryptRefuses(t *testing.T) {
	s := &Signer{keyID: "release"}
	_, err := s.Decrypt(nil, []byte("x"), nil)
	if !errors.Is(err, ErrNoDecryption) || !strings.Contains(err.Error(), `key "release"`) {
		t.Fatalf("%v", err)
	}
}

func TestErrorsCarryStatus(t *testing.T) {
	err := invalid("sign", "k", "bad %s", "input")
	if st, ok := status.FromError(err); !ok || st.Code() != codes.InvalidArgument || st.Message() != "bad input" {
		t.Fatalf("status.FromError: %v %v", st, ok)
	}
	var e *Error
	if !errors.As(err, &e) || e.KeyID != "k" || e.Op != "sign" {
		t.Fatalf("errors.As: %+v", e)
	}
}
