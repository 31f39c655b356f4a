//! The credentials the instance already holds. Replacing its profile only changes what it gets
//! from now on: temporary credentials of the original role delivered before, and any copy an
//! attacker took, stay valid until they expire, hours later. This step puts an inline deny
//! policy on the original role whose statement matches only credentials delivered to
//! quarantined instances, through `ec2:SourceInstanceARN`, the global condition key AWS sets on
//! credentials delivered by the instance metadata service; other workloads sharing the role keep
//! working. With `REVOKE_INSTANCE_CREDENTIALS=role-wide` the same policy also denies every
//! session of the role issued before now (`aws:TokenIssueTime`).
//!
//! IAM: `iam:GetInstanceProfile`, `iam:ListRolePolicies`, `iam:GetRolePolicy`,
//! `iam:PutRolePolicy`. The template denies the role-policy calls on the function's own role and
//! on the isolation role, so this step can never change either.
//!
//! Accepts any state but terminated: the credentials of a stopped instance stay as valid as those
//! of a running one, wherever a copy of them is.
//!
//! Idempotent: the policy is read first and written only when this instance's ARN (or, in
//! role-wide mode, the issue-time statement) is missing from it, so a re-run makes no write.
//! Instances that share a role share one statement, whose list of ARNs grows (sorted, without
//! duplicates); statements someone else put in the policy are kept as they are.
//!
//! IAM has no conditional write, so two invocations that add instances to the same role at the
//! same moment could each write a document without the other's ARN. The role's list of denied
//! instances is therefore kept in the incident table ([`crate::revocations`]), which changes
//! atomically and versions every change: each writer writes the whole list, and writes again
//! when the version shows that another writer changed it meanwhile. Writers of one invocation
//! take turns per role. If the table does not answer, the deny is written from IAM's document
//! alone and read back after a pause, which narrows the race but cannot close it.
//!
//! A role's inline policies may hold 10,240 characters in all (whitespace excluded), about 140
//! instances in the statement. A write that would go over fails the step and points to role-wide
//! mode, which then writes the issue-time statement without the instance's ARN.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use serde_json::{json, Map, Value};

use super::identity::Association;
use super::progress::Progress;
use super::tags;
use super::{step_report, StepResult};
use crate::aws::{aws_err, AwsError, Clients};
use crate::config::{CredentialRevocation, InstanceProfileRef, REVOKE_INSTANCE_CREDENTIALS};
use crate::report::{Step, StepReport};
use crate::revocations::{Entry, RevocationLedger};

pub const POLICY_NAME: &str = "ec2-quarantine-revoke-instance-credentials";
pub const INSTANCE_SID: &str = "Ec2QuarantineRevokeInstanceCredentials";
pub const OLDER_SESSIONS_SID: &str = "Ec2QuarantineRevokeOlderSessions";
/// IAM's quota for all inline policies of one role together, whitespace not counted.
pub const ROLE_POLICY_CHARS: usize = 10_240;

const SOURCE_INSTANCE_ARN: &str = "ec2:SourceInstanceARN";
const TOKEN_ISSUE_TIME: &str = "aws:TokenIssueTime";
/// Writes before the step gives up on a policy that concurrent writers keep replacing. With the
/// revocation list, a writer writes again only while other writers keep adding to it; an event
/// that names many instances of one role takes turns within its invocation, so this bounds the
/// invocations that add to one role at the same moment, not the instances.
const MAX_WRITES: usize = 6;
/// Long enough for IAM's eventual consistency to show a concurrent writer's document, short
/// enough not to matter next to the other steps, which run meanwhile.
const SETTLE: Duration = Duration::from_secs(1);

/// The profile the instance had before this run, as round trip 1 read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginalProfile {
    /// No profile: no credentials were ever delivered to the instance.
    None,
    /// The isolation profile is already there: an earlier run replaced the original.
    Replaced,
    Arn(String),
}

impl OriginalProfile {
    /// From the association read in round trip 1; when that read failed, from the instance
    /// description, which names the profile too, so that the revocation does not depend on it.
    pub fn of(
        association: &Result<Option<Association>, AwsError>,
        described: Option<&str>,
        isolation: &InstanceProfileRef,
    ) -> Self {
        let arn = match association {
            Ok(association) => association.as_ref().map(|a| a.profile_arn.as_str()),
            Err(_) => described,
        };
        match arn {
            None => Self::None,
            Some(arn) if isolation.matches_arn(arn) => Self::Replaced,
            Some(arn) => Self::Arn(arn.to_owned()),
        }
    }
}

