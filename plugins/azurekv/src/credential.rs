//! Entra ID credentials: which identity keyward uses, made from the settings and the standard
//! `AZURE_*` environment variables with the official `azure_identity` crate.
//!
//! | `credential` | reads | `azure_identity` type |
//! | --- | --- | --- |
//! | `environment` | `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, and `AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH` (PEM or PKCS#12, mode 0600; `AZURE_CLIENT_CERTIFICATE_PASSWORD`) | `ClientSecretCredential` / `ClientCertificateCredential` |
//! | `workload_identity` | `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` | `WorkloadIdentityCredential` |
//! | `managed_identity` | `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` (App Service style), else IMDS | `ManagedIdentityCredential` |
//! | `azure_cli` | `az account get-access-token` | `AzureCliCredential` |
//! | `default` | the four above, in that order; the first that gives a token is kept | — |
//!
//! `client_id` / `tenant_id` in the settings win over `AZURE_CLIENT_ID` / `AZURE_TENANT_ID`
//! (for a managed identity, `client_id` selects a user-assigned identity). Every error names
//! the identity ([`Identity::describe`]) and never a secret: secrets are only ever held in the
//! SDK's redacting `Secret` types.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use azure_core::credentials::{
    AccessToken, Secret, SecretBytes, TokenCredential, TokenRequestOptions,
};
use azure_core::http::ClientOptions;
use azure_identity::{
    AzureCliCredential, ClientAssertionCredentialOptions, ClientCertificateCredential,
    ClientCertificateCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use keyward_plugin_api::BackendError;
use keyward_plugin_api::secret::check_private_mode;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::PKey;
use openssl::x509::X509;
use zeroize::Zeroizing;

use crate::settings::{AzureKvSettings, CredentialKind};

/// One credential and the words that name it in messages.
struct Member {
    label: String,
    credential: Arc<dyn TokenCredential>,
}

/// The identity keyward authenticates as: one credential, or the `default` chain.
pub struct Identity {
    kind: CredentialKind,
    members: Vec<Member>,
    /// Chain members that could not even be set up, and why.
    skipped: Vec<String>,
    /// The chain member that last gave a token.
    chosen: Mutex<Option<usize>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("identity", &self.describe())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Sets up the credential of `settings` (reads the environment and any certificate file;
    /// no network). `options` are the client options of the credentials' own HTTP calls.
    pub fn new(settings: &AzureKvSettings, options: &ClientOptions) -> Result<Self, BackendError> {
        let make = |kind| make_member(kind, settings, options);
        let (members, skipped) = if settings.credential == CredentialKind::Default {
            let mut members = Vec::new();
            let mut skipped = Vec::new();
            for kind in &CredentialKind::ALL[..4] {
                match make(*kind) {
                    Ok(member) => members.push(member),
                    Err(why) => skipped.push(format!("{}: {why}", kind.name())),
                }
            }
            (members, skipped)
        } else {
            let member = make(settings.credential).map_err(|why| {
                BackendError::PermissionDenied(format!(
                    "cannot set up credential = {:?}: {why}",
                    settings.credential.name()
                ))
            })?;
            (vec![member], Vec::new())
        };
        if members.is_empty() {
            return Err(BackendError::PermissionDenied(format!(
                "no credential of the default chain can be set up ({})",
                skipped.join("; ")
            )));
        }
        Ok(Identity {
            kind: settings.credential,
            members,
            skipped,
            chosen: Mutex::new(None),
        })
    }

    /// Names the identity for messages: the credential kind, client id, tenant and where the
    /// secret comes from (never the secret).
    pub fn describe(&self) -> String {
        let chosen = *self.chosen.lock().expect("identity lock");
        match (self.kind, chosen) {
            (CredentialKind::Default, Some(i)) => {
                format!("{} (chosen by the default chain)", self.members[i].label)
            }
            (CredentialKind::Default, None) => format!(
                "the default credential chain ({})",
                self.members
                    .iter()
                    .map(|m| m.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", then ")
            ),
            _ => self.members[0].label.clone(),
        }
    }
}

#[async_trait::async_trait]
impl TokenCredential for Identity {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let chosen = *self.chosen.lock().expect("identity lock");
        if let Some(i) = chosen {
            return self.members[i].credential.get_token(scopes, options).await;
        }
        let mut failures = self.skipped.clone();
        for (i, member) in self.members.iter().enumerate() {
            match member.credential.get_token(scopes, options.clone()).await {
                Ok(token) => {
                    if self.kind == CredentialKind::Default {
                        tracing::info!(identity = %member.label, "the default credential chain got a token");
                        *self.chosen.lock().expect("identity lock") = Some(i);
                    }
                    return Ok(token);
                }
                Err(e) if self.members.len() == 1 => return Err(e),
                Err(e) => failures.push(format!("{}: {}", member.label, crate::error::chain(&e))),
            }
        }
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            format!(
                "no credential of the default chain gave a token: {}",
                failures.join("; ")
            ),
        ))
    }
}

