package e2e

import (
	"context"
	"crypto"
	"crypto/rsa"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/notaryproject/notation-go"
	"github.com/notaryproject/notation-go/registry"
	"github.com/notaryproject/notation-go/signer"
	"github.com/notaryproject/notation-plugin-framework-go/plugin"
	"oras.land/oras-go/v2/registry/remote"

	keyward "github.com/keyward/keyward/sdk/go"
)

// agentPlugin is an in-process notation "plugin" around the SDK's crypto.Signer: notation-go's
// signer package builds and checks the envelope, and every signature is the agent's. It
// speaks notation's RAW contract without a process: the payload is hashed here, ECDSA
// signatures are converted from the crypto.Signer's DER to the r||s JWS and COSE need, RSA
// signs PSS with salt = hash length.
type agentPlugin struct {
	signer *keyward.Signer
}

func (p *agentPlugin) GetMetadata(context.Context, *plugin.GetMetadataRequest) (*plugin.GetMetadataResponse, error) {
	return &plugin.GetMetadataResponse{
		Name: "keyward-go-sdk", Description: "keyward agent keys through the Go SDK", Version: "0.1.0",
		URL: "https://github.com/keyward/keyward", SupportedContractVersions: []string{plugin.ContractVersion},
		Capabilities: []plugin.Capability{plugin.CapabilitySignatureGenerator},
	}, nil
}

var notaryKeySpecs = map[string]plugin.KeySpec{
	"ec-p256": plugin.KeySpecEC256, "ec-p384": plugin.KeySpecEC384, "ec-p521": plugin.KeySpecEC521,
	"rsa-2048": plugin.KeySpecRSA2048, "rsa-3072": plugin.KeySpecRSA3072, "rsa-4096": plugin.KeySpecRSA4096,
}

func (p *agentPlugin) DescribeKey(_ context.Context, req *plugin.DescribeKeyRequest) (*plugin.DescribeKeyResponse, error) {
	spec, ok := notaryKeySpecs[keyward.KeySpecName(p.signer.KeySpec())]
	if !ok {
		return nil, fmt.Errorf("key %q cannot make Notary signatures", req.KeyID)
	}
	return &plugin.DescribeKeyResponse{KeyID: req.KeyID, KeySpec: spec}, nil
}

func (p *agentPlugin) GenerateSignature(ctx context.Context, req *plugin.GenerateSignatureRequest) (*plugin.GenerateSignatureResponse, error) {
	hashes := map[plugin.HashAlgorithm]crypto.Hash{
		plugin.HashAlgorithmSHA256: crypto.SHA256, plugin.HashAlgorithmSHA384: crypto.SHA384, plugin.HashAlgorithmSHA512: crypto.SHA512,
	}
	hash, ok := hashes[req.Hash]
	if !ok {
		return nil, fmt.Errorf("unsupported hash %q", req.Hash)
	}
	h := hash.New()
	h.Write(req.Payload)
	digest := h.Sum(nil)
	bits := strings.TrimPrefix(string(req.Hash), "SHA-")
	var opts crypto.SignerOpts = hash
	algorithm := plugin.SignatureAlgorithm("ECDSA-SHA-" + bits)
	if strings.HasPrefix(string(req.KeySpec), "RSA") {
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: hash}
		algorithm = plugin.SignatureAlgorithm("RSASSA-PSS-SHA-" + bits)
	}
	signature, err := p.signer.SignContext(ctx, digest, opts)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(string(req.KeySpec), "EC") {
		if signature, err = keyward.ECDSADERToRaw(p.signer.KeySpec(), signature); err != nil {
			return nil, err
		}
	}
	return &plugin.GenerateSignatureResponse{
		KeyID: req.KeyID, Signature: signature, SigningAlgorithm: algorithm,
		CertificateChain: p.signer.PublicKey().CertificateChain,
	}, nil
}

func (p *agentPlugin) GenerateEnvelope(context.Context, *plugin.GenerateEnvelopeRequest) (*plugin.GenerateEnvelopeResponse, error) {
	return nil, fmt.Errorf("agentPlugin signs RAW only")
}

// KEYWARD_E2E_NOTATION_KEY (a key with a certificate chain) signs KEYWARD_E2E_JWS_IMAGE with a
// JWS envelope and KEYWARD_E2E_COSE_IMAGE with a COSE envelope through notation-go, pushing the
// signatures to the registry; the driver then runs `notation verify` on both.
func TestNotationGoSignsThroughTheAgent(t *testing.T) {
	client := agent(t)
	keyID := os.Getenv("KEYWARD_E2E_NOTATION_KEY")
	if keyID == "" {
		t.Fatal("KEYWARD_E2E_NOTATION_KEY is not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	agentSigner, err := client.Signer(ctx, keyID)
	if err != nil {
		t.Fatal(err)
	}
	agentSigner.Purpose = "go sdk e2e notation"
	if len(agentSigner.PublicKey().CertificateChain) == 0 {
		t.Fatalf("key %q has no certificate chain", keyID)
	}
	notationSigner, err := signer.NewFromPlugin(&agentPlugin{signer: agentSigner}, keyID, nil)
	if err != nil {
		t.Fatal(err)
	}
	for envelope, variable := range map[string]string{
		"application/jose+json": "KEYWARD_E2E_JWS_IMAGE",
		"application/cose":      "KEYWARD_E2E_COSE_IMAGE",
	} {
		reference := os.Getenv(variable)
		repoName, _, found := strings.Cut(reference, "@")
		if !found {
			t.Fatalf("%s=%q is not a repository@digest reference", variable, reference)
		}
		repo, err := remote.NewRepository(repoName)
		if err != nil {
			t.Fatal(err)
		}
		repo.PlainHTTP = true
		descriptor, err := notation.Sign(ctx, notationSigner, registry.NewRepository(repo), notation.SignOptions{
			SignerSignOptions: notation.SignerSignOptions{SignatureMediaType: envelope},
			ArtifactReference: reference,
		})
		if err != nil {
			t.Fatalf("notation-go %s: %v", envelope, err)
		}
		t.Logf("signed %s (%s): %s", reference, envelope, descriptor.Digest)
	}
}
