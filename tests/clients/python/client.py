"""A keyward client on Python grpcio with its default channel options.

Usage: client.py SOCKET KEY_ID MISSING_KEY_ID MESSAGE_FILE
Needs keyward_pb2*.py generated from proto/keyward/v1/keyward.proto on PYTHONPATH (see
docs/clients.md). Prints one JSON object: the key ids, the public key PEM of KEY_ID, a
SHA-256 ECDSA signature (DER, base64) over MESSAGE_FILE, and the status of a call for
MISSING_KEY_ID.
"""

import base64
import hashlib
import json
import sys

import grpc

from keyward.v1 import keyward_pb2, keyward_pb2_grpc


def main() -> None:
    socket, key_id, missing, message_file = sys.argv[1:5]
    with open(message_file, "rb") as f:
        digest = hashlib.sha256(f.read()).digest()
    # The default options: grpc-core sends the %-encoded socket path as :authority.
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        signer = keyward_pb2_grpc.SignerStub(channel)
        keys = signer.ListKeys(keyward_pb2.ListKeysRequest(), timeout=30)
        public = signer.GetPublicKey(keyward_pb2.GetPublicKeyRequest(key_id=key_id), timeout=30)
        signature = signer.Sign(
            keyward_pb2.SignRequest(
                key_id=key_id,
                algorithm=keyward_pb2.SIGNATURE_ALGORITHM_ECDSA_SHA256,
                digest=digest,
                format=keyward_pb2.SIGNATURE_FORMAT_DER,
                purpose="python grpcio client test",
            ),
            timeout=30,
        )
        try:
            signer.GetPublicKey(keyward_pb2.GetPublicKeyRequest(key_id=missing), timeout=30)
            error = {"code": "OK", "message": ""}
        except grpc.RpcError as e:
            error = {"code": e.code().name, "message": e.details()}
    print(
        json.dumps(
            {
                "keys": [k.key_id for k in keys.keys],
                "public_key_pem": public.public_key_pem,
                "signature": base64.b64encode(signature.signature).decode(),
                "error_code": error["code"],
                "error_message": error["message"],
            }
        )
    )


if __name__ == "__main__":
    main()
