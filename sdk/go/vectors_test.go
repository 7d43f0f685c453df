package keyward

import (
	"bytes"
	"crypto"
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
)

// The test vectors shared with the Rust SDK (sdk/tests/vectors.rs): digests, the algorithm a
// key spec, hash and padding choose, and ECDSA DER <-> raw encodings. Made by
// sdk/testdata/make_vectors.py with Python's hashlib and cryptography.
type vectors struct {
	Digests []struct {
		InputHex string `json:"input_hex"`
		SHA256   string `json:"sha256"`
		SHA384   string `json:"sha384"`
		SHA512   string `json:"sha512"`
	} `json:"digests"`
	Algorithms []struct {
		KeySpec   string  `json:"key_spec"`
		Hash      string  `json:"hash"`
		Padding   string  `json:"padding"`
		Algorithm *string `json:"algorithm"`
	} `json:"algorithms"`
	ECDSA []struct {
		KeySpec string `json:"key_spec"`
		RawHex  string `json:"raw_hex"`
		DERHex  string `json:"der_hex"`
	} `json:"ecdsa"`
}

func loadVectors(t *testing.T) vectors {
	t.Helper()
	text, err := os.ReadFile("../testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(text, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVectorDigests(t *testing.T) {
	v := loadVectors(t)
	if len(v.Digests) == 0 {
		t.Fatal("no digest vectors")
	}
	for _, c := range v.Digests {
		input := unhex(t, c.InputHex)
		for hash, want := range map[crypto.Hash]string{crypto.SHA256: c.SHA256, crypto.SHA384: c.SHA384, crypto.SHA512: c.SHA512} {
			h := hash.New()
			h.Write(input)
			if got := hex.EncodeToString(h.Sum(nil)); got != want {
				t.Errorf("%s of %s: %s, want %s", hash, c.InputHex, got, want)
			}
		}
	}
}

var vectorHashes = map[string]crypto.Hash{
	"none": 0, "sha1": crypto.SHA1, "sha224": crypto.SHA224,
	"sha256": crypto.SHA256, "sha384": crypto.SHA384, "sha512": crypto.SHA512,
}

func TestVectorAlgorithmChoice(t *testing.T) {
	v := loadVectors(t)
	if len(v.Algorithms) < 50 {
		t.Fatalf("only %d algorithm vectors", len(v.Algorithms))
	}
	for _, c := range v.Algorithms {
		spec, ok := ParseKeySpec(c.KeySpec)
		if !ok {
			t.Fatalf("unknown key spec %q", c.KeySpec)
		}
		hash, ok := vectorHashes[c.Hash]
		if !ok {
			t.Fatalf("unknown hash %q", c.Hash)
		}
		padding := PKCS1v15
		if c.Padding == "pss" {
			padding = PSS
		}
		got, err := AlgorithmFor(spec, hash, padding)
		switch {
		case c.Algorithm == nil && err == nil:
			t.Errorf("%+v: chose %s, want a refusal", c, AlgorithmName(got))
		case c.Algorithm != nil && err != nil:
			t.Errorf("%+v: %v, want %s", c, err, *c.Algorithm)
		case c.Algorithm != nil && AlgorithmName(got) != *c.Algorithm:
			t.Errorf("%+v: chose %s, want %s", c, AlgorithmName(got), *c.Algorithm)
		}
	}
}

func TestVectorECDSAEncodings(t *testing.T) {
	v := loadVectors(t)
	if len(v.ECDSA) == 0 {
		t.Fatal("no ECDSA vectors")
	}
	for _, c := range v.ECDSA {
		spec, _ := ParseKeySpec(c.KeySpec)
		raw, der := unhex(t, c.RawHex), unhex(t, c.DERHex)
		gotDER, err := ECDSARawToDER(spec, raw)
		if err != nil || !bytes.Equal(gotDER, der) {
			t.Errorf("%s raw->der: %x (%v), want %x", c.KeySpec, gotDER, err, der)
		}
		gotRaw, err := ECDSADERToRaw(spec, der)
		if err != nil || !bytes.Equal(gotRaw, raw) {
			t.Errorf("%s der->raw: %x (%v), want %x", c.KeySpec, gotRaw, err, raw)
		}
	}
	p256, _ := ParseKeySpec("ec-p256")
	rsa, _ := ParseKeySpec("rsa-2048")
	if _, err := ECDSADERToRaw(p256, []byte{0x30, 0x00}); err == nil {
		t.Error("an empty SEQUENCE was accepted as a signature")
	}
	if _, err := ECDSARawToDER(p256, make([]byte, 63)); err == nil {
		t.Error("63 bytes were accepted as a P-256 r||s")
	}
	if _, err := ECDSARawToDER(rsa, make([]byte, 64)); err == nil {
		t.Error("an RSA key spec was accepted for ECDSA")
	}
}
