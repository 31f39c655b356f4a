//! The runbook: how one invocation contains its instances, in order.
//!
//! For each instance (several at once, up to `MAX_CONCURRENT_INSTANCES`):
//!
//! 1. Read, in one round trip: `DescribeInstances`, and beside it the two reads the cuts need,
//!    the profile association and the isolation group looked up by name in every VPC. An
//!    unknown or terminated instance stops here, with nothing changed.
//! 2. Then, all at the same time, so that nothing slow delays the cuts:
//!    - network cut: isolation group per VPC, every interface onto it ([`network`]);
//!    - credential cut: the isolation instance profile ([`identity`]), and a deny on the
//!      original role for the credentials the instance already holds ([`credentials`]);
//!    - out of its Auto Scaling group ([`scaling`]) and every load balancer ([`load_balancing`]);
//!    - protection against termination and stop, volumes kept ([`protection`]);
//!    - snapshots of every volume ([`evidence`]).
//! 3. Last: tag the instance with the outcome ([`tags`]).
//!
//! A failed step never stops the others. Each step reads back what it changed and reports
//! `done`, `unchanged`, `skipped` or `failed`; the report, not this module, decides whether
//! the invocation fails.

pub mod credentials;
pub mod evidence;
pub mod identity;
pub mod instance;
pub mod load_balancing;
pub mod network;
pub mod protection;
pub mod scaling;
pub mod tags;

use std::time::{Instant, SystemTime};

use futures::stream::{self, StreamExt};

use crate::aws::{AwsError, Clients};
use crate::config::Config;
use crate::event::ContainRequest;
use crate::report::{
    InstanceOutcome, InstanceReport, OriginalState, Report, Status, Step, StepReport,
};
use instance::DescribeError;
use network::IsolationGroups;

/// What a step did, before it is timed and named in the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepResult {
    pub status: Status,
    pub detail: String,
}

impl StepResult {
    pub fn done(detail: impl Into<String>) -> Self {
        Self {
            status: Status::Done,
            detail: detail.into(),
        }
    }

    pub fn unchanged(detail: impl Into<String>) -> Self {
        Self {
            status: Status::Unchanged,
            detail: detail.into(),
        }
    }

    pub fn skipped(detail: impl Into<String>) -> Self {
        Self {
            status: Status::Skipped,
            detail: detail.into(),
        }
    }

    /// Several results of one step (one per VPC, say): done if any part changed something.
    pub fn merge(results: Vec<StepResult>) -> Self {
        let status = if results.iter().any(|r| r.status == Status::Done) {
            Status::Done
        } else if results.iter().all(|r| r.status == Status::Skipped) {
            Status::Skipped
        } else {
            Status::Unchanged
        };
        let detail = results
            .into_iter()
            .map(|r| r.detail)
            .collect::<Vec<_>>()
            .join("; ");
        Self { status, detail }
    }
}

pub(crate) fn step_report(
    step: Step,
    started: Instant,
    result: Result<StepResult, AwsError>,
) -> StepReport {
    let ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(r) => StepReport {
            step,
            status: r.status,
            detail: r.detail,
            ms,
            error: None,
        },
        Err(e) => StepReport {
            step,
            status: Status::Failed,
            detail: e.to_string(),
            ms,
            error: Some(e),
        },
    }
}

/// Contains every instance of `request`. `invocation_id` names the incident when the event has
/// no id of its own (a direct invocation); Lambda keeps it across its own retries.
pub async fn contain_all(
    clients: &Clients,
    config: &Config,
    request: &ContainRequest,
    invocation_id: &str,
) -> Report {
    let groups = IsolationGroups::new(&config.isolation_group_name);
    let incident = request.event_id.as_deref().unwrap_or(invocation_id);
    let instances = stream::iter(&request.instance_ids)
        .map(|id| contain_one(clients, config, &groups, id, incident, &request.reason))
        .buffered(config.max_concurrent_instances)
        .collect()
        .await;
    Report::from_instances(request.reason.clone(), instances)
}

