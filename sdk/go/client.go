package keyward

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/keyward/keyward/sdk/go/keywardv1"
)

// maxMessageSize matches the Rust SDK: a certificate chain or key list may be large.
const maxMessageSize = 64 << 20

// connectTimeout bounds how long Dial waits for the socket to accept.
const connectTimeout = 5 * time.Second

// Client is a connection to keywardd. It is safe for concurrent use; Close it when done.
type Client struct {
	conn   *grpc.ClientConn
	signer keywardv1.SignerClient
	admin  keywardv1.KeyAdminClient
	socket string

	mu      sync.Mutex
	dialErr error
	first   net.Conn
}

// Option changes how Dial connects.
type Option func(*options)

type options struct {
	trustedUID *uint32
}

// WithTrustedUID trusts uid, besides your own and root's, to own the socket's directory and
// the socket and to run the agent (a service account that runs keywardd for you). The
// KEYWARD_AGENT_UID environment variable does the same when this option is not given.
func WithTrustedUID(uid uint32) Option {
	return func(o *options) { o.trustedUID = &uid }
}

// DialDefault connects to $KEYWARD_SOCK, or to DefaultSocketPath when it is unset.
func DialDefault(ctx context.Context, opts ...Option) (*Client, error) {
	return Dial(ctx, SocketPath(), opts...)
}

// Dial connects to the agent listening on the Unix socket at socket.
//
// Before anything is sent, it checks that the socket is your agent's: the socket's directory
// (symlinks resolved) and the socket belong to you, root or the trusted uid, the directory is
// not writable by group or others, and the process that accepts the connection runs as one
// of those uids (SO_PEERCRED). Otherwise it returns a *TrustError saying what it found and
// how to fix it. Every reconnection is checked the same way.
func Dial(ctx context.Context, socket string, opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	t, err := trustFromEnv(o.trustedUID)
	if err != nil {
		return nil, err
	}
	c := &Client{socket: socket}
	// The first connection is made and checked here, so that a wrong socket fails Dial with
	// its reason; grpc then takes it over instead of dialing again.
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	first, err := dialChecked(ctx, socket, t)
	if err != nil {
		return nil, err
	}
	c.first = first
	dialer := func(ctx context.Context, _ string) (net.Conn, error) {
		c.mu.Lock()
		conn := c.first
		c.first = nil
		c.mu.Unlock()
		if conn != nil {
			return conn, nil
		}
		conn, err := dialChecked(ctx, socket, t)
		c.mu.Lock()
		c.dialErr = err
		c.mu.Unlock()
		return conn, err
	}
	// grpc-go sends "localhost" as :authority for this target, which the agent's HTTP/2
	// server accepts (a socket path would be refused as a malformed authority).
	conn, err := grpc.NewClient("passthrough:///localhost",
		grpc.WithContextDialer(dialer),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageSize)),
	)
	if err != nil {
		_ = first.Close()
		return nil, status.Errorf(codes.Internal, "cannot set up the gRPC client for %s: %v", socket, err)
	}
	// Hand grpc the checked connection now rather than at the first call.
	conn.Connect()
	c.conn = conn
	c.signer = keywardv1.NewSignerClient(conn)
	c.admin = keywardv1.NewKeyAdminClient(conn)
	return c, nil
}

// dialChecked checks the socket's path, connects, and checks the peer's uid before anything
// is written to the connection.
func dialChecked(ctx context.Context, socket string, t trust) (net.Conn, error) {
	resolved, err := checkSocketPath(socket, t)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", resolved)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable,
			"cannot connect to the keyward agent at %s: %v; start it with `keywardd`, or point %s at its socket",
			socket, err, SocketEnv)
	}
	unixConn, ok := conn.(*net.UnixConn)
	if !ok {
		_ = conn.Close()
		return nil, status.Errorf(codes.Internal, "%s did not give a Unix socket connection", socket)
	}
	uid, err := peerUID(unixConn)
	if err != nil {
		_ = conn.Close()
		return nil, &TrustError{Socket: socket, Reason: fmt.Sprintf("cannot read the peer credentials of the process serving it: %v", err)}
	}
	if err := checkPeer(socket, uid, t); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return conn, nil
}

func (c *Client) lastDialError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dialErr
}

// Close closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	first := c.first
	c.first = nil
	c.mu.Unlock()
	if first != nil {
		_ = first.Close()
	}
	return c.conn.Close()
}

// Socket is the socket path this client was dialed with.
func (c *Client) Socket() string {
	return c.socket
}

// Conn is the underlying gRPC connection, for calls the SDK does not wrap (health,
// reflection) through the keywardv1 stubs.
func (c *Client) Conn() *grpc.ClientConn {
	return c.conn
}

// ListKeys lists every key the agent offers this caller.
func (c *Client) ListKeys(ctx context.Context) ([]*keywardv1.KeyInfo, error) {
	resp, err := c.signer.ListKeys(ctx, &keywardv1.ListKeysRequest{})
	if err != nil {
		return nil, c.wrapCall("list keys", "", err)
	}
	return resp.GetKeys(), nil
}

