// Command keyward-grpc-go-client is a keyward client on grpc-go with its default dial options.
//
// Usage: keyward-grpc-go-client SOCKET KEY_ID MISSING_KEY_ID MESSAGE_FILE
//
// The package keywardpb is generated from proto/keyward/v1/keyward.proto with protoc-gen-go
// and protoc-gen-go-grpc before building (see docs/clients.md); it is not checked in. Prints
// one JSON object: the key ids, the public key PEM of KEY_ID, a SHA-256 ECDSA signature (DER,
// base64) over MESSAGE_FILE, and the status of a call for MISSING_KEY_ID.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "keyward.local/clients/go/keywardpb"
)

type result struct {
	Keys         []string `json:"keys"`
	PublicKeyPEM string   `json:"public_key_pem"`
	Signature    []byte   `json:"signature"` // base64 in JSON
	ErrorCode    string   `json:"error_code"`
	ErrorMessage string   `json:"error_message"`
}

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: keyward-grpc-go-client SOCKET KEY_ID MISSING_KEY_ID MESSAGE_FILE")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2], os.Args[3], os.Args[4]); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(socket, keyID, missing, messageFile string) error {
	message, err := os.ReadFile(messageFile)
	if err != nil {
		return err
	}
	digest := sha256.Sum256(message)
	// The "unix:" target with default options (grpc-go sends "localhost" as :authority).
	conn, err := grpc.NewClient("unix:"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	signer := pb.NewSignerClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var out result
	keys, err := signer.ListKeys(ctx, &pb.ListKeysRequest{})
	if err != nil {
		return fmt.Errorf("ListKeys: %w", err)
	}
	for _, key := range keys.GetKeys() {
		out.Keys = append(out.Keys, key.GetKeyId())
	}
	public, err := signer.GetPublicKey(ctx, &pb.GetPublicKeyRequest{KeyId: keyID})
	if err != nil {
		return fmt.Errorf("GetPublicKey: %w", err)
	}
	out.PublicKeyPEM = public.GetPublicKeyPem()
	signature, err := signer.Sign(ctx, &pb.SignRequest{
		KeyId:     keyID,
		Algorithm: pb.SignatureAlgorithm_SIGNATURE_ALGORITHM_ECDSA_SHA256,
		Input:     &pb.SignRequest_Digest{Digest: digest[:]},
		Format:    pb.SignatureFormat_SIGNATURE_FORMAT_DER,
		Purpose:   "grpc-go client test",
	})
	if err != nil {
		return fmt.Errorf("Sign: %w", err)
	}
	out.Signature = signature.GetSignature()
	_, err = signer.GetPublicKey(ctx, &pb.GetPublicKeyRequest{KeyId: missing})
	st := status.Convert(err)
	out.ErrorCode = codeName(st.Code().String())
	out.ErrorMessage = st.Message()
	return json.NewEncoder(os.Stdout).Encode(out)
}

// codeName turns grpc-go's "NotFound" into the canonical "NOT_FOUND".
func codeName(camel string) string {
	name := make([]rune, 0, len(camel)+4)
	for i, r := range camel {
		if i > 0 && r >= 'A' && r <= 'Z' {
			name = append(name, '_')
		}
		if r >= 'a' && r <= 'z' {
			r -= 'a' - 'A'
		}
		name = append(name, r)
	}
	return string(name)
}