pub async fn revoke_credentials(
    clients: &Clients,
    ledger: Option<&RevocationLedger>,
    mode: CredentialRevocation,
    instance_id: &str,
    original: OriginalProfile,
    progress: Option<&Progress>,
) -> StepReport {
    let started = Instant::now();
    let result = match (mode, original) {
        (CredentialRevocation::Off, _) => Ok(StepResult::skipped(format!(
            "turned off by {REVOKE_INSTANCE_CREDENTIALS}=false"
        ))),
        (_, OriginalProfile::None) => Ok(StepResult::unchanged(
            "no credentials were issued: the instance had no profile",
        )),
        // The original role is no longer named anywhere this run can read. Seam for the durable
        // incident record: once it holds the original profile, look its role up from there and
        // check (or finish) the revocation like a first run, instead of trusting that the
        // earlier run got that far.
        (_, OriginalProfile::Replaced) => Ok(StepResult::skipped(
            "the original profile was replaced by an earlier run, which revoked its credentials",
        )),
        (mode, OriginalProfile::Arn(profile_arn)) => {
            revoke(clients, ledger, mode, instance_id, &profile_arn, progress).await
        }
    };
    step_report(Step::RevokeCredentials, started, result)
}

async fn revoke(
    clients: &Clients,
    ledger: Option<&RevocationLedger>,
    mode: CredentialRevocation,
    instance_id: &str,
    profile_arn: &str,
    progress: Option<&Progress>,
) -> Result<StepResult, AwsError> {
    let ProfileRoles {
        instance_arn,
        roles,
    } = profile_roles(clients, instance_id, profile_arn).await?;
    if roles.is_empty() {
        return Ok(StepResult::unchanged(format!(
            "no credentials were issued: {profile_arn} has no role"
        )));
    }
    let now = issue_time_bound(SystemTime::now());
    // An instance profile holds one role at most (an IAM quota that cannot be raised), so the
    // deny on it is the step's write. Were there more, the step would report only at its end.
    let written = progress.filter(|_| roles.len() == 1).map(|progress| {
        move || progress.written(Step::RevokeCredentials, crate::report::Status::Done)
    });
    let results = join_all(roles.iter().map(|(role, role_arn)| {
        let target = Target {
            role,
            role_arn,
            instance_arn: &instance_arn,
            written: written.as_ref().map(|w| w as &(dyn Fn() + Sync)),
        };
        revoke_on_role(clients, ledger, target, mode, &now)
    }))
    .await;
    Ok(StepResult::merge(
        results.into_iter().collect::<Result<_, _>>()?,
    ))
}

/// The roles credentials delivered through an instance profile belong to, and the instance's
/// ARN as `ec2:SourceInstanceARN` names it.
pub struct ProfileRoles {
    pub instance_arn: String,
    /// Each role's name and ARN.
    pub roles: Vec<(String, String)>,
}

