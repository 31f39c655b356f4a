//! The runbook: how one invocation contains its instances, in order.
//!
//! For each instance (several at once, up to `MAX_CONCURRENT_INSTANCES`):
//!
//! 1. Read, in one round trip: `DescribeInstances`, and beside it the two reads the cuts need,
//!    the profile association and the isolation group looked up by name in every VPC. An
//!    unknown or terminated instance stops here, with nothing changed.
//! 2. Claim the instance in the incident record ([`crate::incident`]) with the original state
//!    just read, or find the claim already there. One round trip, with a budget of its own:
//!    past it, the cuts go ahead without the record. Only the changes to what the record keeps
//!    (the interfaces' groups, the profile) wait for it.
//! 3. Then, all at the same time, so that nothing slow delays the cuts:
//!    - network cut: isolation group per VPC (found or created beside the claim), every
//!      interface onto it, through an allow-all interim group that cuts the connections already
//!      open ([`network`]);
//!    - credential cut: the isolation instance profile ([`identity`]), and a deny on the
//!      original role for the credentials the instance already holds ([`credentials`]);
//!    - out of its Auto Scaling group ([`scaling`]) and every load balancer ([`load_balancing`]);
//!    - protection against termination and stop, volumes kept ([`protection`]);
//!    - snapshots of every volume, under the record's lease ([`evidence`]).
//! 4. Tag the instance with the outcome ([`tags`]) once every step has ended or had its writes
//!    return ([`progress`]), beside the read-backs still out, and again if one of them
//!    disagrees; last, write the outcome to the record.
//!
//! A failed step never stops the others. Each step reads back what it changed and reports
//! `done`, `unchanged`, `skipped` or `failed`; the report, not this module, decides whether
//! the invocation fails.

pub mod credentials;
pub mod dry_run;
pub mod evidence;
pub mod identity;
pub mod instance;
pub mod load_balancing;
pub mod network;
pub mod progress;
pub mod protection;
pub mod rules;
pub mod scaling;
pub mod tags;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::aws::{AwsError, Clients};
use crate::config::Config;
use crate::event::ContainRequest;
use crate::incident::{
    Claim, GroupRecord, IncidentStore, Lease, Observed, ProfileRecord, Record, CONTAINING,
};
use crate::report::{
    InstanceOutcome, InstanceReport, InterfaceGroups, OriginalState, Report, Status, Step,
    StepReport,
};
use crate::revocations::RevocationLedger;
use identity::Association;
use instance::{DescribeError, InstanceFacts};
use network::IsolationGroups;
use progress::Progress;

/// The time kept, before Lambda would stop the invocation, to write the report so far to the
/// tags and the record ([`cut_short`]).
pub const DEADLINE_RESERVE: std::time::Duration = std::time::Duration::from_secs(10);

/// How long one invocation holds the right to snapshot an instance: past the function's timeout,
/// so that a crashed holder's lease lapses before Lambda's next retry.
const SNAPSHOT_LEASE_SECS: u64 = 15 * 60;

/// The steps whose statuses the tags name, in the report's order.
const TAGGED_STEPS: &[Step] = &[
    Step::IsolationGroup,
    Step::MoveNetworkInterfaces,
    Step::ReplaceInstanceProfile,
    Step::RevokeCredentials,
    Step::DetachAutoScaling,
    Step::DeregisterTargetGroups,
    Step::DeregisterClassicLoadBalancers,
    Step::ProtectInstance,
    Step::KeepVolumes,
    Step::SnapshotVolumes,
];

/// The claim of one instance, awaited by every step that needs it and made once.
type ClaimOnce = Shared<BoxFuture<'static, Result<Claim, AwsError>>>;

/// Where a step records a piece of original state as it changes it. Steps start their
/// reads before the claim has landed; the first piece they record waits for it, since the claim
/// creates the record the pieces go into.
#[derive(Clone, Copy)]
pub struct Recorder<'a> {
    store: &'a IncidentStore,
    instance_id: &'a str,
    claim: &'a ClaimOnce,
}