/// The value of the setting, else of the environment variable `var`.
fn setting_or_env(setting: Option<&String>, var: &str) -> Option<String> {
    setting
        .cloned()
        .or_else(|| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
}

fn required(setting: Option<&String>, var: &str, what: &str) -> Result<String, String> {
    setting_or_env(setting, var).ok_or_else(|| format!("{var} is not set (or set {what})"))
}

fn make_member(
    kind: CredentialKind,
    settings: &AzureKvSettings,
    options: &ClientOptions,
) -> Result<Member, String> {
    let sdk = |e: azure_core::Error| crate::error::chain(&e);
    let client_id = settings.client_id.as_ref();
    let tenant_id = settings.tenant_id.as_ref();
    match kind {
        CredentialKind::Environment => {
            let tenant = required(tenant_id, "AZURE_TENANT_ID", "tenant_id")?;
            let client = required(client_id, "AZURE_CLIENT_ID", "client_id")?;
            let who = format!("service principal {client} in tenant {tenant}");
            if let Some(secret) = std::env::var("AZURE_CLIENT_SECRET")
                .ok()
                .filter(|s| !s.is_empty())
            {
                let options = ClientSecretCredentialOptions {
                    client_options: options.clone(),
                };
                let credential = ClientSecretCredential::new(
                    &tenant,
                    client.clone(),
                    Secret::new(secret),
                    Some(options),
                )
                .map_err(sdk)?;
                return Ok(Member {
                    label: format!("{who} (client secret from AZURE_CLIENT_SECRET)"),
                    credential,
                });
            }
            let Some(path) = std::env::var_os("AZURE_CLIENT_CERTIFICATE_PATH")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
            else {
                return Err(format!(
                    "for {who}, set AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH"
                ));
            };
            let password = std::env::var("AZURE_CLIENT_CERTIFICATE_PASSWORD")
                .ok()
                .map(Zeroizing::new);
            let pkcs12 = certificate_pkcs12(&path, password.as_ref().map(|p| p.as_str()))?;
            let options = ClientCertificateCredentialOptions {
                client_options: options.clone(),
                password: password.map(|p| Secret::new(p.to_string())),
            };
            let credential = ClientCertificateCredential::new(
                tenant,
                client,
                SecretBytes::new(pkcs12.to_vec()),
                Some(options),
            )
            .map_err(sdk)?;
            Ok(Member {
                label: format!("{who} (certificate {})", path.display()),
                credential,
            })
        }
        CredentialKind::WorkloadIdentity => {
            let token_file = std::env::var_os("AZURE_FEDERATED_TOKEN_FILE")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .ok_or("AZURE_FEDERATED_TOKEN_FILE is not set")?;
            let tenant = required(tenant_id, "AZURE_TENANT_ID", "tenant_id")?;
            let client = required(client_id, "AZURE_CLIENT_ID", "client_id")?;
            let label = format!(
                "workload identity {client} in tenant {tenant} (token file {})",
                token_file.display()
            );
            let options = WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: options.clone(),
                },
                client_id: Some(client),
                tenant_id: Some(tenant),
                token_file_path: Some(token_file),
            };
            let credential = WorkloadIdentityCredential::new(Some(options)).map_err(sdk)?;
            Ok(Member { label, credential })
        }
        CredentialKind::ManagedIdentity => {
            let which = match client_id {
                Some(id) => format!("user-assigned managed identity {id}"),
                None => "system-assigned managed identity".to_string(),
            };
            let source = match (
                std::env::var("IDENTITY_ENDPOINT"),
                std::env::var_os("IDENTITY_HEADER"),
            ) {
                (Ok(endpoint), Some(_)) => format!("App Service endpoint {endpoint}"),
                _ => "instance metadata service".to_string(),
            };
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.cloned().map(UserAssignedId::ClientId),
                client_options: options.clone(),
            };
            let credential = ManagedIdentityCredential::new(Some(options)).map_err(sdk)?;
            Ok(Member {
                label: format!("{which} via the {source}"),
                credential,
            })
        }
        CredentialKind::AzureCli => {
            let credential = AzureCliCredential::new(None).map_err(sdk)?;
            Ok(Member {
                label: "the Azure CLI account (az login)".to_string(),
                credential,
            })
        }
        CredentialKind::Default => Err("the default chain cannot contain itself".to_string()),
    }
}