pub async fn profile_roles(
    clients: &Clients,
    instance_id: &str,
    profile_arn: &str,
) -> Result<ProfileRoles, AwsError> {
    // The instances this function contains are in the region its EC2 client calls, so the ARN
    // takes that client's region: no separate setting can disagree with it.
    let region = clients
        .ec2
        .config()
        .region()
        .map(|r| r.as_ref().to_owned())
        .ok_or_else(|| {
            AwsError::local(
                "PutRolePolicy",
                "the SDK configuration names no region, so the instance ARN is unknown",
            )
        })?;
    let instance_arn = instance_arn(profile_arn, &region, instance_id).ok_or_else(|| {
        AwsError::local(
            "GetInstanceProfile",
            format!("cannot read partition and account from the profile ARN {profile_arn}"),
        )
    })?;
    let profile_name = profile_arn.rsplit('/').next().unwrap_or(profile_arn);
    let profile = clients
        .iam
        .get_instance_profile()
        .instance_profile_name(profile_name)
        .send()
        .await
        .map_err(aws_err("GetInstanceProfile"))?;
    let roles = profile
        .instance_profile()
        .map(|p| {
            p.roles()
                .iter()
                .map(|r| (r.role_name().to_owned(), r.arn().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    Ok(ProfileRoles {
        instance_arn,
        roles,
    })
}

/// `arn:<partition>:ec2:<region>:<account>:instance/<id>`, partition and account taken from the
/// instance profile's ARN (`arn:<partition>:iam::<account>:instance-profile/...`).
pub fn instance_arn(profile_arn: &str, region: &str, instance_id: &str) -> Option<String> {
    let parts: Vec<&str> = profile_arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "iam", "", account, resource]
            if !partition.is_empty()
                && !account.is_empty()
                && resource.starts_with("instance-profile/") =>
        {
            Some(format!(
                "arn:{partition}:ec2:{region}:{account}:instance/{instance_id}"
            ))
        }
        _ => None,
    }
}

/// Now, rounded up to the second: a session issued during the current second is denied too, and
/// the value has the plain form every IAM date condition accepts.
pub fn issue_time_bound(now: SystemTime) -> String {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs() + u64::from(since_epoch.subsec_nanos() > 0);
    aws_smithy_types::DateTime::from_secs(i64::try_from(seconds).unwrap_or(i64::MAX))
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

async fn revoke_on_role(
    clients: &Clients,
    ledger: Option<&RevocationLedger>,
    target: Target<'_>,
    mode: CredentialRevocation,
    now: &str,
) -> Result<StepResult, AwsError> {
    let turn = ledger.map(|l| l.turn(target.role_arn));
    let _turn = match &turn {
        Some(turn) => Some(turn.lock().await),
        None => None,
    };
    // One round trip: the role's list, our policy as IAM has it, and the room the role's other
    // policies take (it matters only when there is something to write, but a first containment
    // always writes).
    let (listed, found, others) = tokio::join!(
        async {
            match ledger {
                Some(ledger) => Some(ledger.add(target.role_arn, target.instance_arn).await),
                None => None,
            }
        },
        read_policy(clients, target.role),
        other_policies_chars(clients, target.role),
    );
    let found = found?;
    match (ledger, listed) {
        (Some(ledger), Some(Ok(entry))) => {
            write_listed(clients, ledger, target, mode, now, entry, found, others).await
        }
        // Without the list the deny still goes on, written from IAM's document alone.
        (_, listed) => {
            let result = write_and_settle(clients, target, mode, now, found, others).await;
            match listed {
                Some(Err(e)) => result.map(|mut r| {
                    r.detail = format!(
                        "{} (the revocation list did not answer, so a concurrent writer is \
                         caught only by a read-back after {} ms: {e})",
                        r.detail,
                        SETTLE.as_millis()
                    );
                    r
                }),
                _ => result,
            }
        }
    }
}

/// The role and instance one revocation is about.
#[derive(Clone, Copy)]
struct Target<'a> {
    role: &'a str,
    role_arn: &'a str,
    instance_arn: &'a str,
    /// Told once the deny is written, before it is checked against concurrent writers.
    written: Option<&'a (dyn Fn() + Sync)>,
}

impl Target<'_> {
    fn tell_written(&self) {
        if let Some(written) = self.written {
            written();
        }
    }
}

/// The policy `existing` should become, within IAM's size quota: this instance's ARN and every
/// ARN of the role's list (`listed`) in the statement.
fn fit(
    existing: &RevocationPolicy,
    listed: &BTreeSet<String>,
    others: &Result<usize, AwsError>,
    target: Target<'_>,
    mode: CredentialRevocation,
    now: &str,
) -> Result<(RevocationPolicy, Write), AwsError> {
    let mut wanted = existing.wanted(target.instance_arn, mode, now);
    wanted.instance_arns.extend(listed.iter().cloned());
    if wanted == *existing {
        return Ok((wanted, Write::Instance));
    }
    let others = others.clone()?;
    if others + wanted.chars() <= ROLE_POLICY_CHARS {
        return Ok((wanted, Write::Instance));
    }
    // The issue-time statement covers every credential the instance holds, so in role-wide mode
    // its ARN may stay out when there is no room for it. (A re-run then cannot tell it has been
    // here, and moves the bound forward again.)
    if mode == CredentialRevocation::RoleWide {
        // Every other listed instance stays in the statement; only this one's ARN is left out.
        let mut older = existing.wanted(target.instance_arn, mode, now);
        older.instance_arns.extend(listed.iter().cloned());
        older.instance_arns.remove(target.instance_arn);
        let total = others + older.chars();
        if total <= ROLE_POLICY_CHARS {
            return Ok((older, Write::OlderSessionsOnly));
        }
        return Err(too_big(target.role, mode, total, older.instance_arns.len()));
    }
    Err(too_big(
        target.role,
        mode,
        others + wanted.chars(),
        wanted.instance_arns.len(),
    ))
}

fn parse(found: &Option<Value>, role: &str) -> Result<RevocationPolicy, AwsError> {
    match found {
        Some(document) => RevocationPolicy::from_document(document).map_err(|e| {
            AwsError::local(
                "GetRolePolicy",
                format!(
                    "{POLICY_NAME} on role {role} is not a policy document, so it is not \
                     overwritten: {e}"
                ),
            )
        }),
        None => Ok(RevocationPolicy::default()),
    }
}

fn outcome(target: Target<'_>, wanted: &RevocationPolicy, last_write: Option<Write>) -> StepResult {
    match last_write {
        None => StepResult::unchanged(detail_of(target.role, target.instance_arn, wanted, None)),
        Some(write) => StepResult::done(detail_of(
            target.role,
            target.instance_arn,
            wanted,
            Some(write),
        )),
    }
}

/// Writes the role's list into the policy, and again whenever the list's version shows that
/// another writer changed it meanwhile ([`crate::revocations`]). No pause: the list, not IAM's
/// eventually consistent document, says what the policy must hold.
#[allow(clippy::too_many_arguments)]
async fn write_listed(
    clients: &Clients,
    ledger: &RevocationLedger,
    target: Target<'_>,
    mode: CredentialRevocation,
    now: &str,
    mut entry: Entry,
    mut found: Option<Value>,
    others: Result<usize, AwsError>,
) -> Result<StepResult, AwsError> {
    let mut last_write = None;
    for _ in 0..MAX_WRITES {
        let existing = parse(&found, target.role)?;
        let (wanted, write) = fit(&existing, &entry.instance_arns, &others, target, mode, now)?;
        let document = wanted.document();
        if found.as_ref() == Some(&document) {
            return Ok(outcome(target, &wanted, last_write));
        }
        put_policy(clients, target.role, &wanted).await?;
        last_write = Some(write);
        target.tell_written();
        let current = ledger
            .current(target.role_arn)
            .await
            .map_err(|e| AwsError {
                message: format!(
                    "the deny on role {} is written, but the revocation list could not be read \
                 back to rule out a concurrent writer: {}",
                    target.role, e.message
                ),
                ..e
            })?;
        if current.version == entry.version {
            return Ok(outcome(target, &wanted, last_write));
        }
        entry = current;
        found = Some(document);
    }
    Err(AwsError::local(
        "GetItem",
        format!(
            "the revocation list of role {} kept changing over {MAX_WRITES} writes of \
             {POLICY_NAME}; the last write may lack another instance's ARN",
            target.role
        ),
    ))
}

/// Without the list: writes, waits for IAM's eventual consistency to show a concurrent writer's
/// document, reads back and merges again when this instance's ARN was lost. This narrows the
/// race between writers but cannot close it.
async fn write_and_settle(
    clients: &Clients,
    target: Target<'_>,
    mode: CredentialRevocation,
    now: &str,
    mut found: Option<Value>,
    others: Result<usize, AwsError>,
) -> Result<StepResult, AwsError> {
    let mut last_write = None;
    // Each round's read is also the read-back of the previous round's write.
    for round in 0..=MAX_WRITES {
        if round > 0 {
            found = read_policy(clients, target.role).await?;
        }
        let existing = parse(&found, target.role)?;
        let (wanted, write) = fit(&existing, &BTreeSet::new(), &others, target, mode, now)?;
        if found.as_ref() == Some(&wanted.document()) {
            return Ok(outcome(target, &wanted, last_write));
        }
        if round == MAX_WRITES {
            break;
        }
        put_policy(clients, target.role, &wanted).await?;
        last_write = Some(write);
        target.tell_written();
        tokio::time::sleep(SETTLE).await;
    }
    Err(AwsError::local(
        "GetRolePolicy",
        format!(
            "the revocation of {} is still missing from {POLICY_NAME} on role {} after \
             {MAX_WRITES} writes: another writer keeps replacing the policy",
            target.instance_arn, target.role
        ),
    ))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    Instance,
    OlderSessionsOnly,
}

fn detail_of(
    role: &str,
    instance_arn: &str,
    policy: &RevocationPolicy,
    write: Option<Write>,
) -> String {
    let older = |verb: &str| {
        policy
            .older_than
            .as_deref()
            .map(|t| format!("; every session of the role issued before {t} {verb}"))
            .unwrap_or_default()
    };
    match write {
        None => format!(
            "credentials of {instance_arn} already denied on role {role}{}",
            older("already denied")
        ),
        Some(Write::Instance) => format!(
            "denied credentials of {instance_arn} on role {role} ({} instance(s) in \
             {POLICY_NAME}){}",
            policy.instance_arns.len(),
            older("denied")
        ),
        Some(Write::OlderSessionsOnly) => format!(
            "denied every session of role {role} issued before {}; {instance_arn} is not in \
             the list: its inline policies would exceed {ROLE_POLICY_CHARS} characters",
            policy.older_than.as_deref().unwrap_or_default()
        ),
    }
}

/// ARNs taken out of the policy by hand come back with the next write that reads the role's
/// revocation list: only a release takes them off the list.
const RELEASE_MAKES_ROOM: &str =
    "a release takes the instance's ARN off the role's revocation list and out of the policy; \
     editing the policy by hand does not, since the next write that reads the list restores it";

fn too_big(role: &str, mode: CredentialRevocation, total: usize, instances: usize) -> AwsError {
    let advice = match mode {
        CredentialRevocation::RoleWide => format!(
            "even with the issue-time statement alone; make room by removing other inline \
             policies of the role, or by releasing instances of the role that no longer need \
             containing ({RELEASE_MAKES_ROOM})"
        ),
        _ => format!(
            "set {REVOKE_INSTANCE_CREDENTIALS}=role-wide to deny every session of the role \
             issued before now instead (every workload of the role then loses its current \
             credentials), or release instances of the role that no longer need containing \
             ({RELEASE_MAKES_ROOM})"
        ),
    };
    AwsError::local(
        "PutRolePolicy",
        format!(
            "role {role}: {POLICY_NAME} ({instances} instance(s)) would bring its inline \
             policies to {total} characters, over IAM's limit of {ROLE_POLICY_CHARS}; the \
             credentials are NOT revoked: {advice}"
        ),
    )
}

/// Our policy on the role, parsed; `None` when the role has none.
pub(crate) async fn read_policy(clients: &Clients, role: &str) -> Result<Option<Value>, AwsError> {
    match get_policy(clients, role, POLICY_NAME).await? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            AwsError::local(
                "GetRolePolicy",
                format!("{POLICY_NAME} on role {role} is not JSON, so it is not overwritten: {e}"),
            )
        }),
    }
}

