//! Signs a file with a key held by the keyward agent, then checks the signature locally.
//!
//! ```text
//! cargo run -p keyward-sdk --example sign -- KEY_ID FILE
//! ```
//!
//! The agent is found through `$KEYWARD_SOCK`, else its default socket. The file is hashed here
//! (RSA, ECDSA) and only the digest goes to the agent; an Ed25519 key signs the file's bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyward_sdk::{Client, SignOptions};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [key_id, file] = args.as_slice() else {
        eprintln!("usage: sign KEY_ID FILE");
        std::process::exit(2);
    };
    if let Err(error) = run(key_id, file).await {
        eprintln!("sign: error: {error}");
        std::process::exit(2);
    }
}

async fn run(key_id: &str, file: &str) -> Result<(), Box<dyn std::error::Error>> {
    let message = std::fs::read(file).map_err(|e| format!("cannot read {file:?}: {e}"))?;

    let client = Client::connect_default().await?;
    let options = SignOptions {
        purpose: format!("sdk example: {file}"),
        ..SignOptions::default() // the key's default algorithm, DER for ECDSA
    };
    let signature = client.sign_message(key_id, &message, &options).await?;

    // The agent checked the signature before returning it; check it again here, independently.
    let public_key = client.public_key(key_id).await?;
    keyward_sdk::verify_message(
        &public_key.der,
        signature.algorithm,
        &message,
        &signature.bytes,
        signature.format,
    )?;

    println!(
        "key:       {key_id} ({})",
        public_key.info.key_spec().name()
    );
    println!("algorithm: {}", signature.algorithm.name());
    println!("signature: {}", STANDARD.encode(&signature.bytes));
    println!("verified:  yes");
    Ok(())
}
