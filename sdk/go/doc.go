// Package keyward is the Go client of the keyward signing agent (keywardd).
//
// The agent holds private keys in its backends (local files, PKCS#11 HSMs, YubiKeys, cloud
// KMSs, Vault/OpenBao); this package asks it for what a client may have: the list of keys, a
// public key with its certificate chain, and signatures. Signer makes any agent key a
// crypto.Signer, so Go signing code (x509.CreateCertificate, crypto/tls, notation-go,
// sigstore) uses the agent without ever holding a private key.
//
// Dial finds the socket like every keyward client ($KEYWARD_SOCK, else
// $XDG_RUNTIME_DIR/keyward/agent.sock, else $TMPDIR/keyward-<uid>/agent.sock) and refuses a
// socket that may not be your agent's before sending anything: see Dial and TrustError.
//
// Errors carry the gRPC status: status.Code(err) is codes.NotFound for an unknown key,
// codes.PermissionDenied for a policy refusal, and so on. The generated gRPC stubs are in
// the keywardv1 package (regenerate them with sdk/go/generate.sh).
package keyward
