//! The function's settings, read from the environment once at start and validated there.
//!
//! Nothing after start-up reads the environment again: a bad value stops the function before it
//! takes its first event, with a message that names the variable, instead of failing halfway
//! through a containment.

use std::fmt;

/// What triggers containment. Both halves of the tag are compared case-sensitively, as
/// EventBridge compares them: `Quarantine=True` is not `Quarantine=true`.
// Not `Eq`: the severity is a float (GuardDuty severities have decimals, 5.3 say).
#[derive(Clone, Debug, PartialEq)]
pub struct Trigger {
    pub key: String,
    pub value: String,
    /// The lowest GuardDuty finding severity acted on. The rule filters on its own copy of
    /// the threshold; this one still applies to a finding that arrives another way (a rule
    /// edited by hand, a direct invocation with a finding event).
    pub guardduty_min_severity: f64,
}

/// How the deny-all instance profile is named in `ISOLATION_INSTANCE_PROFILE`. EC2 accepts
/// either form, so both are passed through as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceProfileRef {
    Name(String),
    Arn(String),
}

impl InstanceProfileRef {
    /// The profile's name, which ends its ARN (after any IAM path).
    pub fn name(&self) -> &str {
        match self {
            Self::Name(name) => name,
            Self::Arn(arn) => arn.rsplit('/').next().unwrap_or(arn),
        }
    }

    /// Whether an association's profile ARN names this profile. When only a name is configured,
    /// the name is compared, which is exact because names are unique within an account.
    pub fn matches_arn(&self, arn: &str) -> bool {
        match self {
            Self::Arn(own) => own == arn,
            Self::Name(name) => arn.rsplit('/').next() == Some(name.as_str()),
        }
    }
}

impl fmt::Display for InstanceProfileRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Arn(arn) => f.write_str(arn),
        }
    }
}

/// What `revoke-credentials` denies on the role of the instance's original profile
/// (`REVOKE_INSTANCE_CREDENTIALS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialRevocation {
    /// `false`: the credentials the instance already holds stay valid until they expire.
    Off,
    /// `true`: only credentials delivered to the quarantined instances (`ec2:SourceInstanceARN`).
    Instance,
    /// `role-wide`: also every session of the role issued before now (`aws:TokenIssueTime`),
    /// whoever holds it: other workloads of the role lose their current credentials too.
    RoleWide,
}

/// Who may still reach a contained instance: the isolation group's only rules are inbound TCP
/// on `ports` from `cidrs`. Empty `cidrs`: no rule at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponderAccess {
    /// Canonical network addresses with prefix (`203.0.113.0/24`, `2001:db8::/32`).
    pub cidrs: Vec<String>,
    pub ports: Vec<u16>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub trigger: Trigger,
    pub isolation_group_name: String,
    pub isolation_profile: InstanceProfileRef,
    pub snapshot_volumes: bool,
    /// How many instances of one event are contained at the same time.
    pub max_concurrent_instances: usize,
    /// The DynamoDB table of incident records (name or ARN).
    pub incident_table: String,
    /// How long the cuts wait for the incident claim before going ahead without it.
    pub claim_timeout: std::time::Duration,
    pub responder_access: ResponderAccess,
    /// The region the function runs in (Lambda's `AWS_REGION`), whose instances it contains.
    pub region: Option<String>,
    pub revoke_credentials: CredentialRevocation,
    /// Whether interfaces pass through an allow-all interim group on their way to isolation, so
    /// that connections already open are cut rather than left tracked.
    pub cut_tracked_connections: bool,
    /// Read everything, report every change a real run would make, change nothing. A direct
    /// invocation may ask for a dry run, but never lift this one: see `handler`.
    pub dry_run: bool,
    /// Whether this deployment contains (the tag rule's function) or releases (the break-glass
    /// function): one binary, two functions with different roles.
    pub mode: FunctionMode,
    /// `SNAPSHOT_KMS_KEY_ID`: the key unencrypted evidence snapshots are copied with, once they
    /// complete. `None`: no copies, and the snapshot events are ignored.
    pub snapshot_kms_key: Option<crate::evidence_copy::key::KmsKeyRef>,
    /// `DELETE_UNENCRYPTED_SNAPSHOTS`: delete an unencrypted evidence snapshot once its
    /// encrypted copy is verified. Off by default: evidence is kept unless asked otherwise.
    pub unencrypted_snapshot_deletion: bool,
    /// The role (`[PATH/]NAME`) the function assumes in another account to contain an instance
    /// there (`MEMBER_ROLE_NAME`); `None`: instances of other accounts are refused.
    pub member_role: Option<String>,
    /// The member accounts the scheduled sweep also looks in (`SWEEP_ACCOUNTS`), with the member
    /// role; the function's own account is always swept. Empty: the own account only.
    pub sweep_accounts: Vec<String>,
}

