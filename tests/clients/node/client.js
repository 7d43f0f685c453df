// A keyward client on @grpc/grpc-js with its default channel options.
//
// Usage: node client.js PROTO_DIR SOCKET KEY_ID MISSING_KEY_ID MESSAGE_FILE
//
// @grpc/proto-loader reads PROTO_DIR/keyward/v1/keyward.proto at run time: no generated code.
// Prints one JSON object: the key ids, the public key PEM of KEY_ID, a SHA-256 ECDSA
// signature (DER, base64) over MESSAGE_FILE, and the status of a call for MISSING_KEY_ID.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 30000);
    client[method](request, { deadline }, (error, response) =>
      error ? reject(error) : resolve(response));
  });
}

async function main() {
  const [protoDir, socket, keyId, missing, messageFile] = process.argv.slice(2);
  const definition = protoLoader.loadSync('keyward/v1/keyward.proto', {
    includeDirs: [protoDir],
    keepCase: true,
    enums: String,
    longs: String,
    defaults: true,
    oneofs: true,
  });
  const keyward = grpc.loadPackageDefinition(definition).keyward.v1;
  // The "unix:" target with default options (grpc-js sends "localhost" as :authority).
  const signer = new keyward.Signer(`unix:${socket}`, grpc.credentials.createInsecure());
  const digest = crypto.createHash('sha256').update(fs.readFileSync(messageFile)).digest();

  const keys = await call(signer, 'ListKeys', {});
  const publicKey = await call(signer, 'GetPublicKey', { key_id: keyId });
  const signature = await call(signer, 'Sign', {
    key_id: keyId,
    algorithm: 'SIGNATURE_ALGORITHM_ECDSA_SHA256',
    digest,
    format: 'SIGNATURE_FORMAT_DER',
    purpose: 'grpc-js client test',
  });
  let error = { code: 'OK', message: '' };
  try {
    await call(signer, 'GetPublicKey', { key_id: missing });
  } catch (e) {
    const name = Object.keys(grpc.status).find((k) => grpc.status[k] === e.code);
    error = { code: name, message: e.details };
  }
  signer.close();
  console.log(JSON.stringify({
    keys: keys.keys.map((k) => k.key_id),
    public_key_pem: publicKey.public_key_pem,
    signature: Buffer.from(signature.signature).toString('base64'),
    error_code: error.code,
    error_message: error.message,
  }));
}

main().catch((e) => {
  console.error(`error: ${e.message}`);
  process.exit(1);
});
