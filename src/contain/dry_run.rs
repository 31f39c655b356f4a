//! The dry run (`DRY_RUN=true`, or `"dry_run": true` in a direct invocation): every read a real
//! run makes, and for each step the list of changes it would make, with nothing changed.
//!
//! IAM: the read permissions of the steps only (`Describe*`, `Get*`, `List*`, `dynamodb:GetItem`).
//!
//! It does not run the steps with their writes switched off: each step here is a plan built from
//! the same reads and the same decisions as the real step (the step modules' read functions and
//! pure rules, shared), so that a dry run can never write by mistake and the real steps carry no
//! dry-run branches on their critical path. `tests/integration/dry_run.rs` checks that the plan
//! names the calls a real run then makes.
//!
//! Nothing is claimed, leased, tagged or snapshotted: the incident record is read (`GetItem`) to
//! say whether a claim exists, and is never written. Only a failed read fails a step, and the
//! invocation with it; a step that a real run would fail for another reason (a full role
//! policy) says so in its detail.

mod network;

use std::time::Instant;

use futures::future::join_all;
use futures::stream::{self, StreamExt};

use super::credentials::{self, OriginalProfile, RevocationPolicy, POLICY_NAME, ROLE_POLICY_CHARS};
use super::identity::{self, Association};
use super::instance::{self, InstanceFacts};
use super::{evidence, load_balancing, protection, scaling, tags};
use super::{now_rfc3339, rejected, step_report, StepResult};
use crate::aws::{AwsError, Clients};
use crate::config::{Config, CredentialRevocation, REVOKE_INSTANCE_CREDENTIALS};
use crate::event::ContainRequest;
use crate::incident::{IncidentStore, Record, RELEASED};
use crate::report::{
    InstanceOutcome, InstanceReport, PlannedChange, Report, SnapshotRecord, Status, Step,
    StepReport,
};

/// What one step would do.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Plan {
    status: Status,
    detail: String,
    changes: Vec<PlannedChange>,
}

impl Plan {
    fn unchanged(detail: impl Into<String>) -> Self {
        Self {
            status: Status::Unchanged,
            detail: detail.into(),
            changes: Vec::new(),
        }
    }

    fn skipped(detail: impl Into<String>) -> Self {
        Self {
            status: Status::Skipped,
            detail: detail.into(),
            changes: Vec::new(),
        }
    }

    /// `planned` with these changes, or `unchanged` with `otherwise` when there are none.
    fn changes(changes: Vec<PlannedChange>, otherwise: impl Into<String>) -> Self {
        if changes.is_empty() {
            return Self::unchanged(otherwise);
        }
        Self {
            status: Status::Planned,
            detail: changes
                .iter()
                .map(|c| c.detail.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            changes,
        }
    }
}

fn change(action: &str, target: impl Into<String>, detail: impl Into<String>) -> PlannedChange {
    PlannedChange {
        action: action.to_owned(),
        target: target.into(),
        detail: detail.into(),
    }
}

fn report(step: Step, started: Instant, plan: Result<Plan, AwsError>) -> StepReport {
    match plan {
        Ok(plan) => {
            let mut report = step_report(
                step,
                started,
                Ok(StepResult {
                    status: plan.status,
                    detail: plan.detail,
                }),
            );
            report.changes = plan.changes;
            report
        }
        Err(e) => step_report(step, started, Err(e)),
    }
}

/// Plans the containment of every instance of `request`; changes nothing.
pub async fn plan_all(
    clients: &Clients,
    config: &Config,
    request: &ContainRequest,
    invocation_id: &str,
) -> Report {
    let store = IncidentStore::new(
        clients.dynamodb.clone(),
        &config.incident_table,
        config.claim_timeout,
    );
    let invocation = Invocation {
        clients,
        config,
        store: &store,
        incident: request.event_id.as_deref().unwrap_or(invocation_id),
        reason: &request.reason,
    };
    let instances = stream::iter(&request.instance_ids)
        .map(|id| plan_one(&invocation, id))
        .buffered(config.max_concurrent_instances)
        .collect()
        .await;
    Report::dry_run(request.reason.clone(), instances)
}

struct Invocation<'a> {
    clients: &'a Clients,
    config: &'a Config,
    store: &'a IncidentStore,
    incident: &'a str,
    reason: &'a str,
}