impl Recorder<'_> {
    pub async fn remember<T: Serialize>(
        &self,
        field: &'static str,
        value: &T,
    ) -> Result<(), AwsError> {
        // Without a claim there is no record to add to: the claim's failure is reported on its
        // own, and the change goes ahead (containment before bookkeeping).
        if self.claim.clone().await.is_err() {
            return Ok(());
        }
        self.store.remember(self.instance_id, field, value).await
    }
}

/// A change that went through although its original state could not be recorded: containment
/// comes first, but the report must say that a release cannot restore it.
pub(crate) fn unrecorded(
    result: Result<StepResult, AwsError>,
    remembered: Result<(), AwsError>,
) -> Result<StepResult, AwsError> {
    match (result, remembered) {
        (Ok(done), Err(e)) => Err(AwsError {
            message: format!(
                "{}, but the original state was not recorded, so a release cannot restore it: {}",
                done.detail, e.message
            ),
            ..e
        }),
        (result, _) => result,
    }
}

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
            changes: Vec::new(),
        },
        Err(e) => StepReport {
            step,
            status: Status::Failed,
            detail: e.to_string(),
            ms,
            error: Some(e),
            changes: Vec::new(),
        },
    }
}

/// Contains every instance of `request`. `invocation_id` names the incident when the event has
/// no id of its own (a direct invocation); Lambda keeps it across its own retries.
/// `deadline`: when to stop and report what was done ([`DEADLINE_RESERVE`] before Lambda's own).
pub async fn contain_all(
    clients: &Clients,
    config: &Config,
    request: &ContainRequest,
    invocation_id: &str,
    deadline: Option<Instant>,
) -> Report {
    let groups = IsolationGroups::new(&config.isolation_group_name, &config.responder_access)
        .cutting_tracked_connections(config.cut_tracked_connections);
    let store = IncidentStore::new(
        clients.dynamodb.clone(),
        &config.incident_table,
        config.claim_timeout,
    );
    let target_groups = load_balancing::TargetGroupList::default();
    let ledger = RevocationLedger::new(
        clients.dynamodb.clone(),
        &config.incident_table,
        config.claim_timeout,
    );
    let invocation = Invocation {
        clients,
        config,
        groups: &groups,
        target_groups: &target_groups,
        ledger: &ledger,
        store: &store,
        incident: request.event_id.as_deref().unwrap_or(invocation_id),
        invocation_id,
        reason: &request.reason,
        account: request.account.as_deref(),
        deadline,
    };
    let contained = stream::iter(&request.instance_ids)
        .map(|id| contain_one(&invocation, id))
        .buffered(config.max_concurrent_instances)
        .collect();
    // The listing starts with the invocation; its answer (or error) waits in the list for the
    // instances' target-group steps.
    let (_, instances) = tokio::join!(target_groups.get(clients), contained);
    Report::from_instances(request.reason.clone(), instances)
}

/// What every instance of one invocation shares.
struct Invocation<'a> {
    clients: &'a Clients,
    config: &'a Config,
    groups: &'a IsolationGroups,
    target_groups: &'a load_balancing::TargetGroupList,
    ledger: &'a RevocationLedger,
    store: &'a IncidentStore,
    /// The incident a first claim names: the event id, or the invocation's.
    incident: &'a str,
    invocation_id: &'a str,
    reason: &'a str,
    /// The account the instances are in, for the record.
    account: Option<&'a str>,
    deadline: Option<Instant>,
}

/// Contains one instance; past the invocation's deadline, ends with the report so far
/// ([`cut_short`]) instead of being killed with it.
async fn contain_one(inv: &Invocation<'_>, instance_id: &str) -> InstanceReport {
    let progress = Progress::new(TAGGED_STEPS);
    let Some(deadline) = inv.deadline else {
        return contain_steps(inv, instance_id, &progress).await;
    };
    let steps = contain_steps(inv, instance_id, &progress);
    match tokio::time::timeout_at(deadline.into(), Box::pin(steps)).await {
        Ok(report) => report,
        Err(_) => cut_short(inv, instance_id, &progress).await,
    }
}

