package e2e

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	keyward "github.com/keyward/keyward/sdk/go"
)

// agent connects to the daemon the driver (tests/tests/go/go_sdk.rs) started; the test is
// skipped when run without one.
func agent(t *testing.T) *keyward.Client {
	t.Helper()
	if os.Getenv(keyward.SocketEnv) == "" {
		t.Skip("skipped: KEYWARD_SOCK is not set; cargo test -p keyward-tests --test go runs these against a real keywardd")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := keyward.DialDefault(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

func outDir(t *testing.T) string {
	dir := os.Getenv("KEYWARD_E2E_OUT")
	if dir == "" {
		dir = t.TempDir()
	}
	return dir
}

func writePEM(t *testing.T, path string, der []byte) {
	t.Helper()
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func template(name string, ca bool) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	usage := x509.KeyUsageDigitalSignature
	if ca {
		usage |= x509.KeyUsageCertSign
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"keyward e2e"}},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              usage,
		BasicConstraintsValid: true,
		IsCA:                  ca,
	}
}

// Every key in KEYWARD_E2E_KEYS signs a self-signed certificate through x509.CreateCertificate
// (its default algorithm for the key: ECDSA with the curve's hash, RSA PKCS#1 v1.5 SHA-256,
// Ed25519), RSA keys a second one with RSA-PSS; the first key then acts as a CA for the
// second. The driver checks every file with `openssl verify`.
func TestCertificatesSignedThroughTheAgent(t *testing.T) {
	client := agent(t)
	keys := strings.Split(os.Getenv("KEYWARD_E2E_KEYS"), ",")
	if len(keys) < 2 {
		t.Fatalf("KEYWARD_E2E_KEYS names %d keys, want at least 2", len(keys))
	}
	dir := outDir(t)
	ctx := context.Background()
	signers := map[string]*keyward.Signer{}
	for _, id := range keys {
		signer, err := client.Signer(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		signer.Purpose = "go sdk e2e certificate"
		signers[id] = signer
		tmpl := template(id, true)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := cert.CheckSignatureFrom(cert); err != nil {
			t.Fatalf("%s: Go rejects the agent's certificate signature: %v", id, err)
		}
		writePEM(t, filepath.Join(dir, id+".pem"), der)
		if keyward.KeySpecName(signer.KeySpec())[:3] == "rsa" {
			tmpl := template(id+" pss", true)
			tmpl.SignatureAlgorithm = x509.SHA384WithRSAPSS
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
			if err != nil {
				t.Fatalf("%s with PSS: %v", id, err)
			}
			writePEM(t, filepath.Join(dir, id+"-pss.pem"), der)
		}
	}
	// keys[0] as the CA of a leaf for keys[1].
	caDER, err := os.ReadFile(filepath.Join(dir, keys[0]+".pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(caDER)
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	leaf := template(keys[1]+" leaf", false)
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, signers[keys[1]].Public(), signers[keys[0]])
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "leaf.pem"), der)
}

// A Signer is no Decrypter in disguise: decryption is refused with a clear error.
func TestDecryptionIsRefused(t *testing.T) {
	client := agent(t)
	keys := strings.Split(os.Getenv("KEYWARD_E2E_KEYS"), ",")
	signer, err := client.Signer(context.Background(), keys[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := signer.Decrypt(rand.Reader, []byte("secret"), nil); err == nil || !strings.Contains(err.Error(), "only signs") {
		t.Fatalf("Decrypt: %v", err)
	}
}