// PublicKey is an agent key's public half and what comes with it.
type PublicKey struct {
	// Info is the key's id, backend, spec and algorithms (the first is its default).
	Info *keywardv1.KeyInfo
	// Key is the parsed public key: *ecdsa.PublicKey, *rsa.PublicKey or ed25519.PublicKey.
	Key crypto.PublicKey
	// DER is the SubjectPublicKeyInfo, DER.
	DER []byte
	// PEM is the SubjectPublicKeyInfo, PEM.
	PEM string
	// KeyVersion is the backend's key version (empty when it has none).
	KeyVersion string
	// CertificateChain holds the attached X.509 certificates, DER, leaf first.
	CertificateChain [][]byte
}

// PublicKey fetches the public key of keyID with its certificate chain.
func (c *Client) PublicKey(ctx context.Context, keyID string) (*PublicKey, error) {
	resp, err := c.signer.GetPublicKey(ctx, &keywardv1.GetPublicKeyRequest{KeyId: keyID})
	if err != nil {
		return nil, c.wrapCall("get public key", keyID, err)
	}
	return publicKeyFrom(keyID, resp.GetKey(), resp.GetPublicKeyDer(), resp.GetPublicKeyPem(), resp.GetKeyVersion(), resp.GetCertificateChain())
}

func publicKeyFrom(keyID string, info *keywardv1.KeyInfo, der []byte, pem, version string, chain [][]byte) (*PublicKey, error) {
	if info == nil {
		return nil, &Error{Op: "get public key", KeyID: keyID, st: status.Newf(codes.Internal,
			"the agent sent no key description for key %q", keyID)}
	}
	key, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, &Error{Op: "get public key", KeyID: keyID, st: status.Newf(codes.Internal,
			"the agent sent a public key for key %q that Go cannot parse: %v", keyID, err)}
	}
	return &PublicKey{Info: info, Key: key, DER: der, PEM: pem, KeyVersion: version, CertificateChain: chain}, nil
}

// SignOptions says how to sign.
type SignOptions struct {
	// Format is the ECDSA encoding: DER (the default) or raw r||s.
	Format keywardv1.SignatureFormat
	// Purpose says why this signature is made; the agent records it in its audit log
	// (at most 256 bytes).
	Purpose string
}

// Signature is a signature the agent made and verified against the key before returning it.
type Signature struct {
	// Bytes is the signature, in Format for ECDSA.
	Bytes     []byte
	Algorithm keywardv1.SignatureAlgorithm
	Format    keywardv1.SignatureFormat
	// KeyVersion is the key version that signed (empty when the backend has none).
	KeyVersion string
	// CertificateChain holds the key's X.509 chain, DER, leaf first.
	CertificateChain [][]byte
}

// SignDigest has the agent sign digest, computed by the caller with algorithm's hash
// (RSA and ECDSA).
func (c *Client) SignDigest(ctx context.Context, keyID string, algorithm keywardv1.SignatureAlgorithm, digest []byte, opts SignOptions) (*Signature, error) {
	return c.sign(ctx, &keywardv1.SignRequest{
		KeyId: keyID, Algorithm: algorithm, Input: &keywardv1.SignRequest_Digest{Digest: digest},
		Format: opts.Format, Purpose: opts.Purpose,
	})
}

// SignMessage signs message with algorithm: for RSA and ECDSA the message is hashed here and
// only its digest is sent; for Ed25519 the message itself is sent (pure Ed25519).
func (c *Client) SignMessage(ctx context.Context, keyID string, algorithm keywardv1.SignatureAlgorithm, message []byte, opts SignOptions) (*Signature, error) {
	if algorithm == keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_ED25519 {
		return c.sign(ctx, &keywardv1.SignRequest{
			KeyId: keyID, Algorithm: algorithm, Input: &keywardv1.SignRequest_Message{Message: message},
			Format: opts.Format, Purpose: opts.Purpose,
		})
	}
	hash, ok := HashOf(algorithm)
	if !ok {
		return nil, invalid("sign", keyID, "no algorithm given for key %q: pass one of the key's algorithms (PublicKey(...).Info.Algorithms)", keyID)
	}
	h := hash.New()
	h.Write(message)
	return c.SignDigest(ctx, keyID, algorithm, h.Sum(nil), opts)
}

func (c *Client) sign(ctx context.Context, req *keywardv1.SignRequest) (*Signature, error) {
	resp, err := c.signer.Sign(ctx, req)
	if err != nil {
		return nil, c.wrapCall("sign", req.GetKeyId(), err)
	}
	return &Signature{
		Bytes:            resp.GetSignature(),
		Algorithm:        resp.GetAlgorithm(),
		Format:           resp.GetFormat(),
		KeyVersion:       resp.GetKeyVersion(),
		CertificateChain: resp.GetCertificateChain(),
	}, nil
}

// GenerateKey creates a key pair of spec in the backend instance backend (a [[backend]]
// name), known from then on as keyID. The private key is made inside the backend and never
// leaves it. KeyAdmin calls are allowed to the daemon's uid and admin_uids only.
func (c *Client) GenerateKey(ctx context.Context, backend, keyID string, spec keywardv1.KeySpec) (*PublicKey, error) {
	resp, err := c.admin.GenerateKey(ctx, &keywardv1.GenerateKeyRequest{Backend: backend, KeyId: keyID, KeySpec: spec})
	if err != nil {
		return nil, c.wrapCall("generate key", keyID, err)
	}
	info := resp.GetKey()
	return publicKeyFrom(keyID, info, resp.GetPublicKeyDer(), resp.GetPublicKeyPem(), info.GetKeyVersion(), nil)
}
