package keyward_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log"
	"math/big"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	keyward "github.com/keyward/keyward/sdk/go"
	"github.com/keyward/keyward/sdk/go/keywardv1"
)

// Any agent key as a crypto.Signer: here it signs a self-signed certificate. The private key
// never leaves the agent.
func ExampleClient_Signer() {
	ctx := context.Background()
	client, err := keyward.DialDefault(ctx) // $KEYWARD_SOCK or the default socket
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	signer, err := client.Signer(ctx, "release")
	if err != nil {
		log.Fatal(err)
	}
	signer.Purpose = "release CA certificate" // recorded in the agent's audit log
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "release"},
		NotBefore:             time.Now(),
		NotAfter:              time.Now().AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, signer.Public(), signer)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(der) > 0)
}

// Signing a digest with an explicit algorithm, and reading the agent's error codes.
func ExampleClient_SignDigest() {
	ctx := context.Background()
	client, err := keyward.DialDefault(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	digest := crypto.SHA384.New()
	digest.Write([]byte("release v1.2.3"))
	signature, err := client.SignDigest(ctx, "release",
		keywardv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_ECDSA_SHA384, digest.Sum(nil),
		keyward.SignOptions{Purpose: "release v1.2.3"})
	switch status.Code(err) {
	case codes.OK:
		fmt.Printf("%d-byte DER signature by key version %q\n", len(signature.Bytes), signature.KeyVersion)
	case codes.NotFound:
		log.Fatalf("no such key: %v", err)
	case codes.PermissionDenied:
		log.Fatalf("the key's policy refuses this program: %v", err)
	default:
		log.Fatal(err)
	}
}

// A socket that may not be your agent's is refused before anything is sent.
func ExampleDial() {
	client, err := keyward.Dial(context.Background(), "/run/user/1000/keyward/agent.sock",
		keyward.WithTrustedUID(990)) // also accept an agent run by uid 990
	var refused *keyward.TrustError
	if errors.As(err, &refused) {
		log.Fatalf("not talking to %s: %s", refused.Socket, refused.Reason)
	}
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
}

// The algorithm a key spec, a hash and an RSA padding choose: the same table as the Rust
// SDK's algorithm_for.
func ExampleAlgorithmFor() {
	p384, _ := keyward.ParseKeySpec("ec-p384")
	rsa, _ := keyward.ParseKeySpec("rsa-3072")
	ed, _ := keyward.ParseKeySpec("ed25519")
	for _, c := range []struct {
		spec    keywardv1.KeySpec
		hash    crypto.Hash
		padding keyward.Padding
	}{
		{p384, crypto.SHA256, keyward.PKCS1v15},
		{rsa, crypto.SHA512, keyward.PSS},
		{ed, 0, keyward.PKCS1v15},
		{ed, crypto.SHA256, keyward.PKCS1v15},
	} {
		algorithm, err := keyward.AlgorithmFor(c.spec, c.hash, c.padding)
		if err != nil {
			fmt.Println("refused:", err)
			continue
		}
		fmt.Println(keyward.AlgorithmName(algorithm))
	}
	// Output:
	// ecdsa-sha256
	// rsa-pss-sha512
	// ed25519
	// refused: an ed25519 key signs the message itself (crypto.Hash(0)), not a SHA-256 digest
}

// Converting an ECDSA signature from a crypto.Signer's DER to the r||s JOSE, COSE and
// Notation need, and back.
func ExampleECDSADERToRaw() {
	p256, _ := keyward.ParseKeySpec("ec-p256")
	der := []byte{0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x07}
	raw, err := keyward.ECDSADERToRaw(p256, der)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(raw), raw[31], raw[63])
	back, _ := keyward.ECDSARawToDER(p256, raw)
	fmt.Printf("%x\n", back)
	// Output:
	// 64 5 7
	// 3006020105020107
}
