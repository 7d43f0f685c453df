package keyward

import (
	"context"
	"crypto"
	"errors"
	"io"
	"time"

	"github.com/keyward/keyward/sdk/go/keywardv1"
)

// DefaultSignTimeout bounds one Sign call of a Signer whose Timeout is zero.
const DefaultSignTimeout = 30 * time.Second

// Signer is an agent key as a crypto.Signer: anything that takes one (x509.CreateCertificate,
// tls.Certificate.PrivateKey, ssh.NewSignerFromSigner, notation-go, sigstore) signs through
// the agent, and the private key never leaves it. Public comes from GetPublicKey.
//
// Sign maps crypto.SignerOpts to the agent's algorithm: a crypto.Hash for ECDSA (any of
// SHA-256/384/512 on any curve) and RSA PKCS#1 v1.5; *rsa.PSSOptions for RSA-PSS (salt =
// hash length, rsa.PSSSaltLengthEqualsHash or rsa.PSSSaltLengthAuto; other salt lengths are
// refused); crypto.Hash(0) for Ed25519, where the "digest" argument is the message. ECDSA
// signatures are ASN.1 DER, as the crypto.Signer contract requires.
//
// Signer is also a crypto.Decrypter whose Decrypt always refuses: the agent only signs.
type Signer struct {
	client *Client
	keyID  string
	public *PublicKey

	// Purpose is recorded with every signature in the agent's audit log.
	Purpose string
	// Timeout bounds each Sign call (DefaultSignTimeout when zero). SignContext takes a
	// context instead.
	Timeout time.Duration
}

// Signer returns keyID as a crypto.Signer; it fetches the public key once.
func (c *Client) Signer(ctx context.Context, keyID string) (*Signer, error) {
	public, err := c.PublicKey(ctx, keyID)
	if err != nil {
		return nil, err
	}
	return &Signer{client: c, keyID: keyID, public: public}, nil
}

var (
	_ crypto.Signer    = (*Signer)(nil)
	_ crypto.Decrypter = (*Signer)(nil)
)

// KeyID is the agent key this signer uses.
func (s *Signer) KeyID() string { return s.keyID }

// KeySpec is the key's type (ec-p256, rsa-2048, ...).
func (s *Signer) KeySpec() keywardv1.KeySpec { return s.public.Info.GetKeySpec() }

// PublicKey is everything GetPublicKey returned: the DER and PEM forms, the key version and
// the certificate chain.
func (s *Signer) PublicKey() *PublicKey { return s.public }

// Public is the key's public half: *ecdsa.PublicKey, *rsa.PublicKey or ed25519.PublicKey.
func (s *Signer) Public() crypto.PublicKey { return s.public.Key }

// Sign signs digest (for Ed25519 with crypto.Hash(0): the message) through the agent. rand is
// ignored: the agent's backend supplies the randomness.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultSignTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.SignContext(ctx, digest, opts)
}

// SignContext is Sign under ctx.
func (s *Signer) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	algorithm, err := algorithmForSignerOpts(s.KeySpec(), opts)
	if err != nil {
		return nil, invalid("sign", s.keyID, "key %q: %v", s.keyID, err)
	}
	signOpts := SignOptions{Format: keywardv1.SignatureFormat_SIGNATURE_FORMAT_DER, Purpose: s.Purpose}
	var signature *Signature
	if algorithm == keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_ED25519 {
		signature, err = s.client.SignMessage(ctx, s.keyID, algorithm, digest, signOpts)
	} else {
		if hash := opts.HashFunc(); len(digest) != hash.Size() {
			return nil, invalid("sign", s.keyID, "key %q: a %s digest is %d bytes, got %d: hash the data first", s.keyID, hash, hash.Size(), len(digest))
		}
		signature, err = s.client.SignDigest(ctx, s.keyID, algorithm, digest, signOpts)
	}
	if err != nil {
		return nil, err
	}
	return signature.Bytes, nil
}

// ErrNoDecryption is what Decrypt returns: the agent's keys sign and never decrypt.
var ErrNoDecryption = errors.New("the keyward agent only signs: its keys cannot decrypt (there is no decryption call); use a key meant for encryption elsewhere")

// Decrypt always fails with an error that wraps ErrNoDecryption and names the key.
func (s *Signer) Decrypt(io.Reader, []byte, crypto.DecrypterOpts) ([]byte, error) {
	return nil, &decryptError{keyID: s.keyID}
}

type decryptError struct{ keyID string }

func (e *decryptError) Error() string {
	return "key " + quote(e.keyID) + ": " + ErrNoDecryption.Error()
}

func (e *decryptError) Unwrap() error { return ErrNoDecryption }

func quote(s string) string { return `"` + s + `"` }