/// What an instance's containment had done when the invocation's time ran out: the steps that
/// ended as they reported, the others failed as cut short (what they changed stays, and Lambda's
/// retry finishes them); the status tag and the record say so, within the time kept for it.
async fn cut_short(inv: &Invocation<'_>, instance_id: &str, progress: &Progress) -> InstanceReport {
    let started = Instant::now();
    let (mut steps, pending) = progress.so_far();
    for step in pending {
        steps.push(step_report(
            step,
            started,
            Err(AwsError::local(
                "Deadline",
                "cut short: the invocation's time ran out before this step ended; what it \
                 changed stays, and Lambda's retry finishes it",
            )),
        ));
    }
    let outcome = outcome_of(&statuses_of(&steps));
    let status = tags::status_value(outcome);
    let now = now_rfc3339();
    // Only the status: nothing else of the record is known once the steps were dropped.
    let nothing_observed = Observed::default();
    let (tagged, recorded) = tokio::time::timeout(DEADLINE_RESERVE, async {
        tokio::join!(
            tags::write_status(inv.clients, instance_id, status),
            inv.store
                .finish(instance_id, status, &now, &nothing_observed)
        )
    })
    .await
    .unwrap_or_else(|_| {
        let late = || AwsError::local("Deadline", "no time was left to write it");
        (Err(late()), Err(late()))
    });
    steps.push(step_report(
        Step::TagInstance,
        started,
        tagged.map(|()| StepResult::done(format!("{}={status} (cut short)", tags::STATUS))),
    ));
    steps.insert(
        0,
        step_report(
            Step::RecordIncident,
            started,
            recorded.map(|_| StepResult::done(format!("status {status} (cut short)"))),
        ),
    );
    InstanceReport {
        instance_id: instance_id.to_owned(),
        vpc_id: None,
        outcome: outcome_of(&statuses_of(&steps)),
        incident: None,
        steps,
        snapshots: Vec::new(),
        original: None,
        metadata: serde_json::Value::Null,
    }
}