/// The client certificate as PKCS#12 DER: a `.pfx`/`.p12` file as it is, a PEM file (the
/// private key and the certificate, chain after it) packed into one.
fn certificate_pkcs12(path: &Path, password: Option<&str>) -> Result<Zeroizing<Vec<u8>>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read AZURE_CLIENT_CERTIFICATE_PATH {shown}: {e}"))?;
    check_private_mode(&meta, path, "client certificate").map_err(|e| e.to_string())?;
    let bytes = Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| format!("cannot read AZURE_CLIENT_CERTIFICATE_PATH {shown}: {e}"))?,
    );
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(bytes);
    }
    let key = PKey::private_key_from_pem(&bytes)
        .map_err(|_| format!("the PEM file {shown} holds no readable private key"))?;
    let mut certs = X509::stack_from_pem(&bytes)
        .map_err(|_| format!("the PEM file {shown} holds no readable certificate"))?
        .into_iter();
    let cert = certs
        .next()
        .ok_or_else(|| format!("the PEM file {shown} holds no certificate"))?;
    let mut builder = Pkcs12::builder();
    builder.pkey(&key).cert(&cert);
    let chain = certs.collect::<Vec<_>>();
    if !chain.is_empty() {
        let mut stack = openssl::stack::Stack::new().map_err(|e| e.to_string())?;
        for ca in chain {
            stack.push(ca).map_err(|e| e.to_string())?;
        }
        builder.ca(stack);
    }
    let pkcs12 = builder
        .build2(password.unwrap_or(""))
        .and_then(|p| p.to_der())
        .map_err(|e| format!("cannot pack the client certificate {shown}: {e}"))?;
    Ok(Zeroizing::new(pkcs12))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::rsa::Rsa;
    use openssl::x509::X509Name;

    use super::*;

    #[test]
    fn pem_certificates_are_packed_and_must_be_private() {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509Name::builder().unwrap();
        name.append_entry_by_text("CN", "keyward-test").unwrap();
        let name = name.build();
        let mut cert = X509::builder().unwrap();
        cert.set_subject_name(&name).unwrap();
        cert.set_issuer_name(&name).unwrap();
        cert.set_pubkey(&key).unwrap();
        cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        cert.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = cert.build();
        let dir = std::env::temp_dir().join(format!("keyward-azurekv-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("client.pem");
        let mut pem = key.private_key_to_pem_pkcs8().unwrap();
        pem.extend(cert.to_pem().unwrap());
        std::fs::write(&path, &pem).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = certificate_pkcs12(&path, None).unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let der = certificate_pkcs12(&path, None).unwrap();
        let parsed = Pkcs12::from_der(&der).unwrap().parse2("").unwrap();
        assert_eq!(
            parsed.cert.unwrap().to_der().unwrap(),
            cert.to_der().unwrap()
        );
        assert!(parsed.pkey.unwrap().public_eq(&key));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