/// One inline policy's document as text, `None` when the role has no policy of that name.
async fn get_policy(clients: &Clients, role: &str, name: &str) -> Result<Option<String>, AwsError> {
    match clients
        .iam
        .get_role_policy()
        .role_name(role)
        .policy_name(name)
        .send()
        .await
        .map_err(aws_err("GetRolePolicy"))
    {
        Ok(output) => decode_document(output.policy_document())
            .map(Some)
            .map_err(|e| {
                AwsError::local(
                    "GetRolePolicy",
                    format!("policy {name} of role {role} cannot be decoded: {e}"),
                )
            }),
        Err(e) if e.has_code("NoSuchEntity") => Ok(None),
        Err(e) => Err(e),
    }
}

/// What the role's other inline policies already use of [`ROLE_POLICY_CHARS`]. They are read
/// rather than estimated: they may be anything from nothing to nearly all of it, and only their
/// real size tells whether the write fits. It costs a listing and a read per policy.
pub(crate) async fn other_policies_chars(clients: &Clients, role: &str) -> Result<usize, AwsError> {
    let names: Vec<String> = clients
        .iam
        .list_role_policies()
        .role_name(role)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(aws_err("ListRolePolicies"))?;
    let documents = join_all(
        names
            .iter()
            .filter(|n| *n != POLICY_NAME)
            .map(|name| get_policy(clients, role, name)),
    )
    .await;
    let mut total = 0;
    for document in documents {
        // A policy deleted since the listing takes no room.
        total += document?.as_deref().map(policy_chars).unwrap_or(0);
    }
    Ok(total)
}