async fn plan_one(inv: &Invocation<'_>, instance_id: &str) -> InstanceReport {
    let clients = inv.clients;
    let config = inv.config;
    let started = Instant::now();
    let (described, association, record) = tokio::join!(
        instance::describe(clients, instance_id),
        identity::current_association(clients, instance_id),
        inv.store.get(instance_id),
    );
    let facts = match described {
        Ok(facts) => facts,
        Err(e) => return rejected(instance_id, started, e),
    };
    // A released instance's record is replaced by a new claim, as in a real run.
    let claimed = match &record {
        Ok(Some(r)) if r.status != RELEASED => Some(r),
        _ => None,
    };
    let incident = match claimed {
        Some(r) => r.incident.clone(),
        None => facts
            .tags
            .get(tags::INCIDENT)
            .cloned()
            .unwrap_or_else(|| inv.incident.to_owned()),
    };
    let claim = report(
        Step::RecordIncident,
        started,
        plan_claim(&config.incident_table, instance_id, &incident, &record),
    );

    let original_profile = match OriginalProfile::of(
        &association,
        facts.profile_arn.as_deref(),
        &config.isolation_profile,
    ) {
        // As in a real run: the record still names the profile an earlier run replaced.
        OriginalProfile::Replaced => match claimed.and_then(|r| r.profile.as_ref()) {
            Some(profile) => match &profile.arn {
                Some(arn) => OriginalProfile::Arn(arn.clone()),
                None => OriginalProfile::None,
            },
            None => OriginalProfile::Replaced,
        },
        other => other,
    };

    let timed = |step: Step| {
        let started = Instant::now();
        move |plan: Result<Plan, AwsError>| report(step, started, plan)
    };
    let ((group, interfaces), profile, revoked, scaled, targets, classic, protected, kept, snaps) = tokio::join!(
        network::plan(clients, config, &facts),
        async {
            timed(Step::ReplaceInstanceProfile)(plan_profile(config, instance_id, association))
        },
        async {
            let done = timed(Step::RevokeCredentials);
            done(
                plan_revocation(
                    clients,
                    config.revoke_credentials,
                    instance_id,
                    original_profile,
                )
                .await,
            )
        },
        async {
            let done = timed(Step::DetachAutoScaling);
            done(plan_detach(clients, instance_id).await)
        },
        async {
            let done = timed(Step::DeregisterTargetGroups);
            done(plan_target_groups(clients, &facts).await)
        },
        async {
            let done = timed(Step::DeregisterClassicLoadBalancers);
            done(plan_classic(clients, instance_id).await)
        },
        async {
            let done = timed(Step::ProtectInstance);
            done(plan_protection(clients, &facts).await)
        },
        async { timed(Step::KeepVolumes)(Ok(plan_keep_volumes(&facts))) },
        plan_snapshots(clients, config.snapshot_volumes, &facts, &incident, claimed),
    );
    let (snapshots_step, snapshots) = snaps;
    let mut steps = vec![
        claim,
        group,
        interfaces,
        profile,
        revoked,
        scaled,
        targets,
        classic,
        protected,
        kept,
        snapshots_step,
    ];
    let tagged = timed(Step::TagInstance)(Ok(plan_tags(inv, &facts, &incident, &steps)));
    steps.push(tagged);

    InstanceReport {
        instance_id: instance_id.to_owned(),
        vpc_id: facts.vpc_id.clone(),
        outcome: InstanceOutcome::DryRun,
        incident: Some(incident),
        steps,
        snapshots,
        original: None,
        metadata: facts.metadata,
    }
}

fn plan_claim(
    table: &str,
    instance_id: &str,
    incident: &str,
    record: &Result<Option<Record>, AwsError>,
) -> Result<Plan, AwsError> {
    match record {
        Err(e) => Err(e.clone()),
        Ok(Some(r)) if r.status != RELEASED => Ok(Plan::unchanged(format!(
            "claimed at {} by {} for incident {}",
            r.claimed_at, r.claimed_by, r.incident
        ))),
        Ok(_) => Ok(Plan::changes(
            vec![change(
                "PutItem",
                format!("{table}/{instance_id}"),
                format!(
                    "would claim {instance_id} for incident {incident} in {table}, with its \
                     original state, before any change"
                ),
            )],
            "",
        )),
    }
}

