package keyward

import (
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"

	"github.com/keyward/keyward/sdk/go/keywardv1"
)

// ecdsaSignature is ECDSA-Sig-Value (RFC 3279): SEQUENCE { r INTEGER, s INTEGER }.
type ecdsaSignature struct {
	R, S *big.Int
}

func fieldLen(spec keywardv1.KeySpec) (int, error) {
	switch spec {
	case keywardv1.KeySpec_KEY_SPEC_EC_P256:
		return 32, nil
	case keywardv1.KeySpec_KEY_SPEC_EC_P384:
		return 48, nil
	case keywardv1.KeySpec_KEY_SPEC_EC_P521:
		return 66, nil
	}
	return 0, fmt.Errorf("%s is not an ECDSA key spec (ec-p256, ec-p384, ec-p521)", KeySpecName(spec))
}

// ECDSADERToRaw turns a DER ECDSA-Sig-Value (X.509, crypto.Signer, cosign) into fixed-length
// r||s (IEEE P1363: JOSE, COSE, Notation), each half the curve's field length.
func ECDSADERToRaw(spec keywardv1.KeySpec, der []byte) ([]byte, error) {
	size, err := fieldLen(spec)
	if err != nil {
		return nil, err
	}
	var sig ecdsaSignature
	rest, err := asn1.Unmarshal(der, &sig)
	if err != nil || len(rest) != 0 || sig.R == nil || sig.S == nil {
		return nil, fmt.Errorf("not a valid DER %s ECDSA signature", KeySpecName(spec))
	}
	if sig.R.Sign() <= 0 || sig.S.Sign() <= 0 || sig.R.BitLen() > 8*size || sig.S.BitLen() > 8*size {
		return nil, fmt.Errorf("not a valid DER %s ECDSA signature: r or s out of range", KeySpecName(spec))
	}
	raw := make([]byte, 2*size)
	sig.R.FillBytes(raw[:size])
	sig.S.FillBytes(raw[size:])
	return raw, nil
}

// ECDSARawToDER turns fixed-length r||s into a DER ECDSA-Sig-Value.
func ECDSARawToDER(spec keywardv1.KeySpec, raw []byte) ([]byte, error) {
	size, err := fieldLen(spec)
	if err != nil {
		return nil, err
	}
	if len(raw) != 2*size {
		return nil, fmt.Errorf("not a valid raw r||s %s ECDSA signature: %d bytes, not %d", KeySpecName(spec), len(raw), 2*size)
	}
	r := new(big.Int).SetBytes(raw[:size])
	s := new(big.Int).SetBytes(raw[size:])
	if r.Sign() == 0 || s.Sign() == 0 {
		return nil, errors.New("not a valid raw r||s ECDSA signature: r or s is zero")
	}
	return asn1.Marshal(ecdsaSignature{R: r, S: s})
}