pub(crate) async fn put_policy(
    clients: &Clients,
    role: &str,
    policy: &RevocationPolicy,
) -> Result<(), AwsError> {
    clients
        .iam
        .put_role_policy()
        .role_name(role)
        .policy_name(POLICY_NAME)
        .policy_document(policy.document().to_string())
        .send()
        .await
        .map_err(aws_err("PutRolePolicy"))
        .map_err(|e| unless_opted_in(e, role))?;
    Ok(())
}

/// A role-policy write that IAM refused: with `RevocableRoles=tagged`, the stack may only write
/// on roles that carry [`tags::REVOCABLE`], and the report says how to opt the role in.
pub(crate) fn unless_opted_in(e: AwsError, role: &str) -> AwsError {
    if !e.has_code("AccessDenied") {
        return e;
    }
    AwsError {
        message: format!(
            "{}; if the stack was deployed with RevocableRoles=tagged, role {role} must carry the \
             tag {}=true for its credentials to be denied or the deny lifted",
            e.message,
            tags::REVOCABLE
        ),
        ..e
    }
}

/// The characters IAM counts against its size quotas: all but whitespace.
pub fn policy_chars(document: &str) -> usize {
    document.chars().filter(|c| !c.is_whitespace()).count()
}

/// IAM returns policy documents URL-encoded (RFC 3986). A document that already parses as JSON
/// is taken as it is, so a literal `%` in one is never misread as an escape.
pub fn decode_document(raw: &str) -> Result<String, String> {
    if serde_json::from_str::<Value>(raw).is_ok() {
        return Ok(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = bytes
                .get(i + 1..i + 3)
                .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("a malformed escape at character {i}"))?;
            decoded.push(byte);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).map_err(|e| e.to_string())
}