async fn contain_steps(
    inv: &Invocation<'_>,
    instance_id: &str,
    progress: &Progress,
) -> InstanceReport {
    let clients = inv.clients;
    let started = Instant::now();
    // 1. One round trip of reads.
    let (described, association, ()) = tokio::join!(
        instance::describe(clients, instance_id),
        identity::current_association(clients, instance_id),
        inv.groups.prefetch(clients),
    );
    let facts = match described {
        Ok(facts) => facts,
        Err(e) => return rejected(instance_id, started, e),
    };

    // 2. The claim: the original state as read, or the record already there. Changes to what
    // the record keeps (the interfaces' groups, the profile) wait for it; reads, and changes
    // whose original state a step records itself, start at once.
    let claimed_at = Instant::now();
    let observed = observe(inv, &facts, association.as_ref().ok());
    let record = Record {
        instance_id: instance_id.to_owned(),
        // An instance tagged by an earlier containment without a record keeps its incident.
        incident: facts
            .tags
            .get(tags::INCIDENT)
            .cloned()
            .unwrap_or_else(|| inv.incident.to_owned()),
        status: CONTAINING.to_owned(),
        claimed_by: inv.invocation_id.to_owned(),
        claimed_at: now_rfc3339(),
        reason: inv.reason.to_owned(),
        account: inv.account.map(str::to_owned),
        interfaces: observed.interfaces.clone(),
        profile: observed.profile.clone(),
        snapshot_lease_until: (inv.config.snapshot_volumes && !facts.volumes.is_empty())
            .then(|| now_secs() + SNAPSHOT_LEASE_SECS),
        ..Record::default()
    };
    let claim: ClaimOnce = {
        let (store, record) = (inv.store.clone(), record.clone());
        async move { store.claim(&record).await }.boxed().shared()
    };
    let recorder = Recorder {
        store: inv.store,
        instance_id,
        claim: &claim,
    };
    // The original profile as round trip 1 read it, so that the revocation need not wait for
    // the claim; a re-run finds the isolation profile in place, and only then asks the record.
    let read_profile = credentials::OriginalProfile::of(
        &association,
        facts.profile_arn.as_deref(),
        &inv.config.isolation_profile,
    );

    // 3. Everything else at once.
    let after_claim = async {
        let claimed = claim.clone().await;
        let claim_ms = claimed_at.elapsed();
        let incident = incident_of(&claimed, &record);
        let claim_result = match &claimed {
            Ok(Claim::New(record)) => Ok(StepResult::done(format!(
                "claimed for incident {}",
                record.incident
            ))),
            Ok(Claim::Existing(record)) => Ok(StepResult::unchanged(format!(
                "claimed at {} by {} for incident {}",
                record.claimed_at, record.claimed_by, record.incident
            ))),
            // Containment goes ahead without the record; the failure is reported and retried.
            Err(e) => Err(e.clone()),
        };
        // A new claim took the snapshot lease with it.
        let leased = matches!(&claimed, Ok(Claim::New(r)) if r.snapshot_lease_until.is_some());
        let prior = match &claimed {
            Ok(Claim::New(_)) if !facts.tags.contains_key(tags::INCIDENT) => evidence::Prior::None,
            _ => evidence::Prior::Possible,
        };
        let (identity, evidence) = tokio::join!(
            Box::pin(identity::replace_profile(
                clients,
                &inv.config.isolation_profile,
                instance_id,
                association
            ))
            .inspect(|cut| progress.finished(&cut.report)),
            Box::pin(snapshots(
                inv,
                &facts,
                &incident,
                (claimed.is_ok(), leased),
                prior,
                progress
            ))
            .inspect(|cut| progress.finished(&cut.report)),
        );
        (
            claimed.is_ok(),
            incident,
            claim_result,
            claim_ms,
            identity,
            evidence,
        )
    }
    .boxed();
    let revocation = async {
        let original_profile = match read_profile {
            credentials::OriginalProfile::Replaced => match claim.clone().await {
                Ok(Claim::Existing(record)) => {
                    match record.profile.as_ref().map(|p| p.arn.clone()) {
                        Some(Some(arn)) => credentials::OriginalProfile::Arn(arn),
                        Some(None) => credentials::OriginalProfile::None,
                        None => credentials::OriginalProfile::Replaced,
                    }
                }
                _ => credentials::OriginalProfile::Replaced,
            },
            other => other,
        };
        let report = credentials::revoke_credentials(
            clients,
            Some(inv.ledger),
            inv.config.revoke_credentials,
            instance_id,
            original_profile,
            Some(progress),
        )
        .await;
        progress.finished(&report);
        report
    }
    .boxed();
    let every_step = Box::pin(async {
        let ended = tokio::join!(
            after_claim,
            // The groups are found or created at once; the interfaces move once the claim has
            // their original groups.
            network::isolate(
                clients,
                inv.groups,
                &facts,
                progress,
                claim.clone().map(|_| ())
            )
            .boxed(),
            revocation,
            Box::pin(scaling::detach(clients, instance_id, Some(recorder)))
                .inspect(|cut| progress.finished(&cut.report)),
            Box::pin(load_balancing::deregister_target_groups(
                clients,
                inv.target_groups,
                &facts,
                Some(recorder)
            ))
            .inspect(|cut| progress.finished(&cut.report)),
            Box::pin(load_balancing::deregister_classic(
                clients,
                instance_id,
                Some(recorder)
            ))
            .inspect(|cut| progress.finished(&cut.report)),
            Box::pin(protection::protect_instance(clients, &facts))
                .inspect(|r| progress.finished(r)),
            Box::pin(protection::keep_volumes(clients, &facts)).inspect(|r| progress.finished(r)),
        );
        progress.close();
        ended
    });
    // 4. The tags say how it ended. They go out once every step has ended or had its writes
    // return (the interface moves, the credential deny and the snapshots tell that early), beside
    // those steps' read-backs, and are corrected if a read-back disagrees: a round trip sooner
    // than after the read-backs, on the path that ends the containment.
    let early_tags = async {
        // The marks the interfaces and volumes carry, read while the steps run, so that a re-run
        // writes none and a first run writes them in the same round trip as the tags.
        let (statuses, marks_now) =
            tokio::join!(progress.all_written(), tags::read_marks(clients, &facts));
        // The time every change had been made: when the tags first say so. The record's final
        // status carries the same time, although it is written a round trip later.
        let now = now_rfc3339();
        let incident = incident_of(&claim.clone().await, &record);
        let wanted = tags::desired(
            &facts.tags,
            outcome_of(&statuses),
            &incident,
            inv.reason,
            &statuses,
            &now,
        );
        (
            Box::pin(tags::write_early(clients, &facts, wanted, marks_now)).await,
            now,
        )
    };
    let (
        (
            (recorded, incident, claim_result, claim_ms, identity, evidence),
            network,
            revoked,
            scaling,
            target_groups,
            classic,
            protected,
            kept,
        ),
        (early_tags, now),
    ) = tokio::join!(every_step, early_tags);

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
    let observed = Observed {
        auto_scaling_group: scaling
            .original_group
            .clone()
            .map(|name| GroupRecord { name: Some(name) }),
        target_groups: (!target_groups.original.is_empty()).then(|| target_groups.original.clone()),
        classic_load_balancers: (!classic.original.is_empty()).then(|| classic.original.clone()),
        ..observed
    };
    let in_memory = OriginalState {
        network_interfaces: network.original,
        instance_profile_arn: identity.original.flatten(),
        auto_scaling_group: scaling.original_group,
        target_groups: target_groups.original,
        classic_load_balancers: classic.original,
        already_isolated: already_isolated.clone(),
    };

    // The record says how it ended, so it comes last, with the tags' correction and read-back.
    let statuses = statuses_of(&steps);
    debug_assert_eq!(
        statuses.iter().map(|(step, _)| *step).collect::<Vec<_>>(),
        TAGGED_STEPS,
        "the early tags wait for exactly the steps the report holds"
    );
    let outcome = outcome_of(&statuses);
    let wanted = tags::desired(&facts.tags, outcome, &incident, inv.reason, &statuses, &now);
    let status = tags::status_value(outcome);
    let (tagged, finished) = tokio::join!(
        tags::finish_tags(clients, &facts, early_tags, &wanted),
        async {
            match recorded {
                true => Some(inv.store.finish(instance_id, status, &now, &observed).await),
                false => None,
            }
        }
    );
    steps.push(tagged);
    let (record_result, original) = match finished {
        Some(Ok(record)) => (
            claim_result,
            OriginalState {
                already_isolated,
                ..record.original()
            },
        ),
        Some(Err(e)) => (Err(e), in_memory),
        None => (claim_result, in_memory),
    };
    let mut record_step = step_report(Step::RecordIncident, Instant::now(), record_result);
    record_step.ms = claim_ms.as_millis() as u64;
    steps.insert(0, record_step);

    InstanceReport {
        instance_id: instance_id.to_owned(),
        vpc_id: facts.vpc_id.clone(),
        outcome: outcome_of(&statuses_of(&steps)),
        incident: Some(incident),
        steps,
        snapshots: evidence.snapshots,
        original: Some(original),
        metadata: facts.metadata,
    }
}

