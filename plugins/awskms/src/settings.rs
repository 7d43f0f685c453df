//! The `[[backend]]` settings of an `awskms` backend.
//!
//! They say where KMS is (`region`, an optional `endpoint` for a VPC endpoint or a local
//! emulator), which shared-config `profile` to use, whether to list the account's keys
//! (`discover`) and how fast to call KMS (`rate_limit`, `rate_burst`). They never hold
//! credentials: those come from the AWS SDK's default chain (environment, shared config and
//! credentials files, web identity / OIDC, ECS, EC2 instance metadata). The table is checked
//! while it is read, so `keywardd --check-config` refuses a bad one.

use serde::Deserialize;

/// The default client-side request rate, per backend instance: below AWS's default quota of
/// 300 ECC `Sign` requests per second (RSA's is lower: see docs/awskms.md).
pub const DEFAULT_RATE_LIMIT: u32 = 250;
/// The highest `rate_limit` accepted.
const MAX_RATE_LIMIT: u32 = 100_000;

/// The settings of one `awskms` backend, validated.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSettings")]
pub struct AwsKmsSettings {
    /// The AWS region of the keys (`eu-west-1`).
    pub region: String,
    /// An endpoint URL instead of the region's public one (a VPC endpoint, a FIPS endpoint, a
    /// local emulator), without a trailing `/`.
    pub endpoint: Option<String>,
    /// The shared-config profile to take credentials (and their settings) from; `None` uses
    /// `AWS_PROFILE` or `default`.
    pub profile: Option<String>,
    /// Whether `list_keys` lists the account's signing keys (`true`), or only keys named in
    /// the config are served (`false`).
    pub discover: bool,
    /// Requests per second this backend sends to KMS at most (a token bucket).
    pub rate_limit: u32,
    /// How many requests may go at once before the rate applies (the bucket's size).
    pub rate_burst: u32,
    /// `keyward keys delete` schedules the key's deletion after this many days (KMS allows 7
    /// to 30; the deletion can be cancelled until then).
    pub deletion_pending_days: i32,
}

/// The default waiting period before KMS deletes a key (`deletion_pending_days`): KMS's own
/// default and maximum, the longest chance to cancel a mistake.
pub const DEFAULT_DELETION_PENDING_DAYS: i32 = 30;

/// The table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    region: String,
    endpoint: Option<String>,
    profile: Option<String>,
    discover: Option<bool>,
    rate_limit: Option<u32>,
    rate_burst: Option<u32>,
    deletion_pending_days: Option<i32>,
}

impl TryFrom<RawSettings> for AwsKmsSettings {
    type Error = String;

    fn try_from(raw: RawSettings) -> Result<Self, String> {
        let region = check_region(&raw.region)?;
        let endpoint = raw.endpoint.as_deref().map(check_endpoint).transpose()?;
        let profile = match raw.profile.as_deref().map(str::trim) {
            Some("") => {
                return Err(
                    "profile must not be empty; remove it to use AWS_PROFILE or \"default\"".into(),
                );
            }
            Some(profile) if profile.chars().any(|c| c.is_control() || c.is_whitespace()) => {
                return Err(format!(
                    "profile {profile:?} must not contain spaces or control characters"
                ));
            }
            other => other.map(str::to_string),
        };
        let rate_limit = raw.rate_limit.unwrap_or(DEFAULT_RATE_LIMIT);
        if !(1..=MAX_RATE_LIMIT).contains(&rate_limit) {
            return Err(format!(
                "rate_limit = {rate_limit}: give requests per second, 1 to {MAX_RATE_LIMIT}"
            ));
        }
        let rate_burst = raw.rate_burst.unwrap_or(rate_limit);
        if !(1..=MAX_RATE_LIMIT).contains(&rate_burst) {
            return Err(format!(
                "rate_burst = {rate_burst}: give a number of requests, 1 to {MAX_RATE_LIMIT}"
            ));
        }
        let deletion_pending_days = raw
            .deletion_pending_days
            .unwrap_or(DEFAULT_DELETION_PENDING_DAYS);
        if !(7..=30).contains(&deletion_pending_days) {
            return Err(format!(
                "deletion_pending_days = {deletion_pending_days}: KMS waits 7 to 30 days before it deletes a key"
            ));
        }
        Ok(AwsKmsSettings {
            deletion_pending_days,
            region,
            endpoint,
            profile,
            discover: raw.discover.unwrap_or(true),
            rate_limit,
            rate_burst,
        })
    }
}

