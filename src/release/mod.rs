//! The release runbook: undo one containment per instance, from the durable incident record
//! ([`crate::incident`]), never from tags, which anyone allowed to tag can alter. It runs only in
//! the release function (`FUNCTION_MODE=release`), whose break-glass role may pass the original
//! roles back; the containment function refuses release requests.
//!
//! For each instance (several at once, up to `MAX_CONCURRENT_INSTANCES`):
//!
//! 1. Read, in one round trip, the record and the instance. No record, a record still
//!    `containing` (a containment in progress) or already `released`, or an unknown or terminated
//!    instance: a rejection that names the reason, with nothing changed. An instance the record
//!    places in a member account is read and released there, with the member release role
//!    (`MEMBER_ROLE_NAME` of the release function, created by `member-account.yaml`); without
//!    it, the release is refused with nothing changed.
//! 2. Then, at the same time, what makes the instance itself whole again:
//!    - every recorded interface back on its groups, and its recorded connection tracking
//!      timeouts ([`network`]);
//!    - the original instance profile ([`identity`]), and this instance's ARN out of the deny on
//!      the original role ([`credentials`]).
//! 3. Only then, and only when the interfaces are back, what sends it traffic and work again,
//!    so that no load balancer health check or Auto Scaling decision sees it still isolated:
//!    target groups on their recorded ports and classic load balancers ([`load_balancing`]),
//!    and the Auto Scaling group if it still exists ([`scaling`]).
//! 4. Last: the instance's tags ([`tags`]) and the record say how it ended.
//!
//! Snapshots, termination and stop protection, the shutdown behaviour and `DeleteOnTermination`
//! stay as containment left them: they keep evidence, and undoing them is a separate decision.
//! The trigger tag stays too: the analyst set it, not this function.
//!
//! Every step is idempotent (what is already as recorded is `unchanged`), so a partial release
//! can be retried: its record says `release-partial`, which a release accepts again.

pub mod credentials;
pub mod identity;
pub mod load_balancing;
pub mod network;
pub mod scaling;
pub mod tags;

use std::time::Instant;

use futures::stream::{self, StreamExt};

use crate::accounts::{self, Accounts, Target};
use crate::aws::{AwsError, Clients};
use crate::config::{Config, FunctionMode};
use crate::contain::instance::{self, DescribeError, InstanceFacts};
use crate::contain::{now_rfc3339, step_report, StepResult};
use crate::event::{EventError, ReleaseRequest, Request};
use crate::incident::{IncidentStore, Record, CONTAINING, RELEASED, RELEASE_PARTIAL};
use crate::report::{InstanceOutcome, InstanceReport, Report, Status, Step, StepReport};
use crate::revocations::RevocationLedger;

/// Releases every instance of `request`. `invocation_id` is recorded as who released it.
pub async fn release_all(
    clients: &Clients,
    accounts: &Accounts,
    config: &Config,
    request: &ReleaseRequest,
    invocation_id: &str,
) -> Report {
    let store = IncidentStore::new(
        clients.dynamodb.clone(),
        &config.incident_table,
        config.claim_timeout,
    );
    let ledger = RevocationLedger::new(
        clients.dynamodb.clone(),
        &config.incident_table,
        config.claim_timeout,
    );
    let instances = stream::iter(&request.instance_ids)
        .map(|id| {
            release_one(
                (clients, accounts),
                config,
                (&store, &ledger),
                id,
                &request.reason,
                invocation_id,
            )
        })
        .buffered(config.max_concurrent_instances)
        .collect()
        .await;
    Report::from_released(request.reason.clone(), instances)
}

/// Which requests this deployment takes: the containment function never releases, and the
/// release function does nothing else, so that no event can reach the release role's
/// permissions except a deliberate release request. Pure: a refusal makes no AWS call.
pub fn admit(request: Request, mode: FunctionMode) -> Result<Request, EventError> {
    match (mode, request) {
        (FunctionMode::Contain, Request::Release(_)) => Err(EventError::ReleaseNotHere),
        (FunctionMode::Release, Request::Contain(_)) => {
            Err(EventError::OnlyRelease("is a containment request"))
        }
        (FunctionMode::Release, Request::Sweep(_)) => {
            Err(EventError::OnlyRelease("is a sweep request"))
        }
        (FunctionMode::Release, Request::Ignore { .. } | Request::Snapshots(_)) => {
            Err(EventError::OnlyRelease("event is not a release request"))
        }
        (_, request) => Ok(request),
    }
}