fn plan_profile(
    config: &Config,
    instance_id: &str,
    association: Result<Option<Association>, AwsError>,
) -> Result<Plan, AwsError> {
    let isolation = &config.isolation_profile;
    Ok(match association? {
        Some(a) if isolation.matches_arn(&a.profile_arn) => {
            Plan::unchanged(format!("{instance_id} already has {}", a.profile_arn))
        }
        Some(a) => Plan::changes(
            vec![change(
                "ReplaceIamInstanceProfileAssociation",
                &a.association_id,
                format!(
                    "would replace {} with {isolation} on {instance_id} (association {})",
                    a.profile_arn, a.association_id
                ),
            )],
            "",
        ),
        None => Plan::changes(
            vec![change(
                "AssociateIamInstanceProfile",
                instance_id,
                format!("would associate {isolation} with {instance_id} (it has no profile)"),
            )],
            "",
        ),
    })
}

async fn plan_revocation(
    clients: &Clients,
    mode: CredentialRevocation,
    instance_id: &str,
    original: OriginalProfile,
) -> Result<Plan, AwsError> {
    let profile_arn = match (mode, original) {
        (CredentialRevocation::Off, _) => {
            return Ok(Plan::skipped(format!(
                "turned off by {REVOKE_INSTANCE_CREDENTIALS}=false"
            )))
        }
        (_, OriginalProfile::None) => {
            return Ok(Plan::unchanged(
                "no credentials were issued: the instance had no profile",
            ))
        }
        (_, OriginalProfile::Replaced) => {
            return Ok(Plan::skipped(
                "the original profile was replaced by an earlier run, which revoked its \
                 credentials",
            ))
        }
        (_, OriginalProfile::Arn(arn)) => arn,
    };
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
    let instance_arn =
        credentials::instance_arn(&profile_arn, &region, instance_id).ok_or_else(|| {
            AwsError::local(
                "GetInstanceProfile",
                format!("cannot read partition and account from the profile ARN {profile_arn}"),
            )
        })?;
    let profile_name = profile_arn.rsplit('/').next().unwrap_or(&profile_arn);
    let profile = clients
        .iam
        .get_instance_profile()
        .instance_profile_name(profile_name)
        .send()
        .await
        .map_err(crate::aws::aws_err("GetInstanceProfile"))?;
    let roles: Vec<String> = profile
        .instance_profile()
        .map(|p| p.roles().iter().map(|r| r.role_name().to_owned()).collect())
        .unwrap_or_default();
    if roles.is_empty() {
        return Ok(Plan::unchanged(format!(
            "no credentials were issued: {profile_arn} has no role"
        )));
    }
    let now = credentials::issue_time_bound(std::time::SystemTime::now());
    let plans = join_all(
        roles
            .iter()
            .map(|role| plan_role(clients, role, &instance_arn, mode, &now)),
    )
    .await;
    let mut changes = Vec::new();
    let mut notes = Vec::new();
    for plan in plans {
        match plan? {
            RolePlan::Write(c) => changes.push(c),
            RolePlan::AlreadyDenied(note) => notes.push(note),
        }
    }
    Ok(Plan::changes(changes, notes.join("; ")))
}

enum RolePlan {
    Write(PlannedChange),
    AlreadyDenied(String),
}