/// A region name: lowercase letters, digits and `-` (`us-east-1`, `us-gov-west-1`).
fn check_region(region: &str) -> Result<String, String> {
    let region = region.trim();
    let ok = !region.is_empty()
        && region.len() <= 64
        && region.contains('-')
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(region.to_string())
    } else {
        Err(format!(
            "region {region:?} is not an AWS region name such as \"eu-west-1\""
        ))
    }
}

/// An `http(s)://` URL without credentials, query or fragment; returned without a trailing `/`.
fn check_endpoint(endpoint: &str) -> Result<String, String> {
    let url = url::Url::parse(endpoint).map_err(|e| {
        format!("endpoint {endpoint:?} is not a URL ({e}); write https://host[:port]")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "endpoint {endpoint:?} must start with https:// (or http:// for a local emulator)"
        ));
    }
    if url.host_str().is_none() {
        return Err(format!("endpoint {endpoint:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "endpoint must not hold credentials: keyward takes AWS credentials from the SDK's default chain only"
                .to_string(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "endpoint {endpoint:?} must not have a query or a fragment"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<AwsKmsSettings, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let s = parse(r#"{"region": "eu-west-1"}"#).unwrap();
        assert_eq!(
            s,
            AwsKmsSettings {
                region: "eu-west-1".into(),
                endpoint: None,
                profile: None,
                discover: true,
                rate_limit: DEFAULT_RATE_LIMIT,
                rate_burst: DEFAULT_RATE_LIMIT,
                deletion_pending_days: DEFAULT_DELETION_PENDING_DAYS,
            }
        );
    }

    #[test]
    fn everything_set() {
        let s = parse(
            r#"{"region": "us-gov-west-1", "endpoint": "http://127.0.0.1:4599/", "profile": "signer",
                "discover": false, "rate_limit": 20, "rate_burst": 5, "deletion_pending_days": 7}"#,
        )
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:4599"));
        assert_eq!(s.profile.as_deref(), Some("signer"));
        assert!(!s.discover);
        assert_eq!((s.rate_limit, s.rate_burst), (20, 5));
        assert_eq!(s.deletion_pending_days, 7);
        // The burst follows the rate unless it is set.
        let s = parse(r#"{"region": "eu-west-1", "rate_limit": 7}"#).unwrap();
        assert_eq!(s.rate_burst, 7);
    }

    #[test]
    fn bad_tables_are_refused_with_the_reason() {
        for (json, want) in [
            (r#"{}"#, "missing field `region`"),
            (r#"{"region": "Europe"}"#, "not an AWS region name"),
            (r#"{"region": ""}"#, "not an AWS region name"),
            (
                r#"{"region": "eu-west-1", "endpoint": "kms.local:4599"}"#,
                "https://",
            ),
            (
                r#"{"region": "eu-west-1", "endpoint": "https://AKIA:secret@kms.local"}"#,
                "must not hold credentials",
            ),
            (
                r#"{"region": "eu-west-1", "endpoint": "https://kms.local/?x=1"}"#,
                "query",
            ),
            (
                r#"{"region": "eu-west-1", "profile": " "}"#,
                "must not be empty",
            ),
            (
                r#"{"region": "eu-west-1", "rate_limit": 0}"#,
                "rate_limit = 0",
            ),
            (
                r#"{"region": "eu-west-1", "rate_burst": 0}"#,
                "rate_burst = 0",
            ),
            (
                r#"{"region": "eu-west-1", "deletion_pending_days": 6}"#,
                "7 to 30 days",
            ),
            (
                r#"{"region": "eu-west-1", "access_key_id": "AKIA"}"#,
                "unknown field `access_key_id`",
            ),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.contains(want), "{json}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }
}
