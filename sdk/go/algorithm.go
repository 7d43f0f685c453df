package keyward

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"fmt"
	"strings"

	"github.com/keyward/keyward/sdk/go/keywardv1"
)

// The key spec names people type (ec-p256, rsa-2048), the same table as the Rust SDK's.
var keySpecNames = []struct {
	spec keywardv1.KeySpec
	name string
}{
	{keywardv1.KeySpec_KEY_SPEC_EC_P256, "ec-p256"},
	{keywardv1.KeySpec_KEY_SPEC_EC_P384, "ec-p384"},
	{keywardv1.KeySpec_KEY_SPEC_EC_P521, "ec-p521"},
	{keywardv1.KeySpec_KEY_SPEC_RSA_2048, "rsa-2048"},
	{keywardv1.KeySpec_KEY_SPEC_RSA_3072, "rsa-3072"},
	{keywardv1.KeySpec_KEY_SPEC_RSA_4096, "rsa-4096"},
	{keywardv1.KeySpec_KEY_SPEC_ED25519, "ed25519"},
}

var algorithmNames = []struct {
	algorithm keywardv1.SignatureAlgorithm
	name      string
}{
	{keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_ECDSA_SHA256, "ecdsa-sha256"},
	{keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_ECDSA_SHA384, "ecdsa-sha384"},
	{keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_ECDSA_SHA512, "ecdsa-sha512"},
	{keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_RSA_PSS_SHA256, "rsa-pss-sha256"},
	{keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_RSA_PSS_SHA384, "rsa-pss-sha384"},
	{keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_RSA_PSS_SHA512, "rsa-pss-sha512"},
	{keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_RSA_PKCS1_SHA256, "rsa-pkcs1-sha256"},
	{keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_RSA_PKCS1_SHA384, "rsa-pkcs1-sha384"},
	{keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_RSA_PKCS1_SHA512, "rsa-pkcs1-sha512"},
	{keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_ED25519, "ed25519"},
}

// KeySpecName is the lowercase name of spec (ec-p256); "unspecified" for the zero value.
func KeySpecName(spec keywardv1.KeySpec) string {
	for _, n := range keySpecNames {
		if n.spec == spec {
			return n.name
		}
	}
	return "unspecified"
}

// ParseKeySpec parses a KeySpecName (case-insensitive).
func ParseKeySpec(name string) (keywardv1.KeySpec, bool) {
	for _, n := range keySpecNames {
		if strings.EqualFold(n.name, name) {
			return n.spec, true
		}
	}
	return keywardv1.KeySpec_KEY_SPEC_UNSPECIFIED, false
}

// AlgorithmName is the lowercase name of algorithm (ecdsa-sha256); "unspecified" for the zero
// value.
func AlgorithmName(algorithm keywardv1.SignatureAlgorithm) string {
	for _, n := range algorithmNames {
		if n.algorithm == algorithm {
			return n.name
		}
	}
	return "unspecified"
}

// ParseAlgorithm parses an AlgorithmName (case-insensitive).
func ParseAlgorithm(name string) (keywardv1.SignatureAlgorithm, bool) {
	for _, n := range algorithmNames {
		if strings.EqualFold(n.name, name) {
			return n.algorithm, true
		}
	}
	return keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_UNSPECIFIED, false
}

// HashOf is the hash algorithm signs with; false for Ed25519 (which signs the message).
func HashOf(algorithm keywardv1.SignatureAlgorithm) (crypto.Hash, bool) {
	switch algorithm {
	case keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_ECDSA_SHA256,
		keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_RSA_PSS_SHA256,
		keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_RSA_PKCS1_SHA256:
		return crypto.SHA256, true
	case keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_ECDSA_SHA384,
		keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_RSA_PSS_SHA384,
		keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_RSA_PKCS1_SHA384:
		return crypto.SHA384, true
	case keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_ECDSA_SHA512,
		keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_RSA_PSS_SHA512,
		keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_RSA_PKCS1_SHA512:
		return crypto.SHA512, true
	}
	return 0, false
}

// Padding is the RSA signature padding.
type Padding int

const (
	// PKCS1v15 is RSASSA-PKCS1-v1_5.
	PKCS1v15 Padding = iota
	// PSS is RSASSA-PSS with MGF1 of the same hash and a salt as long as the hash.
	PSS
)