/// What one deployment of the binary does (`FUNCTION_MODE`). The two run as separate functions
/// because they need opposite permissions: the containment role may attach only the isolation
/// profile, the release role may pass the original roles back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FunctionMode {
    #[default]
    Contain,
    Release,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{variable} is required but not set{hint}")]
    Missing {
        variable: &'static str,
        hint: &'static str,
    },
    #[error("{variable}={value:?} is invalid: {reason}")]
    Invalid {
        variable: &'static str,
        value: String,
        reason: String,
    },
}

pub const QUARANTINE_TAG_KEY: &str = "QUARANTINE_TAG_KEY";
pub const QUARANTINE_TAG_VALUE: &str = "QUARANTINE_TAG_VALUE";
pub const ISOLATION_SECURITY_GROUP_NAME: &str = "ISOLATION_SECURITY_GROUP_NAME";
pub const ISOLATION_INSTANCE_PROFILE: &str = "ISOLATION_INSTANCE_PROFILE";
pub const SNAPSHOT_VOLUMES: &str = "SNAPSHOT_VOLUMES";
pub const MAX_CONCURRENT_INSTANCES: &str = "MAX_CONCURRENT_INSTANCES";
pub const INCIDENT_TABLE: &str = "INCIDENT_TABLE";
pub const CLAIM_TIMEOUT_MS: &str = "CLAIM_TIMEOUT_MS";
pub const FORENSIC_INGRESS_CIDRS: &str = "FORENSIC_INGRESS_CIDRS";
pub const FORENSIC_INGRESS_PORTS: &str = "FORENSIC_INGRESS_PORTS";
pub const REVOKE_INSTANCE_CREDENTIALS: &str = "REVOKE_INSTANCE_CREDENTIALS";
pub const GUARDDUTY_MIN_SEVERITY: &str = "GUARDDUTY_MIN_SEVERITY";
pub const CUT_TRACKED_CONNECTIONS: &str = "CUT_TRACKED_CONNECTIONS";
pub const DRY_RUN: &str = "DRY_RUN";
pub const FUNCTION_MODE: &str = "FUNCTION_MODE";
pub const SNAPSHOT_KMS_KEY_ID: &str = "SNAPSHOT_KMS_KEY_ID";
pub const DELETE_UNENCRYPTED_SNAPSHOTS: &str = "DELETE_UNENCRYPTED_SNAPSHOTS";
pub const MEMBER_ROLE_NAME: &str = "MEMBER_ROLE_NAME";
pub const SWEEP_ACCOUNTS: &str = "SWEEP_ACCOUNTS";

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |variable: &'static str, default: &str| -> String {
            lookup(variable).unwrap_or_else(|| default.to_owned())
        };
        Self {
            trigger: Trigger {
                key: tag_key(QUARANTINE_TAG_KEY, get(QUARANTINE_TAG_KEY, "Quarantine"))?,
                value: tag_value(QUARANTINE_TAG_VALUE, get(QUARANTINE_TAG_VALUE, "true"))?,
                guardduty_min_severity: severity(
                    GUARDDUTY_MIN_SEVERITY,
                    get(GUARDDUTY_MIN_SEVERITY, "7"),
                )?,
            },
            isolation_group_name: group_name(get(
                ISOLATION_SECURITY_GROUP_NAME,
                "ec2-quarantine-isolation",
            ))?,
            isolation_profile: instance_profile(lookup(ISOLATION_INSTANCE_PROFILE))?,
            snapshot_volumes: boolean(SNAPSHOT_VOLUMES, get(SNAPSHOT_VOLUMES, "true"))?,
            max_concurrent_instances: bounded_count(
                MAX_CONCURRENT_INSTANCES,
                get(MAX_CONCURRENT_INSTANCES, "10"),
                1..=100,
            )?,
            incident_table: table(lookup(INCIDENT_TABLE))?,
            claim_timeout: std::time::Duration::from_millis(bounded_count(
                CLAIM_TIMEOUT_MS,
                get(CLAIM_TIMEOUT_MS, "3000"),
                100..=120_000,
            )? as u64),
            region: lookup("AWS_REGION").filter(|r| !r.is_empty()),
            responder_access: ResponderAccess {
                cidrs: cidrs(get(FORENSIC_INGRESS_CIDRS, ""))?,
                ports: ports(get(FORENSIC_INGRESS_PORTS, "22"))?,
            },
            revoke_credentials: credential_revocation(get(REVOKE_INSTANCE_CREDENTIALS, "true"))?,
            cut_tracked_connections: boolean(
                CUT_TRACKED_CONNECTIONS,
                get(CUT_TRACKED_CONNECTIONS, "true"),
            )?,
            dry_run: boolean(DRY_RUN, get(DRY_RUN, "false"))?,
            mode: function_mode(get(FUNCTION_MODE, "contain"))?,
            snapshot_kms_key: snapshot_kms_key(get(SNAPSHOT_KMS_KEY_ID, ""))?,
            unencrypted_snapshot_deletion: boolean(
                DELETE_UNENCRYPTED_SNAPSHOTS,
                get(DELETE_UNENCRYPTED_SNAPSHOTS, "false"),
            )?,
            member_role: member_role(lookup(MEMBER_ROLE_NAME))?,
            sweep_accounts: account_ids(SWEEP_ACCOUNTS, get(SWEEP_ACCOUNTS, ""))?,
        }
        .checked_evidence_deletion()?
        .checked_sweep_accounts()
    }

    /// Other accounts are reached only with the member role: a list without it could never be
    /// swept, and would fail every sweep for a setting that cannot work.
    fn checked_sweep_accounts(self) -> Result<Self, ConfigError> {
        if self.sweep_accounts.is_empty() || self.member_role.is_some() {
            return Ok(self);
        }
        Err(invalid(
            SWEEP_ACCOUNTS,
            &self.sweep_accounts.join(","),
            "needs MEMBER_ROLE_NAME: the sweep reaches other accounts with the member role",
        ))
    }

    /// Deleting a source is allowed only when its copy can be proven to use the configured key,
    /// which takes the key's ARN or id: EC2 names the key of a snapshot by ARN, never by alias.
    fn checked_evidence_deletion(self) -> Result<Self, ConfigError> {
        use crate::evidence_copy::key::KmsKeyRef;
        if !self.unencrypted_snapshot_deletion {
            return Ok(self);
        }
        match &self.snapshot_kms_key {
            None => Err(invalid(
                DELETE_UNENCRYPTED_SNAPSHOTS,
                "true",
                "needs SNAPSHOT_KMS_KEY_ID: without encrypted copies there is nothing to replace \
                 the unencrypted snapshots with",
            )),
            Some(KmsKeyRef::Alias(alias)) => Err(invalid(
                DELETE_UNENCRYPTED_SNAPSHOTS,
                "true",
                format!(
                    "needs SNAPSHOT_KMS_KEY_ID as a key ARN or key id, not the alias {alias}: \
                     a copy's key is described by ARN, so an alias cannot prove the copy uses it"
                ),
            )),
            Some(_) => Ok(self),
        }
    }
}