async fn contain_one(
    clients: &Clients,
    config: &Config,
    groups: &IsolationGroups,
    instance_id: &str,
    incident: &str,
    reason: &str,
) -> InstanceReport {
    let started = Instant::now();
    // 1. One round trip of reads.
    let (described, association, ()) = tokio::join!(
        instance::describe(clients, instance_id),
        identity::current_association(clients, instance_id),
        groups.prefetch(clients),
    );
    let facts = match described {
        Ok(facts) => facts,
        Err(e) => return rejected(instance_id, started, e),
    };
    // An instance already quarantined keeps its incident, so a later event for it finds the
    // snapshots the first one took.
    let incident = facts
        .tags
        .get(tags::INCIDENT)
        .map(String::as_str)
        .unwrap_or(incident);

    // Read before the identity step replaces it: the revocation needs the original role.
    let original_profile = credentials::OriginalProfile::of(
        &association,
        facts.profile_arn.as_deref(),
        &config.isolation_profile,
    );

    // 2. Everything else at once.
    let (network, identity, revoked, scaling, target_groups, classic, protected, kept, evidence) = tokio::join!(
        network::isolate(clients, groups, &facts),
        identity::replace_profile(clients, &config.isolation_profile, instance_id, association),
        credentials::revoke_credentials(
            clients,
            config.revoke_credentials,
            instance_id,
            original_profile
        ),
        scaling::detach(clients, instance_id),
        load_balancing::deregister_target_groups(clients, &facts),
        load_balancing::deregister_classic(clients, instance_id),
        protection::protect_instance(clients, &facts),
        protection::keep_volumes(clients, &facts),
        evidence::snapshot_volumes(clients, &facts, incident, config.snapshot_volumes),
    );

    let mut steps = vec![
        network.group,
        network.interfaces,
        identity.report,
        revoked,
        scaling.report,
        target_groups.report,
        classic.report,
        protected,
        kept,
        evidence.report,
    ];
    let mut already_isolated = network.already_isolated;
    if identity.original.is_none() {
        already_isolated.push("instance-profile".to_owned());
    }
    let original = OriginalState {
        network_interfaces: network.original,
        instance_profile_arn: identity.original.flatten(),
        auto_scaling_group: scaling.original_group,
        target_groups: target_groups.original,
        classic_load_balancers: classic.original,
        already_isolated,
    };

    // 3. The tags say how it ended, so they come last.
    let outcome = outcome_of(&steps);
    let wanted = tags::desired(
        &facts.tags,
        outcome,
        incident,
        reason,
        &steps,
        &now_rfc3339(),
    );
    steps.push(tags::tag_instance(clients, &facts, &wanted).await);

    InstanceReport {
        instance_id: instance_id.to_owned(),
        vpc_id: facts.vpc_id.clone(),
        outcome: outcome_of(&steps),
        incident: Some(incident.to_owned()),
        steps,
        snapshots: evidence.snapshots,
        original: Some(original),
        metadata: facts.metadata,
    }
}

fn outcome_of(steps: &[StepReport]) -> InstanceOutcome {
    let failed = |s: &&StepReport| s.status == Status::Failed;
    if steps
        .iter()
        .filter(failed)
        .any(|s| s.step.is_containment_cut())
    {
        InstanceOutcome::NotContained
    } else if steps.iter().any(|s| s.status == Status::Failed) {
        InstanceOutcome::Partial
    } else {
        InstanceOutcome::Contained
    }
}

fn rejected(instance_id: &str, started: Instant, error: DescribeError) -> InstanceReport {
    // A read that failed for another reason (throttling past retries, access denied) leaves
    // the instance uncontained, which must not read like a harmless rejection.
    let (outcome, error) = match error {
        DescribeError::NotFound(_) => (
            InstanceOutcome::Rejected,
            AwsError {
                operation: "DescribeInstances",
                code: Some("InvalidInstanceID.NotFound".to_owned()),
                message: error.to_string(),
            },
        ),
        DescribeError::Terminated(_) => (
            InstanceOutcome::Rejected,
            AwsError::local("DescribeInstances", error.to_string()),
        ),
        DescribeError::Aws(e) => (InstanceOutcome::NotContained, e),
    };
    InstanceReport {
        instance_id: instance_id.to_owned(),
        vpc_id: None,
        outcome,
        incident: None,
        steps: vec![step_report(Step::DescribeInstance, started, Err(error))],
        snapshots: Vec::new(),
        original: None,
        metadata: serde_json::Value::Null,
    }
}

fn now_rfc3339() -> String {
    aws_smithy_types::DateTime::from(SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}