/// The revocation policy taken apart: what we wrote, and everything else in it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RevocationPolicy {
    /// Top-level fields other than `Statement` (`Version`, `Id`), kept as found.
    pub header: Map<String, Value>,
    /// Statements we did not write, kept as found and in their order.
    pub others: Vec<Value>,
    /// The instances whose delivered credentials are denied.
    pub instance_arns: BTreeSet<String>,
    /// Role-wide mode: sessions issued before this time are denied.
    pub older_than: Option<String>,
}

impl RevocationPolicy {
    /// Pure. Our statements are recognised by their `Sid`; a condition written as one string
    /// instead of a list is read too, since IAM accepts both.
    pub fn from_document(document: &Value) -> Result<Self, String> {
        let Value::Object(fields) = document else {
            return Err("the document is not a JSON object".to_owned());
        };
        let mut header = fields.clone();
        let statements = match header.remove("Statement") {
            None => Vec::new(),
            Some(Value::Array(statements)) => statements,
            Some(statement @ Value::Object(_)) => vec![statement],
            Some(other) => return Err(format!("its Statement is {other}")),
        };
        let mut policy = Self {
            header,
            ..Self::default()
        };
        for statement in statements {
            match statement.get("Sid").and_then(Value::as_str) {
                Some(INSTANCE_SID) => policy.instance_arns.extend(strings(condition(
                    &statement,
                    "ArnEquals",
                    SOURCE_INSTANCE_ARN,
                ))),
                // Of several bounds, the latest denies the most.
                Some(OLDER_SESSIONS_SID) => {
                    policy.older_than =
                        strings(condition(&statement, "DateLessThan", TOKEN_ISSUE_TIME))
                            .into_iter()
                            .max()
                }
                _ => policy.others.push(statement),
            }
        }
        Ok(policy)
    }

    /// Pure: what this run wants on the role. This instance's ARN joins the list; role-wide mode
    /// denies sessions issued before `now`, unless the instance was already in the list and a
    /// bound is already there (a re-run, which then changes nothing).
    pub fn wanted(&self, instance_arn: &str, mode: CredentialRevocation, now: &str) -> Self {
        let mut wanted = self.clone();
        let added = wanted.instance_arns.insert(instance_arn.to_owned());
        if mode == CredentialRevocation::RoleWide && (added || wanted.older_than.is_none()) {
            // Never earlier than a bound another writer already set: `now` was taken when this
            // run began, and moving the bound back would let sessions between the two through.
            // (Both are written by `issue_time_bound`, so they compare as text.)
            wanted.older_than = Some(match wanted.older_than.take() {
                Some(set) if set.as_str() > now => set,
                _ => now.to_owned(),
            });
        }
        wanted
    }

    /// Pure: the document to write. Ours come after the statements of others.
    pub fn document(&self) -> Value {
        let mut statements = self.others.clone();
        if !self.instance_arns.is_empty() {
            statements.push(json!({
                "Sid": INSTANCE_SID,
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {"ArnEquals": {SOURCE_INSTANCE_ARN: self.instance_arns}},
            }));
        }
        if let Some(older_than) = &self.older_than {
            statements.push(json!({
                "Sid": OLDER_SESSIONS_SID,
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {"DateLessThan": {TOKEN_ISSUE_TIME: older_than}},
            }));
        }
        let mut document = self.header.clone();
        document
            .entry("Version")
            .or_insert_with(|| Value::from("2012-10-17"));
        document.insert("Statement".to_owned(), Value::Array(statements));
        Value::Object(document)
    }

    /// The characters the document counts against [`ROLE_POLICY_CHARS`].
    pub fn chars(&self) -> usize {
        policy_chars(&self.document().to_string())
    }
}