fn snapshot_kms_key(
    value: String,
) -> Result<Option<crate::evidence_copy::key::KmsKeyRef>, ConfigError> {
    if value.is_empty() {
        return Ok(None);
    }
    crate::evidence_copy::key::KmsKeyRef::parse(&value)
        .map(Some)
        .map_err(|reason| invalid(SNAPSHOT_KMS_KEY_ID, &value, reason))
}

fn invalid(variable: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        variable,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

// Limits are EC2's own for tags (128-character keys, 256-character values, no `aws:` prefix),
// so a value AWS would reject never reaches the rule or the function.
fn tag_key(variable: &'static str, key: String) -> Result<String, ConfigError> {
    if key.trim().is_empty() {
        return Err(invalid(variable, &key, "a tag key cannot be empty"));
    }
    if key.chars().count() > 128 {
        return Err(invalid(
            variable,
            &key,
            "a tag key has at most 128 characters",
        ));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(invalid(
            variable,
            &key,
            "the aws: prefix is reserved by AWS",
        ));
    }
    Ok(key)
}

fn tag_value(variable: &'static str, value: String) -> Result<String, ConfigError> {
    if value.is_empty() {
        return Err(invalid(
            variable,
            &value,
            "an empty trigger value would fire on any tagging",
        ));
    }
    if value.chars().count() > 256 {
        return Err(invalid(
            variable,
            &value,
            "a tag value has at most 256 characters",
        ));
    }
    Ok(value)
}

fn group_name(name: String) -> Result<String, ConfigError> {
    let variable = ISOLATION_SECURITY_GROUP_NAME;
    // EC2 allows 255; the interim and the VPC-named groups add up to 30 (`-interim-vpc-` and
    // 17 hex digits).
    if name.is_empty() || name.len() > 225 {
        return Err(invalid(
            variable,
            &name,
            "a group name has 1 to 225 characters",
        ));
    }
    if name.starts_with("sg-") {
        return Err(invalid(
            variable,
            &name,
            "EC2 does not allow names that start with sg-",
        ));
    }
    if !name.is_ascii() {
        return Err(invalid(variable, &name, "a group name is ASCII only"));
    }
    Ok(name)
}

fn instance_profile(value: Option<String>) -> Result<InstanceProfileRef, ConfigError> {
    let variable = ISOLATION_INSTANCE_PROFILE;
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Err(ConfigError::Missing {
            variable,
            hint: " (the name or ARN of the deny-all isolation instance profile; template.yaml creates it)",
        });
    };
    if let Some(rest) = value.strip_prefix("arn:") {
        // arn:PARTITION:iam::ACCOUNT:instance-profile/[PATH/]NAME
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let well_formed = parts.len() == 5
            && parts[0].starts_with("aws")
            && parts[1] == "iam"
            && parts[2].is_empty()
            && parts[3].len() == 12
            && parts[3].bytes().all(|b| b.is_ascii_digit())
            && parts[4]
                .strip_prefix("instance-profile/")
                .is_some_and(|name| is_profile_name(name.rsplit('/').next().unwrap_or("")));
        if !well_formed {
            return Err(invalid(
                variable,
                &value,
                "expected arn:aws:iam::<account>:instance-profile/<name>",
            ));
        }
        return Ok(InstanceProfileRef::Arn(value));
    }
    if !is_profile_name(&value) {
        return Err(invalid(
            variable,
            &value,
            "a profile name has 1 to 128 of the characters A-Z a-z 0-9 + = , . @ _ -",
        ));
    }
    Ok(InstanceProfileRef::Name(value))
}