/// The clients and configuration for the account the record names, `None` for the function's
/// own. The account comes from the record, which only the function writes, never from the
/// request: a release reaches exactly the account its containment did, with the member release
/// role (`MEMBER_ROLE_NAME` of the release function).
async fn reach(
    accounts: &Accounts,
    own: &Clients,
    config: &Config,
    instance_id: &str,
    record: &Record,
) -> Result<Option<(Clients, Config)>, (Step, AwsError)> {
    match accounts.target(record.account.as_deref(), config.member_role.as_deref()) {
        Ok(Target::Own(_)) => Ok(None),
        Ok(Target::Member(member)) => accounts
            .clients_for(&member, own)
            .await
            .map(|clients| Some((clients, accounts::config_in(config, &member.account))))
            .map_err(|e| (Step::AssumeMemberRole, e)),
        Err(e) => Err((
            Step::ReadIncidentRecord,
            AwsError::local(
                "GetItem",
                format!(
                    "{instance_id} was contained in account {} (incident {}), which this release \
                     function cannot reach: {e}. Deploy member-account.yaml there with \
                     ReleaseFunctionRoleArn, and MemberRoleName on this stack",
                    record.account.as_deref().unwrap_or_default(),
                    record.incident
                ),
            ),
        )),
    }
}

/// Why a record allows no release, or `None` when it does. Pure.
pub fn refusal(instance_id: &str, record: Option<&Record>) -> Option<String> {
    let Some(record) = record else {
        return Some(format!(
            "{instance_id} was never contained by ec2-quarantine: there is no incident record \
             for it, so there is nothing to restore"
        ));
    };
    match record.status.as_str() {
        RELEASED => Some(format!(
            "{instance_id} is already released (incident {}); there is nothing to restore",
            record.incident
        )),
        CONTAINING => Some(format!(
            "{instance_id} is being contained (claimed at {} by invocation {} for incident {}): \
             release it once the containment has finished; if that invocation died, run the \
             containment again, which finishes the record, then release",
            record.claimed_at, record.claimed_by, record.incident
        )),
        _ => None,
    }
}

async fn release_one(
    (clients, accounts): (&Clients, &Accounts),
    config: &Config,
    (store, ledger): (&IncidentStore, &RevocationLedger),
    instance_id: &str,
    reason: &str,
    invocation_id: &str,
) -> InstanceReport {
    let started = Instant::now();
    // 1. The record and the instance, in one round trip: in the function's own account, where
    // most instances are; one of a member account is read again there, once the record names it.
    let (record, described) = tokio::join!(
        store.get(instance_id),
        instance::describe(clients, instance_id)
    );
    let record = match record {
        Ok(record) => match (refusal(instance_id, record.as_ref()), record) {
            (None, Some(record)) => record,
            (why, record) => {
                return rejected(
                    instance_id,
                    Step::ReadIncidentRecord,
                    started,
                    AwsError::local("GetItem", why.unwrap_or_default()),
                    record.map(|r| r.incident),
                )
            }
        },
        Err(e) => return rejected(instance_id, Step::ReadIncidentRecord, started, e, None),
    };
    let member = match reach(accounts, clients, config, instance_id, &record).await {
        Ok(member) => member,
        Err((step, error)) => {
            return rejected(instance_id, step, started, error, Some(record.incident));
        }
    };
    let (clients, config, described) = match &member {
        None => (clients, config, described),
        Some((member_clients, member_config)) => (
            member_clients,
            member_config,
            instance::describe(member_clients, instance_id).await,
        ),
    };
    let facts = match described {
        Ok(facts) => facts,
        Err(e) => {
            let error = match e {
                DescribeError::Aws(e) => e,
                other => AwsError::local("DescribeInstances", other.to_string()),
            };
            return rejected(
                instance_id,
                Step::DescribeInstance,
                started,
                error,
                Some(record.incident),
            );
        }
    };
    let read = step_report(
        Step::ReadIncidentRecord,
        started,
        Ok(StepResult::unchanged(format!(
            "incident {} ({}), claimed at {}",
            record.incident, record.status, record.claimed_at
        ))),
    );

    // 2. The instance itself.
    let (interfaces, profile, credentials) = tokio::join!(
        network::restore_interfaces(clients, &facts, record.interfaces.as_deref()),
        identity::restore_profile(
            clients,
            &config.isolation_profile,
            instance_id,
            record.profile.as_ref()
        ),
        credentials::lift_deny(clients, ledger, instance_id, record.profile.as_ref()),
    );
    // 3. Traffic and work, only once the network is back: a health check would find the
    // instance unreachable, and an Auto Scaling group that uses load balancer health checks
    // would terminate it, evidence and all.
    let (target_groups, classic, scaling) = if interfaces.status == Status::Failed {
        let held = || {
            step_report(
                Step::RegisterTargetGroups,
                Instant::now(),
                Ok(StepResult::skipped(
                    "not attempted: the interfaces are not restored, so health checks would \
                     find the instance unreachable; release again once they are",
                )),
            )
        };
        (
            held(),
            StepReport {
                step: Step::RegisterClassicLoadBalancers,
                ..held()
            },
            StepReport {
                step: Step::AttachAutoScaling,
                ..held()
            },
        )
    } else {
        tokio::join!(
            load_balancing::register_target_groups(clients, record.target_groups.as_deref()),
            load_balancing::register_classic(
                clients,
                instance_id,
                record.classic_load_balancers.as_deref()
            ),
            scaling::attach(clients, instance_id, record.auto_scaling_group.as_ref()),
        )
    };
    let mut steps = vec![
        read,
        interfaces,
        profile,
        credentials,
        target_groups,
        classic,
        scaling,
    ];

    // 4. The tags and the record.
    let outcome = outcome_of(&steps);
    let status = match outcome {
        InstanceOutcome::Released => RELEASED,
        _ => RELEASE_PARTIAL,
    };
    let now = now_rfc3339();
    steps.push(tags::tag_released(clients, &facts, &record.incident, status, reason, &now).await);
    let recorded = Instant::now();
    let finished = store
        .finish_release(instance_id, &record, status, &now, invocation_id, reason)
        .await
        .map(|archived| {
            let kept = archived
                .map(|key| format!(", and kept as {key} for when it is quarantined again"))
                .unwrap_or_default();
            StepResult::done(format!(
                "record of incident {} marked {status}{kept}",
                record.incident
            ))
        })
        .map_err(|e| {
            // A cancelled transaction names its reasons in its message; a failed condition on
            // the record is the one that means it changed.
            if e.has_code("TransactionCanceledException")
                && e.message.contains("ConditionalCheckFailed")
            {
                AwsError {
                    message: format!(
                        "the record changed during the release (a new containment?), so it is \
                         not marked {status}: {}",
                        e.message
                    ),
                    ..e
                }
            } else {
                e
            }
        });
    steps.push(step_report(Step::RecordIncident, recorded, finished));

    InstanceReport {
        instance_id: instance_id.to_owned(),
        vpc_id: facts.vpc_id.clone(),
        outcome: outcome_of(&steps),
        incident: Some(record.incident.clone()),
        steps,
        snapshots: record.snapshots.clone().unwrap_or_default(),
        original: Some(record.original()),
        metadata: facts.metadata.clone(),
    }
}