/// The same decision as the real step's: our policy on the role, with this instance added.
async fn plan_role(
    clients: &Clients,
    role: &str,
    instance_arn: &str,
    mode: CredentialRevocation,
    now: &str,
) -> Result<RolePlan, AwsError> {
    let found = credentials::read_policy(clients, role).await?;
    let existing = match &found {
        Some(document) => RevocationPolicy::from_document(document).map_err(|e| {
            AwsError::local(
                "GetRolePolicy",
                format!("{POLICY_NAME} on role {role} is not a policy document: {e}"),
            )
        })?,
        None => RevocationPolicy::default(),
    };
    let wanted = existing.wanted(instance_arn, mode, now);
    if found.as_ref() == Some(&wanted.document()) {
        return Ok(RolePlan::AlreadyDenied(format!(
            "credentials of {instance_arn} already denied on role {role}"
        )));
    }
    let others = credentials::other_policies_chars(clients, role).await?;
    let older = |policy: &RevocationPolicy| {
        policy
            .older_than
            .as_deref()
            .map(|t| format!("; every session of the role issued before {t} denied"))
            .unwrap_or_default()
    };
    let older_only = RevocationPolicy {
        older_than: Some(now.to_owned()),
        ..existing.clone()
    };
    let detail = if others + wanted.chars() <= ROLE_POLICY_CHARS {
        format!(
            "would deny the credentials of {instance_arn} on role {role}: {POLICY_NAME} with {} \
             instance(s){}",
            wanted.instance_arns.len(),
            older(&wanted)
        )
    } else if mode == CredentialRevocation::RoleWide
        && others + older_only.chars() <= ROLE_POLICY_CHARS
    {
        format!(
            "would deny every session of role {role} issued before {now}; {instance_arn} would \
             not be listed: its inline policies would exceed {ROLE_POLICY_CHARS} characters"
        )
    } else {
        // No write: the real step fails here, before any call.
        return Ok(RolePlan::AlreadyDenied(format!(
            "a real run would FAIL to deny the credentials of {instance_arn} on role {role}: its \
             inline policies would exceed {ROLE_POLICY_CHARS} characters"
        )));
    };
    Ok(RolePlan::Write(change("PutRolePolicy", role, detail)))
}

async fn plan_detach(clients: &Clients, instance_id: &str) -> Result<Plan, AwsError> {
    let changes = match scaling::membership(clients, instance_id).await? {
        None => Vec::new(),
        Some(group) => vec![change(
            "DetachInstances",
            &group,
            format!(
                "would detach {instance_id} from {group} without lowering its desired capacity \
                 (the group launches a replacement)"
            ),
        )],
    };
    Ok(Plan::changes(changes, "not in an Auto Scaling group"))
}

async fn plan_target_groups(clients: &Clients, facts: &InstanceFacts) -> Result<Plan, AwsError> {
    let (count, registered) = load_balancing::registered_groups(clients, facts).await?;
    let changes = registered
        .iter()
        .map(|(arn, _, targets)| {
            let targets: Vec<String> = targets
                .iter()
                .map(|t| match t.port() {
                    Some(port) => format!("{}:{port}", t.id().unwrap_or_default()),
                    None => t.id().unwrap_or_default().to_owned(),
                })
                .collect();
            change(
                "DeregisterTargets",
                arn,
                format!("would deregister {} from {arn}", targets.join(", ")),
            )
        })
        .collect();
    Ok(Plan::changes(
        changes,
        format!("registered in none of {count} target group(s)"),
    ))
}

async fn plan_classic(clients: &Clients, instance_id: &str) -> Result<Plan, AwsError> {
    let names = load_balancing::classic_balancers_with(clients, instance_id, None).await?;
    let changes = names
        .iter()
        .map(|name| {
            change(
                "DeregisterInstancesFromLoadBalancer",
                name,
                format!("would deregister {instance_id} from classic load balancer {name}"),
            )
        })
        .collect();
    Ok(Plan::changes(
        changes,
        "registered with no classic load balancer",
    ))
}

async fn plan_protection(clients: &Clients, facts: &InstanceFacts) -> Result<Plan, AwsError> {
    if facts.spot {
        return Ok(Plan::skipped(
            "Spot instances cannot take termination or stop protection",
        ));
    }
    let id = &facts.instance_id;
    let now = protection::read_protection(clients, id).await?;
    let mut changes = Vec::new();
    if !now.termination {
        changes.push(change(
            "ModifyInstanceAttribute",
            id,
            format!("would turn termination protection on for {id} (DisableApiTermination)"),
        ));
    }
    if !now.stop {
        changes.push(change(
            "ModifyInstanceAttribute",
            id,
            format!("would turn stop protection on for {id} (DisableApiStop)"),
        ));
    }
    if !now.shutdown_stops {
        changes.push(change(
            "ModifyInstanceAttribute",
            id,
            format!(
                "would make an OS shutdown stop {id} rather than terminate it \
                 (InstanceInitiatedShutdownBehavior=stop)"
            ),
        ));
    }
    Ok(Plan::changes(
        changes,
        "termination and stop protection already on; OS shutdown already stops",
    ))
}