// AlgorithmFor is the agent algorithm for a key of spec signing a digest made with hash
// (crypto.Hash(0): the message itself, pure Ed25519) with padding (RSA only). It is the same
// table as the Rust SDK's algorithm_for; sdk/testdata/vectors.json holds the answers.
func AlgorithmFor(spec keywardv1.KeySpec, hash crypto.Hash, padding Padding) (keywardv1.SignatureAlgorithm, error) {
	bits := map[crypto.Hash]int{crypto.SHA256: 256, crypto.SHA384: 384, crypto.SHA512: 512}[hash]
	name := KeySpecName(spec)
	switch spec {
	case keywardv1.KeySpec_KEY_SPEC_EC_P256, keywardv1.KeySpec_KEY_SPEC_EC_P384, keywardv1.KeySpec_KEY_SPEC_EC_P521:
		if bits == 0 {
			return 0, fmt.Errorf("a %s key signs a SHA-256, SHA-384 or SHA-512 digest, not %s", name, hashName(hash))
		}
		algorithm, _ := ParseAlgorithm(fmt.Sprintf("ecdsa-sha%d", bits))
		return algorithm, nil
	case keywardv1.KeySpec_KEY_SPEC_RSA_2048, keywardv1.KeySpec_KEY_SPEC_RSA_3072, keywardv1.KeySpec_KEY_SPEC_RSA_4096:
		if bits == 0 {
			return 0, fmt.Errorf("a %s key signs a SHA-256, SHA-384 or SHA-512 digest, not %s", name, hashName(hash))
		}
		scheme := "pkcs1"
		if padding == PSS {
			scheme = "pss"
		}
		algorithm, _ := ParseAlgorithm(fmt.Sprintf("rsa-%s-sha%d", scheme, bits))
		return algorithm, nil
	case keywardv1.KeySpec_KEY_SPEC_ED25519:
		if hash != 0 {
			return 0, fmt.Errorf("an ed25519 key signs the message itself (crypto.Hash(0)), not %s", hashName(hash))
		}
		return keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_ED25519, nil
	}
	return 0, fmt.Errorf("the key spec %s cannot sign", name)
}

// hashName names what the caller passed: "a SHA-1 digest", or no hash at all.
func hashName(hash crypto.Hash) string {
	if hash == 0 {
		return "a message with no hash (crypto.Hash(0))"
	}
	return "a " + hash.String() + " digest"
}

// algorithmForSignerOpts maps crypto.SignerOpts as crypto.Signer callers pass them: a
// crypto.Hash (ECDSA, RSA PKCS#1 v1.5), *rsa.PSSOptions (RSA-PSS: the salt must be the hash
// length, rsa.PSSSaltLengthEqualsHash or rsa.PSSSaltLengthAuto, which verifies a hash-length
// salt), *ed25519.Options (pure Ed25519 only: no Ed25519ph, no context).
func algorithmForSignerOpts(spec keywardv1.KeySpec, opts crypto.SignerOpts) (keywardv1.SignatureAlgorithm, error) {
	if opts == nil {
		return 0, fmt.Errorf("no crypto.SignerOpts given: pass the hash that made the digest (e.g. crypto.SHA256)")
	}
	padding := PKCS1v15
	switch o := opts.(type) {
	case *rsa.PSSOptions:
		padding = PSS
		hash := o.HashFunc()
		if o.SaltLength != rsa.PSSSaltLengthEqualsHash && o.SaltLength != rsa.PSSSaltLengthAuto && o.SaltLength != hash.Size() {
			return 0, fmt.Errorf("RSA-PSS with a %d-byte salt: the agent signs with a salt as long as the hash (%d bytes); use rsa.PSSSaltLengthEqualsHash", o.SaltLength, hash.Size())
		}
	case *ed25519.Options:
		if o.Hash != 0 {
			return 0, fmt.Errorf("Ed25519ph (pre-hashed Ed25519) is not supported: the agent signs pure Ed25519 over the message, pass crypto.Hash(0)")
		}
		if o.Context != "" {
			return 0, fmt.Errorf("Ed25519ctx (an Ed25519 context string) is not supported: the agent signs pure Ed25519")
		}
	}
	return AlgorithmFor(spec, opts.HashFunc(), padding)
}