/// The original state round trip 1 shows, less what is already isolated: a re-run must never
/// record the isolated state as the original.
fn observe(
    inv: &Invocation<'_>,
    facts: &InstanceFacts,
    association: Option<&Option<Association>>,
) -> Observed {
    let interfaces: Vec<InterfaceGroups> = facts
        .interfaces
        .iter()
        .filter(|eni| !inv.groups.is_ours(&eni.vpc_id, &eni.groups))
        .map(|eni| InterfaceGroups {
            network_interface_id: eni.id.clone(),
            vpc_id: eni.vpc_id.clone(),
            private_ip_addresses: eni.private_ips.clone(),
            groups: eni.groups.clone(),
            connection_tracking: eni.connection_tracking,
        })
        .collect();
    let profile = match association {
        Some(Some(a)) if inv.config.isolation_profile.matches_arn(&a.profile_arn) => None,
        Some(current) => Some(ProfileRecord {
            arn: current.as_ref().map(|a| a.profile_arn.clone()),
        }),
        None => None,
    };
    Observed {
        interfaces: (!interfaces.is_empty()).then_some(interfaces),
        profile,
        ..Observed::default()
    }
}

/// Snapshots under the record's lease, so that concurrent invocations for one instance take one
/// set between them. A new claim carries the lease already (`leased`); a later run takes it
/// first. Without a record (the claim failed) they are taken anyway: evidence comes before the
/// lock, and the snapshot tags still keep one set per incident.
async fn snapshots(
    inv: &Invocation<'_>,
    facts: &InstanceFacts,
    incident: &str,
    (recorded, leased): (bool, bool),
    prior: evidence::Prior,
    progress: &Progress,
) -> evidence::EvidenceCut {
    let enabled = inv.config.snapshot_volumes;
    if !enabled || facts.volumes.is_empty() || !recorded {
        return evidence::snapshot_volumes(inv.clients, facts, incident, enabled, prior, None)
            .await;
    }
    let started = Instant::now();
    let lease = match leased {
        true => Ok(Lease::Held),
        false => {
            inv.store
                .take_snapshot_lease(
                    &facts.instance_id,
                    inv.invocation_id,
                    now_secs(),
                    SNAPSHOT_LEASE_SECS,
                )
                .await
        }
    };
    match lease {
        Ok(Lease::Held) | Ok(Lease::NoRecord) | Err(_) => {
            let record = evidence::Record {
                store: inv.store,
                instance_id: &facts.instance_id,
                progress,
            };
            let mut cut = evidence::snapshot_volumes(
                inv.clients,
                facts,
                incident,
                enabled,
                prior,
                Some(record),
            )
            .await;
            if cut.report.status == Status::Failed {
                // Best effort: if this fails too, the lease lapses on its own.
                let _ = inv
                    .store
                    .release_snapshot_lease(&facts.instance_id, inv.invocation_id)
                    .await;
                return cut;
            }
            // Snapshots found from an earlier run, none created now: recorded here instead.
            let recorded = match cut.recorded.take() {
                Some(recorded) => recorded,
                None if !cut.snapshots.is_empty() => {
                    progress.finished(&cut.report);
                    inv.store
                        .record_snapshots(&facts.instance_id, &cut.snapshots)
                        .await
                }
                None => Ok(()),
            };
            if let Err(e) = recorded {
                return evidence::EvidenceCut {
                    report: step_report(
                        Step::SnapshotVolumes,
                        started,
                        unrecorded(Ok(StepResult::done(cut.report.detail.clone())), Err(e)),
                    ),
                    snapshots: cut.snapshots,
                    recorded: None,
                };
            }
            cut
        }
        Ok(Lease::Done(snapshots)) => evidence::EvidenceCut {
            report: step_report(
                Step::SnapshotVolumes,
                started,
                Ok(StepResult::unchanged(format!(
                    "{} snapshot(s) already taken for incident {incident}",
                    snapshots.len()
                ))),
            ),
            snapshots,
            recorded: None,
        },
        Ok(Lease::HeldByOther { holder }) => evidence::EvidenceCut {
            report: step_report(
                Step::SnapshotVolumes,
                started,
                Ok(StepResult::skipped(format!(
                    "invocation {holder} is taking the snapshots for incident {incident}"
                ))),
            ),
            snapshots: Vec::new(),
            recorded: None,
        },
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn outcome_of(statuses: &[(Step, Status)]) -> InstanceOutcome {
    let mut failed = statuses
        .iter()
        .filter(|(_, status)| *status == Status::Failed)
        .peekable();
    if failed.clone().any(|(step, _)| step.is_containment_cut()) {
        InstanceOutcome::NotContained
    } else if failed.peek().is_some() {
        InstanceOutcome::Partial
    } else {
        InstanceOutcome::Contained
    }
}

fn statuses_of(steps: &[StepReport]) -> Vec<(Step, Status)> {
    steps.iter().map(|s| (s.step, s.status)).collect()
}

/// The incident a claim names; without a record, the one this run would have claimed for.
fn incident_of(claimed: &Result<Claim, AwsError>, claiming: &Record) -> String {
    match claimed {
        Ok(Claim::New(record) | Claim::Existing(record)) => record.incident.clone(),
        Err(_) => claiming.incident.clone(),
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

pub(crate) fn now_rfc3339() -> String {
    aws_smithy_types::DateTime::from(SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}