fn plan_keep_volumes(facts: &InstanceFacts) -> Plan {
    if facts.volumes.is_empty() {
        return Plan::skipped("no EBS volume attached (instance-store volumes cannot be kept)");
    }
    let deleting: Vec<String> = facts
        .volumes
        .iter()
        .filter(|v| v.delete_on_termination)
        .map(|v| format!("{} ({})", v.volume_id, v.device_name))
        .collect();
    let changes = if deleting.is_empty() {
        Vec::new()
    } else {
        vec![change(
            "ModifyInstanceAttribute",
            &facts.instance_id,
            format!(
                "would keep {} when {} terminates (DeleteOnTermination=false)",
                deleting.join(", "),
                facts.instance_id
            ),
        )]
    };
    Plan::changes(
        changes,
        format!(
            "{} volume(s) already kept on termination",
            facts.volumes.len()
        ),
    )
}

async fn plan_snapshots(
    clients: &Clients,
    enabled: bool,
    facts: &InstanceFacts,
    incident: &str,
    claimed: Option<&Record>,
) -> (StepReport, Vec<SnapshotRecord>) {
    let started = Instant::now();
    if !enabled {
        let plan = Plan::skipped("turned off by SNAPSHOT_VOLUMES=false");
        return (report(Step::SnapshotVolumes, started, Ok(plan)), Vec::new());
    }
    if facts.volumes.is_empty() {
        let plan =
            Plan::skipped("no EBS volume attached (instance-store volumes cannot be snapshotted)");
        return (report(Step::SnapshotVolumes, started, Ok(plan)), Vec::new());
    }
    if let Some(taken) = claimed.and_then(|r| r.snapshots.clone()) {
        let plan = Plan::unchanged(format!(
            "{} snapshot(s) already taken for incident {incident}",
            taken.len()
        ));
        return (report(Step::SnapshotVolumes, started, Ok(plan)), taken);
    }
    let existing = match evidence::existing(clients, &facts.instance_id, incident).await {
        Ok(existing) => existing,
        Err(e) => return (report(Step::SnapshotVolumes, started, Err(e)), Vec::new()),
    };
    let missing: Vec<&str> = facts
        .volumes
        .iter()
        .map(|v| v.volume_id.as_str())
        .filter(|v| !existing.contains_key(*v))
        .collect();
    let changes = if missing.is_empty() {
        Vec::new()
    } else {
        vec![change(
            "CreateSnapshots",
            &facts.instance_id,
            format!(
                "would snapshot {} of {} in one crash-consistent call, tagged {}={} and {}={incident}",
                missing.join(", "),
                facts.instance_id,
                tags::SNAPSHOT_INSTANCE,
                facts.instance_id,
                tags::INCIDENT,
            ),
        )]
    };
    let plan = Plan::changes(
        changes,
        format!(
            "{} volume(s) already snapshotted for incident {incident}",
            existing.len()
        ),
    );
    let snapshots = existing
        .into_iter()
        .map(|(volume_id, snapshot_id)| SnapshotRecord {
            snapshot_id,
            volume_id,
        })
        .collect();
    (report(Step::SnapshotVolumes, started, Ok(plan)), snapshots)
}

