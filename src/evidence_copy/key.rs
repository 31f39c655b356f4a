//! The KMS key the encrypted copies are made with (`SNAPSHOT_KMS_KEY_ID`), as EC2's `KmsKeyId`
//! accepts it, and whether a snapshot EC2 describes is encrypted with it.
//!
//! EC2 describes a snapshot's key by its key ARN, whatever form the copy was asked with. A key
//! ARN or key id can be compared with that; an alias cannot, without a KMS call to resolve it,
//! which is why deleting a source needs the key named by ARN or id (see [`KmsKeyRef::names`]).

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KmsKeyRef {
    /// `arn:aws:kms:REGION:ACCOUNT:key/ID`
    KeyArn(String),
    /// `1234abcd-12ab-34cd-56ef-1234567890ab` or `mrk-...` (a multi-Region key).
    KeyId(String),
    /// `alias/NAME` or `arn:aws:kms:REGION:ACCOUNT:alias/NAME`.
    Alias(String),
}

impl KmsKeyRef {
    /// Reads the setting, or says what is wrong with it.
    pub fn parse(value: &str) -> Result<Self, String> {
        if let Some(rest) = value.strip_prefix("arn:") {
            // arn:PARTITION:kms:REGION:ACCOUNT:key/ID | alias/NAME
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let well_formed = parts.len() == 5
                && parts[0].starts_with("aws")
                && parts[1] == "kms"
                && is_region(parts[2])
                && parts[3].len() == 12
                && parts[3].bytes().all(|b| b.is_ascii_digit());
            if well_formed {
                if let Some(id) = parts[4].strip_prefix("key/") {
                    if is_key_id(id) {
                        return Ok(Self::KeyArn(value.to_owned()));
                    }
                }
                if parts[4].strip_prefix("alias/").is_some_and(is_alias_name) {
                    return Ok(Self::Alias(value.to_owned()));
                }
            }
            return Err(
                "expected a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>), an alias ARN, \
                 a key id or alias/<name>"
                    .to_owned(),
            );
        }
        if let Some(name) = value.strip_prefix("alias/") {
            if is_alias_name(name) {
                return Ok(Self::Alias(value.to_owned()));
            }
            return Err("an alias name has 1 to 250 of A-Z a-z 0-9 / _ -".to_owned());
        }
        if is_key_id(value) {
            return Ok(Self::KeyId(value.to_owned()));
        }
        Err(
            "expected a KMS key id (a UUID or mrk-<32 hex digits>), a key ARN, alias/<name> \
             or an alias ARN"
                .to_owned(),
        )
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::KeyArn(s) | Self::KeyId(s) | Self::Alias(s) => s,
        }
    }

    /// Whether `described` (a snapshot's `KmsKeyId`, a key ARN) is this key. `None` for an
    /// alias: it cannot be told without asking KMS, so nothing may rely on it.
    pub fn names(&self, described: &str) -> Option<bool> {
        match self {
            Self::KeyArn(arn) => Some(arn == described),
            // A bare id names a key of the function's own account and region, as EC2 resolves it.
            Self::KeyId(id) => Some(
                described == id
                    || (described.starts_with("arn:")
                        && described.split(':').nth(2) == Some("kms")
                        && described.ends_with(&format!(":key/{id}"))),
            ),
            Self::Alias(_) => None,
        }
    }
}

impl fmt::Display for KmsKeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_region(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A key id: a UUID in lower-case hex, or `mrk-` and 32 hex digits.
fn is_key_id(s: &str) -> bool {
    if let Some(hex) = s.strip_prefix("mrk-") {
        return hex.len() == 32 && is_hex(hex);
    }
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && is_hex(g))
}

fn is_alias_name(s: &str) -> bool {
    (1..=250).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";
    const ARN: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn every_form_ec2_accepts_is_read() {
        assert_eq!(KmsKeyRef::parse(ARN), Ok(KmsKeyRef::KeyArn(ARN.into())));
        assert_eq!(KmsKeyRef::parse(ID), Ok(KmsKeyRef::KeyId(ID.into())));
        let mrk = "mrk-1234abcd12ab34cd56ef1234567890ab";
        assert_eq!(KmsKeyRef::parse(mrk), Ok(KmsKeyRef::KeyId(mrk.into())));
        assert_eq!(
            KmsKeyRef::parse("alias/evidence"),
            Ok(KmsKeyRef::Alias("alias/evidence".into()))
        );
        let alias_arn = "arn:aws:kms:us-east-1:123456789012:alias/evidence";
        assert_eq!(
            KmsKeyRef::parse(alias_arn),
            Ok(KmsKeyRef::Alias(alias_arn.into()))
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "evidence",
            "alias/",
            "alias/has space",
            "1234ABCD-12AB-34CD-56EF-1234567890AB",
            "mrk-123",
            "arn:aws:kms:us-east-1:123:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:ec2:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:us-east-1:123456789012:key/not-a-key",
        ] {
            assert!(KmsKeyRef::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn a_snapshot_key_arn_is_compared_with_an_arn_or_an_id_but_never_guessed_for_an_alias() {
        assert_eq!(KmsKeyRef::KeyArn(ARN.into()).names(ARN), Some(true));
        assert_eq!(
            KmsKeyRef::KeyArn(ARN.into()).names(&ARN.replace("1234abcd-", "9999abcd-")),
            Some(false)
        );
        assert_eq!(KmsKeyRef::KeyId(ID.into()).names(ARN), Some(true));
        assert_eq!(
            KmsKeyRef::KeyId(ID.into()).names("arn:aws:kms:us-east-1:123456789012:key/other"),
            Some(false)
        );
        assert_eq!(KmsKeyRef::Alias("alias/x".into()).names(ARN), None);
    }
}