/// `NAME` or `PATH/NAME`, as IAM allows them: the role ARN is `arn:...:role/` and this. An
/// empty value is the same as unset (the template passes an empty parameter through).
fn member_role(value: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let segment = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
    };
    let (path, name) = value.rsplit_once('/').unwrap_or(("", value.as_str()));
    let valid = name.len() <= 64
        && segment(name)
        && path.len() <= 510
        && (path.is_empty() || path.split('/').all(segment));
    if !valid {
        return Err(invalid(
            MEMBER_ROLE_NAME,
            &value,
            "expected a role name (1 to 64 of A-Z a-z 0-9 + = , . @ _ -), optionally after its \
             IAM path without the leading and trailing slash (ec2-quarantine/member-responder)",
        ));
    }
    Ok(Some(value))
}

/// Comma-separated AWS account ids (12 digits), de-duplicated in the order given; blanks
/// between commas are allowed, so that an empty template list is an empty setting.
fn account_ids(variable: &'static str, value: String) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if item.len() != 12 || !item.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                variable,
                &value,
                format!("{item:?} is not an AWS account id (expected 12 digits)"),
            ));
        }
        if !out.iter().any(|a| a == item) {
            out.push(item.to_owned());
        }
    }
    Ok(out)
}

fn is_profile_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

fn table(value: Option<String>) -> Result<String, ConfigError> {
    let variable = INCIDENT_TABLE;
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Err(ConfigError::Missing {
            variable,
            hint: " (the DynamoDB table of incident records; template.yaml creates it)",
        });
    };
    let name = match value.strip_prefix("arn:") {
        Some(rest) => rest
            .rsplit_once(":table/")
            .map(|(_, name)| name)
            .unwrap_or(""),
        None => value.as_str(),
    };
    let valid = (3..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !valid {
        return Err(invalid(
            variable,
            &value,
            "expected a table name (3 to 255 of A-Z a-z 0-9 _ . -) or a table ARN",
        ));
    }
    Ok(value)
}

fn cidrs(value: String) -> Result<Vec<String>, ConfigError> {
    let variable = FORENSIC_INGRESS_CIDRS;
    let mut out: Vec<String> = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let canonical = canonical_cidr(item).map_err(|reason| invalid(variable, &value, reason))?;
        if !out.contains(&canonical) {
            out.push(canonical);
        }
    }
    Ok(out)
}

