//! A snapshot set completed ("EBS Multi-Volume Snapshots Completion Status"): start the
//! encrypted copy of each unencrypted evidence snapshot in it, once.

use super::key::KmsKeyRef;
use super::plan::{self, CopyPlan, SnapshotFacts};
use super::snapshots;
use super::{failed, item, not_evidence, record, EvidenceAction, EvidenceReport};
use crate::aws::{AwsError, Clients};
use crate::consistency::until_settled;
use crate::evidence_copy::event::SnapshotEvent;
use crate::incident::IncidentStore;

pub(super) async fn handle(
    clients: &Clients,
    store: &IncidentStore,
    key: &KmsKeyRef,
    region: &str,
    event: &SnapshotEvent,
    ids: &[String],
) -> Vec<EvidenceReport> {
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let facts = match snapshots::describe(clients, &id_refs).await {
        Ok(facts) => facts,
        Err(e) => return ids.iter().map(|id| failed(id, e.clone())).collect(),
    };
    if !event.succeeded {
        return ids
            .iter()
            .map(|id| match facts.get(id) {
                Some(f) if !f.is_evidence() => not_evidence(id),
                found => EvidenceReport {
                    instance_id: found.and_then(|f| f.instance_id().map(str::to_owned)),
                    ..item(
                        id,
                        EvidenceAction::Failed,
                        format!(
                            "the snapshot set failed ({}); {}: contain the instance again to \
                             take new evidence snapshots",
                            event.cause,
                            match found {
                                Some(f) => format!("{id} is {}", f.state),
                                None => format!(
                                    "{id} cannot be read, so it may be evidence of this function"
                                ),
                            }
                        ),
                    )
                },
            })
            .collect();
    }
    let mut reports = Vec::new();
    let mut to_copy: Vec<&SnapshotFacts> = Vec::new();
    for id in ids {
        let Some(f) = facts.get(id) else {
            reports.push(not_evidence(id));
            continue;
        };
        let with_instance = |r: EvidenceReport| EvidenceReport {
            instance_id: f.instance_id().map(str::to_owned),
            ..r
        };
        match plan::plan_copy(f) {
            CopyPlan::NotEvidence => reports.push(not_evidence(id)),
            CopyPlan::AlreadyEncrypted => reports.push(with_instance(item(
                id,
                EvidenceAction::AlreadyEncrypted,
                format!(
                    "already encrypted ({}): nothing to copy",
                    f.kms_key_id.as_deref().unwrap_or("key not named")
                ),
            ))),
            CopyPlan::NotCompleted(state) => reports.push(with_instance(item(
                id,
                EvidenceAction::Failed,
                format!("{id} is {state}, not completed: it is copied when the event is retried"),
            ))),
            CopyPlan::Copy => to_copy.push(f),
        }
    }
    // Boxed: inline, the handler's future is past the compiler's layout depth limit.
    reports.extend(Box::pin(copy_missing(clients, store, key, region, &to_copy)).await);
    reports
}

/// Starts the encrypted copy of each of `sources` (completed, unencrypted evidence) that has
/// none yet, and notes it in the incident record. Shared by the completion event and the
/// sweep's evidence pass, so both make, and refuse to make, a copy the same way. A copy refused
/// for the region's concurrent copy limit is deferred, not failed: the sweep starts it later.
pub(super) async fn copy_missing(
    clients: &Clients,
    store: &IncidentStore,
    key: &KmsKeyRef,
    region: &str,
    sources: &[&SnapshotFacts],
) -> Vec<EvidenceReport> {
    if sources.is_empty() {
        return Vec::new();
    }
    let ids: Vec<&str> = sources.iter().map(|f| f.id.as_str()).collect();
    let existing = match snapshots::existing_copies(clients, &ids).await {
        Ok(existing) => existing,
        Err(e) => return ids.iter().map(|id| failed(id, e.clone())).collect(),
    };
    let mut reports = Vec::new();
    for source in sources {
        let report = match existing.get(&source.id) {
            Some(copy) => EvidenceReport {
                copy_id: Some(copy.id.clone()),
                ..item(
                    &source.id,
                    EvidenceAction::CopyExists,
                    format!(
                        "encrypted copy {} ({}) already made: no second copy",
                        copy.id, copy.state
                    ),
                )
            },
            None => match start_copy(clients, key, region, source).await {
                Ok(copy_id) => EvidenceReport {
                    copy_id: Some(copy_id.clone()),
                    ..item(
                        &source.id,
                        EvidenceAction::CopyStarted,
                        format!("copying to {copy_id}, encrypted with {key}"),
                    )
                },
                Err(e) if e.has_code(COPY_LIMIT) => deferred(&source.id, e),
                Err(e) => failed(&source.id, e),
            },
        };
        let report = EvidenceReport {
            instance_id: source.instance_id().map(str::to_owned),
            ..report
        };
        reports.push(record(store, source, report).await);
    }
    reports
}

/// What `CopySnapshot` answers past the limit of concurrent copies to one destination region
/// (20, "Copy an Amazon EBS snapshot", Amazon EBS User Guide). It clears as copies complete.
pub(super) const COPY_LIMIT: &str = "ResourceLimitExceeded";

fn deferred(snapshot: &str, error: AwsError) -> EvidenceReport {
    EvidenceReport {
        error: Some(error),
        ..item(
            snapshot,
            EvidenceAction::CopyDeferred,
            "copy deferred: the region's concurrent copy limit is reached; the sweep retries it",
        )
    }
}

/// The copy, and a read-back that it exists with the tag that names its source.
async fn start_copy(
    clients: &Clients,
    key: &KmsKeyRef,
    region: &str,
    source: &SnapshotFacts,
) -> Result<String, AwsError> {
    let copy_id = snapshots::copy(clients, source, key, region).await?;
    // A new snapshot id may be unknown to EC2 for seconds.
    let ids = [copy_id.as_str()];
    let read = until_settled(
        || snapshots::describe(clients, &ids),
        |read| read.contains_key(&copy_id),
    )
    .await?;
    match read.get(&copy_id) {
        Some(copy) if copy.copy_of() == Some(&source.id) => Ok(copy_id),
        Some(_) => Err(AwsError::local(
            "DescribeSnapshots",
            format!("{copy_id} does not carry the {} tag", plan::COPY_OF),
        )),
        None => Err(AwsError::local(
            "DescribeSnapshots",
            format!("read back no snapshot {copy_id}"),
        )),
    }
}
