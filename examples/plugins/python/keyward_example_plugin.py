#!/usr/bin/env python3
"""An example keyward backend plugin in Python: one software EC P-256 key.

It shows everything a plugin in any language needs (docs/plugins.md): the Python code is
generated at start-up from proto/keyward/plugin/v1/plugin.proto, the same file keywardd is
built from; settings arrive as JSON on stdin; the plugin listens on $KEYWARD_PLUGIN_SOCKET and
prints the handshake line; it signs digests with the `cryptography` package.

Settings (the [[backend]] table, minus name/type/command/env/isolation/timeout):
  key_name            the key's name (default "example-p256"); keywardd lists it as
                      "<backend>/<key_name>"
  key_file            optional PKCS#8 PEM file with an EC key; otherwise a key is generated at
                      start-up and lives in memory only
  proto_dir           where the .proto files are (default: ../../../proto from this file)
  sign_delay_seconds  sleep this long in Sign (to demonstrate keywardd's call deadline)

Run it through keywardd:
  [[backend]]
  name = "py"
  type = "external"
  command = ["/path/to/venv/bin/python3", "/path/to/keyward_example_plugin.py"]
"""

import json
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent import futures

HANDSHAKE = "keyward-plugin v1 ready"
PROTOCOL_VERSION = 1


def log(message):
    # keywardd puts every stderr line in its log, prefixed with the backend name.
    print(message, file=sys.stderr, flush=True)


def generate_code(proto_dir):
    """Compiles the plugin .proto (and the keyward.v1 one it imports) into a temp dir."""
    from grpc_tools import protoc
    import grpc_tools

    out = tempfile.mkdtemp(prefix="keyward-plugin-py-")
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = [
        "protoc",
        f"-I{proto_dir}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "keyward/v1/keyward.proto",
        "keyward/plugin/v1/plugin.proto",
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {proto_dir}")
    for package in ("keyward", "keyward/v1", "keyward/plugin", "keyward/plugin/v1"):
        open(os.path.join(out, package, "__init__.py"), "a").close()
    sys.path.insert(0, out)


SETTINGS = {
    "key_name": str,
    "key_file": str,
    "proto_dir": str,
    "sign_delay_seconds": (int, float),
}


def settings_problem(settings):
    """(setting, message) for the first bad setting, or None: what --check-settings reports."""
    if not isinstance(settings, dict):
        return None, "the settings must be a JSON object"
    for key, value in settings.items():
        if key not in SETTINGS:
            return key, f"unknown setting `{key}`; this plugin takes {', '.join(SETTINGS)}"
        if not isinstance(value, SETTINGS[key]) or isinstance(value, bool):
            return key, f"`{key}` has the wrong type ({type(value).__name__})"
    return None


def check_settings():
    """`--check-settings`: keywardd runs this before starting the plugin (docs/plugins.md).
    One JSON line on stdout; exit 0 for good settings, 2 for a bad one. Nothing is created."""
    try:
        problem = settings_problem(json.loads(sys.stdin.read() or "{}"))
    except ValueError as e:
        problem = (None, f"the settings are not JSON: {e}")
    if problem is None:
        print(json.dumps({"keyward_check": 1, "ok": True}), flush=True)
        return 0
    setting, message = problem
    answer = {"keyward_check": 1, "ok": False, "message": message}
    if setting is not None:
        answer["setting"] = setting
    print(json.dumps(answer), flush=True)
    return 2


def main():
    if "--check-settings" in sys.argv[1:]:
        return check_settings()
    socket_path = os.environ.get("KEYWARD_PLUGIN_SOCKET")
    if not socket_path:
        log("this is a keyward plugin: keywardd starts it (KEYWARD_PLUGIN_SOCKET is not set)")
        return 2
    settings = json.loads(sys.stdin.read() or "{}")
    here = os.path.dirname(os.path.abspath(__file__))
    generate_code(settings.get("proto_dir", os.path.join(here, "..", "..", "..", "proto")))

    import grpc
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, utils
    from keyward.v1 import keyward_pb2 as api
    from keyward.plugin.v1 import plugin_pb2 as pb
    from keyward.plugin.v1 import plugin_pb2_grpc as pb_grpc

    key_name = settings.get("key_name", "example-p256")
    delay = float(settings.get("sign_delay_seconds", 0))
    if "key_file" in settings:
        with open(settings["key_file"], "rb") as f:
            private_key = serialization.load_pem_private_key(f.read(), password=None)
    else:
        private_key = ec.generate_private_key(ec.SECP256R1())
    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or private_key.curve.name != "secp256r1":
        log("key_file must hold an EC P-256 key")
        return 2
    spki = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hashes_by_algorithm = {
        api.SIGNATURE_ALGORITHM_ECDSA_SHA256: hashes.SHA256(),
        api.SIGNATURE_ALGORITHM_ECDSA_SHA384: hashes.SHA384(),
        api.SIGNATURE_ALGORITHM_ECDSA_SHA512: hashes.SHA512(),
    }

    def description():
        return pb.KeyDescription(reference=key_name, spec=api.KEY_SPEC_EC_P256, public_key_der=spki)

    class Backend(pb_grpc.BackendServicer):
        def Describe(self, request, context):
            return pb.DescribeResponse(
                protocol_version=PROTOCOL_VERSION,
                backend_type="example-python",
                description="keyward example plugin (Python)",
            )

        def ListKeys(self, request, context):
            return pb.ListKeysResponse(keys=[description()])

        def DescribeKey(self, request, context):
            if request.reference != key_name:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no key {request.reference!r} in the example plugin; it has {key_name!r}")
            return description()

        def Sign(self, request, context):
            if request.reference != key_name:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no key {request.reference!r} in the example plugin")
            hash_algorithm = hashes_by_algorithm.get(request.algorithm)
            if hash_algorithm is None or request.WhichOneof("input") != "digest":
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the example key signs ECDSA over a digest only")
            if delay:
                # Said first, so that a caller can tell the request is being served.
                log(f"sign: waiting {delay:g} s (sign_delay_seconds) before answering")
                time.sleep(delay)
            signature = private_key.sign(request.digest, ec.ECDSA(utils.Prehashed(hash_algorithm)))
            return pb.SignResponse(signature=signature, ecdsa_format=pb.ECDSA_FORMAT_DER)

        def GenerateKey(self, request, context):
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "the example plugin holds one key and cannot generate more")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_BackendServicer_to_server(Backend(), server)
    server.add_insecure_port(f"unix://{socket_path}")
    server.start()
    os.chmod(socket_path, 0o600)
    print(HANDSHAKE, flush=True)
    log(f"serving key {key_name!r} on {socket_path}")

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    server.stop(grace=2).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