/// The CIDR as EC2 shows it, or why it is not acceptable. Host bits must be zero (EC2 would
/// reject the range or show another one), and an all-addresses range would undo the isolation.
fn canonical_cidr(item: &str) -> Result<String, String> {
    let (address, prefix) = item
        .split_once('/')
        .ok_or_else(|| format!("{item:?} has no /prefix"))?;
    let prefix: u32 = prefix
        .parse()
        .map_err(|_| format!("{item:?} has no numeric prefix"))?;
    let address: std::net::IpAddr = address
        .parse()
        .map_err(|_| format!("{item:?} is not an IPv4 or IPv6 range"))?;
    let (bits, width) = match address {
        std::net::IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        std::net::IpAddr::V6(a) => (u128::from(a), 128),
    };
    if prefix > width {
        return Err(format!("{item:?} has a prefix longer than {width}"));
    }
    if prefix == 0 {
        return Err(format!(
            "{item:?} is every address, which would undo the isolation"
        ));
    }
    let host_bits = width - prefix;
    if host_bits > 0 && bits & ((1u128 << host_bits) - 1) != 0 {
        return Err(format!("{item:?} has host bits set"));
    }
    Ok(format!("{address}/{prefix}"))
}

fn ports(value: String) -> Result<Vec<u16>, ConfigError> {
    let variable = FORENSIC_INGRESS_PORTS;
    let mut out: Vec<u16> = Vec::new();
    for item in value.split(',').map(str::trim) {
        match item.parse::<u16>() {
            Ok(port) if port > 0 => {
                if !out.contains(&port) {
                    out.push(port)
                }
            }
            _ => {
                return Err(invalid(
                    variable,
                    &value,
                    "expected comma-separated TCP ports from 1 to 65535",
                ))
            }
        }
    }
    Ok(out)
}

fn boolean(variable: &'static str, value: String) -> Result<bool, ConfigError> {
    match value.as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(variable, &value, "expected true or false")),
    }
}

fn credential_revocation(value: String) -> Result<CredentialRevocation, ConfigError> {
    match value.as_str() {
        "true" => Ok(CredentialRevocation::Instance),
        "false" => Ok(CredentialRevocation::Off),
        "role-wide" => Ok(CredentialRevocation::RoleWide),
        _ => Err(invalid(
            REVOKE_INSTANCE_CREDENTIALS,
            &value,
            "expected true, false or role-wide",
        )),
    }
}

fn function_mode(value: String) -> Result<FunctionMode, ConfigError> {
    match value.as_str() {
        "contain" => Ok(FunctionMode::Contain),
        "release" => Ok(FunctionMode::Release),
        _ => Err(invalid(
            FUNCTION_MODE,
            &value,
            "expected contain or release",
        )),
    }
}

/// GuardDuty's severity scale: Low from 1, up to Critical, 9 to 10.
fn severity(variable: &'static str, value: String) -> Result<f64, ConfigError> {
    match value.trim().parse::<f64>() {
        Ok(n) if (0.0..=10.0).contains(&n) => Ok(n),
        _ => Err(invalid(variable, &value, "expected a number from 0 to 10")),
    }
}