fn condition<'a>(statement: &'a Value, operator: &str, key: &str) -> Option<&'a Value> {
    statement.get("Condition")?.get(operator)?.get(key)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0aaaaaaaaaaaaaaaa";
    const B: &str = "arn:aws:ec2:us-east-1:123456789012:instance/i-0bbbbbbbbbbbbbbbb";
    const NOW: &str = "2026-11-23T10:00:01Z";

    fn instance_statement(arns: &[&str]) -> Value {
        json!({
            "Sid": "Ec2QuarantineRevokeInstanceCredentials",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"ArnEquals": {"ec2:SourceInstanceARN": arns}},
        })
    }

    fn older_sessions_statement(time: &str) -> Value {
        json!({
            "Sid": "Ec2QuarantineRevokeOlderSessions",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": time}},
        })
    }

    fn first(mode: CredentialRevocation) -> RevocationPolicy {
        RevocationPolicy::default().wanted(A, mode, NOW)
    }

    #[test]
    fn the_role_wide_bound_never_moves_back_to_an_earlier_run_start() {
        let later = "2026-11-23T10:00:09Z";
        let existing = RevocationPolicy {
            instance_arns: [A.to_owned()].into(),
            older_than: Some(later.to_owned()),
            ..RevocationPolicy::default()
        };
        // This run began at NOW, before another writer set the later bound.
        let wanted = existing.wanted(B, CredentialRevocation::RoleWide, NOW);
        assert_eq!(wanted.older_than.as_deref(), Some(later));
        let fresh = RevocationPolicy {
            older_than: Some("2026-11-23T09:00:00Z".to_owned()),
            ..RevocationPolicy::default()
        }
        .wanted(B, CredentialRevocation::RoleWide, NOW);
        assert_eq!(fresh.older_than.as_deref(), Some(NOW));
    }

    #[test]
    fn a_first_revocation_is_one_deny_statement_naming_the_instance() {
        assert_eq!(
            first(CredentialRevocation::Instance).document(),
            json!({"Version": "2012-10-17", "Statement": [instance_statement(&[A])]})
        );
    }

    #[test]
    fn a_second_instance_joins_the_same_statement_sorted_and_once() {
        let existing =
            RevocationPolicy::from_document(&first(CredentialRevocation::Instance).document())
                .unwrap();
        let once = existing
            .wanted(B, CredentialRevocation::Instance, NOW)
            .document();
        let twice = RevocationPolicy::from_document(&once)
            .unwrap()
            .wanted(B, CredentialRevocation::Instance, NOW)
            .document();
        let expected = json!({"Version": "2012-10-17", "Statement": [instance_statement(&[A, B])]});
        assert_eq!(once, expected);
        assert_eq!(
            twice, expected,
            "adding an ARN already there changes nothing"
        );
        // Reversed input order gives the same sorted list.
        let reversed = RevocationPolicy::default()
            .wanted(B, CredentialRevocation::Instance, NOW)
            .wanted(A, CredentialRevocation::Instance, NOW);
        assert_eq!(reversed.document(), expected);
    }

    #[test]
    fn statements_and_fields_someone_else_wrote_are_kept() {
        let foreign = json!({"Sid": "Legacy", "Effect": "Deny", "Action": "s3:*", "Resource": "*"});
        let existing = json!({
            "Version": "2012-10-17",
            "Id": "by-hand",
            "Statement": foreign,
        });
        let wanted = RevocationPolicy::from_document(&existing).unwrap().wanted(
            A,
            CredentialRevocation::Instance,
            NOW,
        );
        assert_eq!(
            wanted.document(),
            json!({
                "Version": "2012-10-17",
                "Id": "by-hand",
                "Statement": [foreign, instance_statement(&[A])],
            })
        );
    }

    #[test]
    fn a_single_arn_written_as_a_string_is_read() {
        let existing = json!({"Version": "2012-10-17", "Statement": [{
            "Sid": "Ec2QuarantineRevokeInstanceCredentials", "Effect": "Deny", "Action": "*",
            "Resource": "*", "Condition": {"ArnEquals": {"ec2:SourceInstanceARN": A}}}]});
        let parsed = RevocationPolicy::from_document(&existing).unwrap();
        assert_eq!(parsed.instance_arns, BTreeSet::from([A.to_owned()]));
        assert!(parsed.others.is_empty());
    }

    #[test]
    fn role_wide_mode_adds_the_issue_time_statement_and_a_rerun_keeps_its_time() {
        let wanted = first(CredentialRevocation::RoleWide);
        assert_eq!(
            wanted.document(),
            json!({"Version": "2012-10-17", "Statement": [
                instance_statement(&[A]),
                older_sessions_statement(NOW),
            ]})
        );
        let rerun = RevocationPolicy::from_document(&wanted.document())
            .unwrap()
            .wanted(A, CredentialRevocation::RoleWide, "2026-11-23T11:00:00Z");
        assert_eq!(
            rerun.document(),
            wanted.document(),
            "a re-run does not move the bound"
        );
        let next_instance = RevocationPolicy::from_document(&wanted.document())
            .unwrap()
            .wanted(B, CredentialRevocation::RoleWide, "2026-11-23T11:00:00Z");
        assert_eq!(
            next_instance.older_than.as_deref(),
            Some("2026-11-23T11:00:00Z"),
            "a new instance moves it to its own now"
        );
    }

    #[test]
    fn per_instance_mode_keeps_an_issue_time_statement_already_there() {
        let role_wide = first(CredentialRevocation::RoleWide).document();
        let wanted = RevocationPolicy::from_document(&role_wide).unwrap().wanted(
            B,
            CredentialRevocation::Instance,
            "2026-11-23T11:00:00Z",
        );
        assert_eq!(wanted.older_than.as_deref(), Some(NOW));
    }

    #[test]
    fn documents_that_are_not_policies_are_refused() {
        assert!(RevocationPolicy::from_document(&json!([1])).is_err());
        assert!(RevocationPolicy::from_document(&json!({"Statement": 3})).is_err());
    }

    #[test]
    fn about_140_instances_fit_in_a_role_with_no_other_inline_policy() {
        let mut policy = RevocationPolicy::default();
        let mut fitted = 0;
        for n in 0.. {
            let next = policy.wanted(
                &format!("arn:aws:ec2:us-east-1:123456789012:instance/i-{n:017x}"),
                CredentialRevocation::Instance,
                NOW,
            );
            if next.chars() > ROLE_POLICY_CHARS {
                break;
            }
            policy = next;
            fitted += 1;
        }
        assert!((140..=165).contains(&fitted), "{fitted} fit");
    }

    #[test]
    fn whitespace_does_not_count_against_the_quota() {
        assert_eq!(policy_chars("{ \"a\" :\n\t[1, 2] }"), 11);
    }

    #[test]
    fn iam_documents_are_url_decoded_and_plain_json_is_kept() {
        assert_eq!(
            decode_document("%7B%22Version%22%3A%20%222012-10-17%22%7D").unwrap(),
            r#"{"Version": "2012-10-17"}"#
        );
        let literal = r#"{"Resource": "arn:aws:s3:::a%20b"}"#;
        assert_eq!(decode_document(literal).unwrap(), literal);
        assert!(decode_document("%7B%2").is_err());
        assert!(decode_document("%+1").is_err());
    }

    #[test]
    fn the_instance_arn_takes_partition_and_account_from_the_profile() {
        assert_eq!(
            instance_arn(
                "arn:aws-cn:iam::123456789012:instance-profile/path/web",
                "cn-north-1",
                "i-0123456789abcdef0"
            )
            .as_deref(),
            Some("arn:aws-cn:ec2:cn-north-1:123456789012:instance/i-0123456789abcdef0")
        );
        assert_eq!(
            instance_arn(
                "arn:aws:iam::123456789012:role/web",
                "us-east-1",
                "i-0123456789abcdef0"
            ),
            None
        );
    }

    #[test]
    fn the_issue_time_bound_is_rounded_up_to_the_second() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_250);
        assert_eq!(issue_time_bound(t), "2026-11-18T11:06:41Z");
        let exact = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(issue_time_bound(exact), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn the_original_profile_comes_from_the_association_then_the_description() {
        let isolation = InstanceProfileRef::Name("iso".into());
        let app = "arn:aws:iam::123456789012:instance-profile/app";
        let iso = "arn:aws:iam::123456789012:instance-profile/iso";
        let association = |arn: &str| {
            Ok(Some(Association {
                association_id: "a".into(),
                profile_arn: arn.into(),
            }))
        };
        assert_eq!(
            OriginalProfile::of(&association(app), None, &isolation),
            OriginalProfile::Arn(app.into())
        );
        assert_eq!(
            OriginalProfile::of(&association(iso), Some(app), &isolation),
            OriginalProfile::Replaced
        );
        assert_eq!(
            OriginalProfile::of(&Ok(None), None, &isolation),
            OriginalProfile::None
        );
        let failed = Err(AwsError::local(
            "DescribeIamInstanceProfileAssociations",
            "x",
        ));
        assert_eq!(
            OriginalProfile::of(&failed, Some(app), &isolation),
            OriginalProfile::Arn(app.into())
        );
    }
}