fn outcome_of(steps: &[StepReport]) -> InstanceOutcome {
    if steps.iter().any(|s| s.status == Status::Failed) {
        InstanceOutcome::Partial
    } else {
        InstanceOutcome::Released
    }
}

fn rejected(
    instance_id: &str,
    step: Step,
    started: Instant,
    error: AwsError,
    incident: Option<String>,
) -> InstanceReport {
    InstanceReport {
        instance_id: instance_id.to_owned(),
        vpc_id: None,
        outcome: InstanceOutcome::Rejected,
        incident,
        steps: vec![step_report(step, started, Err(error))],
        snapshots: Vec::new(),
        original: None,
        metadata: serde_json::Value::Null,
    }
}

/// The facts a restore step needs about one interface of the instance now.
pub(crate) fn attached<'a>(facts: &'a InstanceFacts, eni: &str) -> Option<&'a instance::Interface> {
    facts.interfaces.iter().find(|i| i.id == eni)
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
    fn only_a_finished_containment_can_be_released() {
        let never = refusal("i-12345678", None).unwrap();
        assert!(never.contains("never contained"), "{never}");
        let released = refusal("i-12345678", Some(&record(RELEASED))).unwrap();
        assert!(released.contains("already released"), "{released}");
        let containing = refusal("i-12345678", Some(&record(CONTAINING))).unwrap();
        assert!(containing.contains("being contained"), "{containing}");
        for status in ["contained", "partial", "not-contained", RELEASE_PARTIAL] {
            assert_eq!(
                refusal("i-12345678", Some(&record(status))),
                None,
                "{status}"
            );
        }
    }

    #[test]
    fn each_function_takes_only_its_own_requests() {
        let release = Request::Release(ReleaseRequest {
            instance_ids: vec!["i-12345678".into()],
            reason: "r".into(),
        });
        let contain = Request::Contain(crate::event::ContainRequest {
            instance_ids: vec!["i-12345678".into()],
            reason: "r".into(),
            event_id: None,
            region: None,
            dry_run: false,
            account: None,
        });
        let ignore = Request::Ignore { reason: "r".into() };
        assert_eq!(
            admit(release.clone(), FunctionMode::Contain),
            Err(EventError::ReleaseNotHere)
        );
        assert_eq!(admit(release.clone(), FunctionMode::Release), Ok(release));
        assert_eq!(
            admit(contain.clone(), FunctionMode::Contain),
            Ok(contain.clone())
        );
        assert!(admit(contain, FunctionMode::Release).is_err());
        assert_eq!(
            admit(ignore.clone(), FunctionMode::Contain),
            Ok(ignore.clone())
        );
        assert!(admit(ignore, FunctionMode::Release).is_err());
        let sweep = Request::Sweep(crate::event::SweepRequest::default());
        assert_eq!(
            admit(sweep.clone(), FunctionMode::Contain),
            Ok(sweep.clone())
        );
        assert_eq!(
            admit(sweep, FunctionMode::Release),
            Err(EventError::OnlyRelease("is a sweep request"))
        );
    }
}
