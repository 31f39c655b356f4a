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

mod evidence;
mod identity;
mod network;
mod traffic;

use std::future::Future;
use std::time::Instant;

use futures::stream::{self, StreamExt};

use super::credentials::OriginalProfile;
use super::instance::{self, InstanceFacts};
use super::{identity as identity_step, tags};
use super::{now_rfc3339, rejected, step_report, StepResult};
use crate::aws::{AwsError, Clients};
use crate::config::Config;
use crate::event::ContainRequest;
use crate::incident::{IncidentStore, Record, RELEASED};
use crate::report::{
    InstanceOutcome, InstanceReport, PlannedChange, Report, Status, Step, StepReport,
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

/// A step's plan, timed as the real steps are.
async fn timed(step: Step, plan: impl Future<Output = Result<Plan, AwsError>>) -> StepReport {
    let started = Instant::now();
    let plan = plan.await;
    report(step, started, plan)
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
        identity_step::current_association(clients, instance_id),
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

    let (network, profile, revoked, scaled, targets, classic, protect, kept, snaps) = tokio::join!(
        network::plan(clients, config, &facts),
        timed(Step::ReplaceInstanceProfile, async {
            identity::plan_profile(config, instance_id, association)
        }),
        timed(
            Step::RevokeCredentials,
            identity::plan_revocation(
                clients,
                config.revoke_credentials,
                instance_id,
                original_profile
            ),
        ),
        timed(
            Step::DetachAutoScaling,
            traffic::plan_detach(clients, instance_id)
        ),
        timed(
            Step::DeregisterTargetGroups,
            traffic::plan_target_groups(clients, &facts)
        ),
        timed(
            Step::DeregisterClassicLoadBalancers,
            traffic::plan_classic(clients, instance_id)
        ),
        timed(
            Step::ProtectInstance,
            evidence::plan_protection(clients, &facts)
        ),
        timed(Step::KeepVolumes, async {
            Ok(evidence::plan_keep_volumes(&facts))
        }),
        evidence::plan_snapshots(clients, config.snapshot_volumes, &facts, &incident, claimed),
    );
    let (group, interfaces) = network;
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
        protect,
        kept,
        snapshots_step,
    ];
    let tagged = report(
        Step::TagInstance,
        Instant::now(),
        Ok(plan_tags(inv, &facts, &incident, &steps).await),
    );
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

/// The tags (and the marks on the interfaces and volumes) a real run would write if every
/// planned step succeeded.
async fn plan_tags(
    inv: &Invocation<'_>,
    facts: &InstanceFacts,
    incident: &str,
    steps: &[StepReport],
) -> Plan {
    let as_done: Vec<(Step, Status)> = steps
        .iter()
        .map(|s| match s.status {
            Status::Planned => (s.step, Status::Done),
            status => (s.step, status),
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
    let mut changes = if differing.is_empty() {
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
    let marks = tags::marks_of(&wanted);
    let current = tags::read_marks(inv.clients, facts).await.ok();
    let unmarked = tags::unmarked(&tags::marked_resources(facts), current.as_ref(), &marks);
    if !unmarked.is_empty() {
        let marks: Vec<String> = marks.iter().map(|(k, v)| format!("{k}={v}")).collect();
        changes.push(change(
            "CreateTags",
            unmarked.join(", "),
            format!(
                "would mark {} with {}",
                unmarked.join(", "),
                marks.join(", ")
            ),
        ));
    }
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
}