fn bounded_count(
    variable: &'static str,
    value: String,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, ConfigError> {
    match value.parse::<usize>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(invalid(
            variable,
            &value,
            format!(
                "expected a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_apply_when_only_the_profile_is_set() {
        let config = config(&[
            (ISOLATION_INSTANCE_PROFILE, "isolation"),
            (INCIDENT_TABLE, "incidents"),
        ])
        .unwrap();
        assert_eq!(
            config.trigger,
            Trigger {
                key: "Quarantine".into(),
                value: "true".into(),
                guardduty_min_severity: 7.0,
            }
        );
        assert_eq!(config.isolation_group_name, "ec2-quarantine-isolation");
        assert_eq!(
            config.isolation_profile,
            InstanceProfileRef::Name("isolation".into())
        );
        assert!(config.snapshot_volumes);
        assert_eq!(config.max_concurrent_instances, 10);
        assert_eq!(config.incident_table, "incidents");
        assert_eq!(config.claim_timeout, std::time::Duration::from_secs(3));
        assert_eq!(config.revoke_credentials, CredentialRevocation::Instance);
        assert!(config.cut_tracked_connections);
        assert!(!config.dry_run);
        assert_eq!(
            config.responder_access,
            ResponderAccess {
                cidrs: vec![],
                ports: vec![22]
            }
        );
    }

    #[test]
    fn responder_ranges_are_validated_and_kept_in_canonical_form() {
        let config = config(&[
            (ISOLATION_INSTANCE_PROFILE, "isolation"),
            (INCIDENT_TABLE, "incidents"),
            (
                FORENSIC_INGRESS_CIDRS,
                " 203.0.113.0/24, 2001:0db8::/32,203.0.113.0/24",
            ),
            (FORENSIC_INGRESS_PORTS, "22,3389"),
        ])
        .unwrap();
        assert_eq!(
            config.responder_access.cidrs,
            vec!["203.0.113.0/24".to_owned(), "2001:db8::/32".to_owned()]
        );
        assert_eq!(config.responder_access.ports, vec![22, 3389]);
    }

    #[test]
    fn a_missing_incident_table_names_the_variable() {
        let err = config(&[(ISOLATION_INSTANCE_PROFILE, "isolation")]).unwrap_err();
        assert!(
            err.to_string().starts_with("INCIDENT_TABLE is required"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_profile_names_the_variable() {
        let err = config(&[(INCIDENT_TABLE, "incidents")]).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Missing {
                variable: ISOLATION_INSTANCE_PROFILE,
                ..
            }
        ));
        assert!(err
            .to_string()
            .starts_with("ISOLATION_INSTANCE_PROFILE is required"));
    }

    #[test]
    fn a_profile_arn_with_a_path_is_accepted_and_its_name_is_the_last_segment() {
        let arn = "arn:aws:iam::123456789012:instance-profile/security/ec2-quarantine-isolation";
        let config = config(&[(ISOLATION_INSTANCE_PROFILE, arn), (INCIDENT_TABLE, "t-1")]).unwrap();
        assert_eq!(
            config.isolation_profile,
            InstanceProfileRef::Arn(arn.into())
        );
        assert_eq!(config.isolation_profile.name(), "ec2-quarantine-isolation");
        assert!(config.isolation_profile.matches_arn(arn));
        assert!(!config
            .isolation_profile
            .matches_arn("arn:aws:iam::123456789012:instance-profile/other"));
    }

    #[test]
    fn a_profile_name_matches_an_association_arn_by_its_last_segment() {
        let profile = InstanceProfileRef::Name("iso".into());
        assert!(profile.matches_arn("arn:aws:iam::123456789012:instance-profile/path/iso"));
        assert!(!profile.matches_arn("arn:aws:iam::123456789012:instance-profile/iso-2"));
    }

    #[test]
    fn malformed_values_are_rejected_with_the_variable_named() {
        let cases: &[(&str, &str)] = &[
            (
                ISOLATION_INSTANCE_PROFILE,
                "arn:aws:iam::123:instance-profile/x",
            ),
            (
                ISOLATION_INSTANCE_PROFILE,
                "arn:aws:iam::123456789012:role/x",
            ),
            (ISOLATION_INSTANCE_PROFILE, "has space"),
            (QUARANTINE_TAG_KEY, ""),
            (QUARANTINE_TAG_KEY, "aws:quarantine"),
            (QUARANTINE_TAG_VALUE, ""),
            (ISOLATION_SECURITY_GROUP_NAME, "sg-isolation"),
            (SNAPSHOT_VOLUMES, "yes"),
            (SNAPSHOT_VOLUMES, "TRUE"),
            (MAX_CONCURRENT_INSTANCES, "0"),
            (MAX_CONCURRENT_INSTANCES, "many"),
            (INCIDENT_TABLE, "x"),
            (
                INCIDENT_TABLE,
                "arn:aws:dynamodb:us-east-1:123456789012:stream/x",
            ),
            (CLAIM_TIMEOUT_MS, "50"),
            (FORENSIC_INGRESS_CIDRS, "0.0.0.0/0"),
            (FORENSIC_INGRESS_CIDRS, "::/0"),
            (FORENSIC_INGRESS_CIDRS, "203.0.113.5/24"),
            (FORENSIC_INGRESS_CIDRS, "203.0.113.0"),
            (FORENSIC_INGRESS_CIDRS, "example.com/32"),
            (FORENSIC_INGRESS_PORTS, "22-23"),
            (FORENSIC_INGRESS_PORTS, "0"),
            (FORENSIC_INGRESS_PORTS, ""),
            (REVOKE_INSTANCE_CREDENTIALS, "yes"),
            (REVOKE_INSTANCE_CREDENTIALS, "rolewide"),
            (REVOKE_INSTANCE_CREDENTIALS, ""),
            (GUARDDUTY_MIN_SEVERITY, ""),
            (GUARDDUTY_MIN_SEVERITY, "high"),
            (GUARDDUTY_MIN_SEVERITY, "-1"),
            (GUARDDUTY_MIN_SEVERITY, "10.5"),
            (GUARDDUTY_MIN_SEVERITY, "NaN"),
            (GUARDDUTY_MIN_SEVERITY, "inf"),
            (CUT_TRACKED_CONNECTIONS, "yes"),
            (CUT_TRACKED_CONNECTIONS, "False"),
            (CUT_TRACKED_CONNECTIONS, ""),
            (DRY_RUN, "yes"),
            (DRY_RUN, "True"),
            (DRY_RUN, "1"),
            (DRY_RUN, ""),
            (FUNCTION_MODE, "Release"),
            (FUNCTION_MODE, "undo"),
            (FUNCTION_MODE, ""),
            (SNAPSHOT_KMS_KEY_ID, "evidence-key"),
            (
                SNAPSHOT_KMS_KEY_ID,
                "arn:aws:kms:us-east-1:123456789012:key/x",
            ),
            (DELETE_UNENCRYPTED_SNAPSHOTS, "yes"),
            (DELETE_UNENCRYPTED_SNAPSHOTS, "true"),
        ];
        for (variable, value) in cases {
            let mut vars = vec![
                (ISOLATION_INSTANCE_PROFILE, "isolation"),
                (INCIDENT_TABLE, "incidents"),
            ];
            vars.retain(|(k, _)| k != variable);
            vars.push((variable, value));
            let err = config(&vars).expect_err(&format!("{variable}={value:?} must be rejected"));
            assert!(
                err.to_string().starts_with(variable),
                "error for {variable}={value:?} must name it: {err}"
            );
        }
    }

    #[test]
    fn the_member_role_is_unset_by_default_and_may_carry_a_path() {
        let role = |value: Option<&str>| {
            let mut vars = vec![
                (ISOLATION_INSTANCE_PROFILE, "isolation"),
                (INCIDENT_TABLE, "incidents"),
            ];
            vars.extend(value.map(|v| (MEMBER_ROLE_NAME, v)));
            config(&vars).map(|c| c.member_role)
        };
        assert_eq!(role(None), Ok(None));
        assert_eq!(role(Some("")), Ok(None));
        assert_eq!(role(Some("responder")), Ok(Some("responder".into())));
        assert_eq!(
            role(Some("ec2-quarantine/member-responder")),
            Ok(Some("ec2-quarantine/member-responder".into()))
        );
        for bad in [
            "/ec2-quarantine/responder",
            "ec2-quarantine/",
            "a//b",
            "has space",
            "arn:aws:iam::123456789012:role/x",
            &"r".repeat(65),
        ] {
            let err = role(Some(bad)).expect_err(bad);
            assert!(err.to_string().starts_with(MEMBER_ROLE_NAME), "{err}");
        }
    }

    #[test]
    fn sweep_accounts_are_twelve_digit_ids_and_need_the_member_role() {
        let sweep = |accounts: &str, role: Option<&str>| {
            let mut vars = vec![
                (ISOLATION_INSTANCE_PROFILE, "isolation"),
                (INCIDENT_TABLE, "incidents"),
                (SWEEP_ACCOUNTS, accounts),
            ];
            vars.extend(role.map(|r| (MEMBER_ROLE_NAME, r)));
            config(&vars).map(|c| c.sweep_accounts)
        };
        assert_eq!(sweep("", None), Ok(vec![]));
        assert_eq!(sweep(" , ", None), Ok(vec![]));
        assert_eq!(
            sweep("111111111111, 222222222222,111111111111", Some("member")),
            Ok(vec!["111111111111".into(), "222222222222".into()])
        );
        for bad in [
            "11111111111",
            "1111111111111",
            "11111111111a",
            "111111111111;2",
        ] {
            let err = sweep(bad, Some("member")).expect_err(bad);
            assert!(
                err.to_string().starts_with(SWEEP_ACCOUNTS)
                    && err.to_string().contains("12 digits"),
                "{err}"
            );
        }
        let err = sweep("111111111111", None).unwrap_err();
        assert!(err.to_string().contains("needs MEMBER_ROLE_NAME"), "{err}");
    }

    #[test]
    fn cutting_tracked_connections_can_be_turned_off() {
        let config = config(&[
            (ISOLATION_INSTANCE_PROFILE, "isolation"),
            (INCIDENT_TABLE, "incidents"),
            (CUT_TRACKED_CONNECTIONS, "false"),
        ])
        .unwrap();
        assert!(!config.cut_tracked_connections);
    }

    #[test]
    fn a_dry_run_is_turned_on_by_dry_run_true() {
        let config = config(&[
            (ISOLATION_INSTANCE_PROFILE, "isolation"),
            (INCIDENT_TABLE, "incidents"),
            (DRY_RUN, "true"),
        ])
        .unwrap();
        assert!(config.dry_run);
    }

    #[test]
    fn tag_key_and_value_keep_their_case() {
        let config = config(&[
            (ISOLATION_INSTANCE_PROFILE, "isolation"),
            (INCIDENT_TABLE, "incidents"),
            (QUARANTINE_TAG_KEY, "SecOps:Quarantine"),
            (QUARANTINE_TAG_VALUE, "Yes"),
            (SNAPSHOT_VOLUMES, "false"),
        ])
        .unwrap();
        assert_eq!(config.trigger.key, "SecOps:Quarantine");
        assert_eq!(config.trigger.value, "Yes");
        assert!(!config.snapshot_volumes);
    }

    #[test]
    fn the_guardduty_threshold_takes_decimals_and_both_ends_of_the_scale() {
        for (value, expected) in [("5.5", 5.5), ("0", 0.0), ("10", 10.0), (" 8 ", 8.0)] {
            let config = config(&[
                (ISOLATION_INSTANCE_PROFILE, "isolation"),
                (INCIDENT_TABLE, "incidents"),
                (GUARDDUTY_MIN_SEVERITY, value),
            ])
            .unwrap();
            assert_eq!(config.trigger.guardduty_min_severity, expected, "{value:?}");
        }
    }

    #[test]
    fn credential_revocation_is_per_instance_by_default_and_can_be_off_or_role_wide() {
        let mode = |value: &str| {
            config(&[
                (ISOLATION_INSTANCE_PROFILE, "isolation"),
                (INCIDENT_TABLE, "incidents"),
                (REVOKE_INSTANCE_CREDENTIALS, value),
            ])
            .unwrap()
            .revoke_credentials
        };
        assert_eq!(mode("true"), CredentialRevocation::Instance);
        assert_eq!(mode("false"), CredentialRevocation::Off);
        assert_eq!(mode("role-wide"), CredentialRevocation::RoleWide);
    }

    #[test]
    fn the_function_contains_unless_its_mode_says_release() {
        let mode = |vars: &[(&'static str, &str)]| {
            let mut all = vec![
                (ISOLATION_INSTANCE_PROFILE, "isolation"),
                (INCIDENT_TABLE, "incidents"),
            ];
            all.extend_from_slice(vars);
            config(&all).unwrap().mode
        };
        assert_eq!(mode(&[]), FunctionMode::Contain);
        assert_eq!(mode(&[(FUNCTION_MODE, "contain")]), FunctionMode::Contain);
        assert_eq!(mode(&[(FUNCTION_MODE, "release")]), FunctionMode::Release);
    }

    #[test]
    fn encrypted_copies_are_off_and_deletion_is_off_by_default() {
        let config = config(&[
            (ISOLATION_INSTANCE_PROFILE, "isolation"),
            (INCIDENT_TABLE, "incidents"),
        ])
        .unwrap();
        assert_eq!(config.snapshot_kms_key, None);
        assert!(!config.unencrypted_snapshot_deletion);
    }

    #[test]
    fn deleting_unencrypted_snapshots_needs_a_key_named_by_arn_or_id() {
        use crate::evidence_copy::key::KmsKeyRef;
        let arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let with = |key: &str| {
            config(&[
                (ISOLATION_INSTANCE_PROFILE, "isolation"),
                (INCIDENT_TABLE, "incidents"),
                (SNAPSHOT_KMS_KEY_ID, key),
                (DELETE_UNENCRYPTED_SNAPSHOTS, "true"),
            ])
        };
        let deleting = with(arn).unwrap();
        assert_eq!(
            deleting.snapshot_kms_key,
            Some(KmsKeyRef::KeyArn(arn.into()))
        );
        assert!(deleting.unencrypted_snapshot_deletion);
        let err = with("alias/evidence").unwrap_err();
        assert!(
            err.to_string().starts_with(DELETE_UNENCRYPTED_SNAPSHOTS)
                && err.to_string().contains("alias/evidence"),
            "{err}"
        );
        // Copies with an alias are fine as long as nothing is deleted.
        let copies_only = config(&[
            (ISOLATION_INSTANCE_PROFILE, "isolation"),
            (INCIDENT_TABLE, "incidents"),
            (SNAPSHOT_KMS_KEY_ID, "alias/evidence"),
        ])
        .unwrap();
        assert_eq!(
            copies_only.snapshot_kms_key,
            Some(KmsKeyRef::Alias("alias/evidence".into()))
        );
    }
}