/// The tags a real run would write if every planned step succeeded.
fn plan_tags(
    inv: &Invocation<'_>,
    facts: &InstanceFacts,
    incident: &str,
    steps: &[StepReport],
) -> Plan {
    let as_done: Vec<StepReport> = steps
        .iter()
        .cloned()
        .map(|mut s| {
            if s.status == Status::Planned {
                s.status = Status::Done;
            }
            s
        })
        .collect();
    let wanted = tags::desired(
        &facts.tags,
        InstanceOutcome::Contained,
        incident,
        inv.reason,
        &as_done,
        &now_rfc3339(),
    );
    let differing: Vec<String> = wanted
        .iter()
        .filter(|(k, v)| facts.tags.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let changes = if differing.is_empty() {
        Vec::new()
    } else {
        vec![change(
            "CreateTags",
            &facts.instance_id,
            format!(
                "would tag {} with {}",
                facts.instance_id,
                differing.join(", ")
            ),
        )]
    };
    Plan::changes(
        changes,
        format!(
            "{}={} already set",
            tags::STATUS,
            wanted
                .get(tags::STATUS)
                .map(String::as_str)
                .unwrap_or_default()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InstanceProfileRef;
    use crate::contain::instance::Volume;
    use serde_json::Value;

    fn config() -> Config {
        Config::from_lookup(|name| match name {
            "ISOLATION_INSTANCE_PROFILE" => Some("iso".to_owned()),
            "INCIDENT_TABLE" => Some("incidents".to_owned()),
            _ => None,
        })
        .unwrap()
    }

    fn record(status: &str) -> Record {
        Record {
            instance_id: "i-12345678".into(),
            incident: "evt-1".into(),
            status: status.into(),
            claimed_by: "req-1".into(),
            claimed_at: "2026-11-23T10:00:00Z".into(),
            ..Record::default()
        }
    }

    #[test]
    fn a_claim_is_planned_unless_a_live_record_exists() {
        let plan = plan_claim("incidents", "i-12345678", "evt-2", &Ok(None)).unwrap();
        assert_eq!(plan.status, Status::Planned);
        assert_eq!(
            (
                plan.changes[0].action.as_str(),
                plan.changes[0].target.as_str()
            ),
            ("PutItem", "incidents/i-12345678")
        );
        let claimed = plan_claim(
            "incidents",
            "i-12345678",
            "evt-1",
            &Ok(Some(record("contained"))),
        )
        .unwrap();
        assert_eq!(claimed.status, Status::Unchanged);
        assert!(claimed.detail.contains("by req-1 for incident evt-1"));
        // Release ends a quarantine: a new one claims the instance again.
        let released = plan_claim(
            "incidents",
            "i-12345678",
            "evt-2",
            &Ok(Some(record(RELEASED))),
        )
        .unwrap();
        assert_eq!(released.status, Status::Planned);
        let failed = Err(AwsError::local("GetItem", "throttled"));
        assert!(plan_claim("incidents", "i-12345678", "evt-2", &failed).is_err());
    }

    #[test]
    fn the_profile_is_replaced_associated_or_left_as_it_is() {
        let config = config();
        let association = |arn: &str| {
            Ok(Some(Association {
                association_id: "iip-assoc-1".into(),
                profile_arn: arn.into(),
            }))
        };
        let app = "arn:aws:iam::123456789012:instance-profile/app";
        let replace = plan_profile(&config, "i-12345678", association(app)).unwrap();
        assert_eq!(
            replace.changes[0].action,
            "ReplaceIamInstanceProfileAssociation"
        );
        assert_eq!(replace.changes[0].target, "iip-assoc-1");
        assert!(replace.changes[0].detail.contains(app));
        let associate = plan_profile(&config, "i-12345678", Ok(None)).unwrap();
        assert_eq!(
            (
                associate.changes[0].action.as_str(),
                associate.changes[0].target.as_str()
            ),
            ("AssociateIamInstanceProfile", "i-12345678")
        );
        assert_eq!(
            config.isolation_profile,
            InstanceProfileRef::Name("iso".into())
        );
        let isolated = plan_profile(
            &config,
            "i-12345678",
            association("arn:aws:iam::123456789012:instance-profile/iso"),
        )
        .unwrap();
        assert_eq!(
            (isolated.status, isolated.changes.len()),
            (Status::Unchanged, 0)
        );
    }

    #[test]
    fn only_volumes_still_deleted_on_termination_are_planned() {
        let volume = |id: &str, device: &str, deleted: bool| Volume {
            device_name: device.into(),
            volume_id: id.into(),
            delete_on_termination: deleted,
        };
        let mut facts = InstanceFacts {
            instance_id: "i-12345678".into(),
            state: "running".into(),
            vpc_id: None,
            interfaces: Vec::new(),
            profile_arn: None,
            volumes: vec![
                volume("vol-a", "/dev/sda1", true),
                volume("vol-b", "/dev/sdf", false),
            ],
            root_device_name: Some("/dev/sda1".into()),
            root_device_is_ebs: true,
            spot: false,
            tags: Default::default(),
            metadata: Value::Null,
        };
        let plan = plan_keep_volumes(&facts);
        assert_eq!(plan.changes.len(), 1);
        assert!(plan.changes[0].detail.contains("vol-a (/dev/sda1)"));
        assert!(!plan.changes[0].detail.contains("vol-b"));
        facts.volumes[0].delete_on_termination = false;
        assert_eq!(plan_keep_volumes(&facts).status, Status::Unchanged);
        facts.volumes.clear();
        assert_eq!(plan_keep_volumes(&facts).status, Status::Skipped);
    }
}
