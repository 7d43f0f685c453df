package e2e

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	keyward "github.com/keyward/keyward/sdk/go"
)

// The driver gives the running agent's socket directory to another uid
// (KEYWARD_E2E_FOREIGN_UID): the SDK refuses it before sending anything, says how to fix it,
// and accepts it once that uid is trusted (WithTrustedUID, KEYWARD_AGENT_UID).
func TestTrustChecksAgainstTheAgent(t *testing.T) {
	foreign := os.Getenv("KEYWARD_E2E_FOREIGN_UID")
	if foreign == "" {
		t.Skip("skipped: KEYWARD_E2E_FOREIGN_UID is not set; the go part of scripts/test sets it when it runs as root")
	}
	uid, err := strconv.ParseUint(foreign, 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	socket := keyward.SocketPath()

	_, err = keyward.DialDefault(ctx)
	var refused *keyward.TrustError
	if !errors.As(err, &refused) || status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a socket directory of uid %d was accepted: %v", uid, err)
	}
	for _, want := range []string{"belongs to uid " + foreign, "KEYWARD_AGENT_UID=" + foreign} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}

	client, err := keyward.Dial(ctx, socket, keyward.WithTrustedUID(uint32(uid)))
	if err != nil {
		t.Fatalf("with uid %s trusted: %v", foreign, err)
	}
	defer client.Close()
	if _, err := client.ListKeys(ctx); err != nil {
		t.Fatal(err)
	}

	t.Setenv(keyward.AgentUIDEnv, foreign)
	viaEnv, err := keyward.DialDefault(ctx)
	if err != nil {
		t.Fatalf("with %s=%s: %v", keyward.AgentUIDEnv, foreign, err)
	}
	defer viaEnv.Close()
	if _, err := viaEnv.ListKeys(ctx); err != nil {
		t.Fatal(err)
	}
}
