package e2e

import (
	"context"
	"crypto"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	keyward "github.com/keyward/keyward/sdk/go"
)

// The agent's errors reach Go callers with their gRPC status and the agent's message.
func TestAgentErrorsCarryTheirStatus(t *testing.T) {
	client := agent(t)
	_, err := client.Signer(context.Background(), "no-such-key")
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "no-such-key") {
		t.Fatalf("unknown key: %v (%s)", err, status.Code(err))
	}
	var agentErr *keyward.Error
	if !errors.As(err, &agentErr) || agentErr.KeyID != "no-such-key" || agentErr.Op != "get public key" {
		t.Fatalf("errors.As: %+v", agentErr)
	}
	keys, err := client.ListKeys(context.Background())
	if err != nil || len(keys) == 0 {
		t.Fatalf("ListKeys: %d keys, %v", len(keys), err)
	}
	// A digest of the wrong length never reaches the agent.
	signer, err := client.Signer(context.Background(), keys[0].GetKeyId())
	if err != nil {
		t.Fatal(err)
	}
	if keyward.KeySpecName(signer.KeySpec()) != "ed25519" {
		_, err = signer.Sign(nil, []byte("short"), crypto.SHA256)
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("short digest: %v", err)
		}
	}
}
