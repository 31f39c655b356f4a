//! Encrypted evidence: when `SNAPSHOT_KMS_KEY_ID` is set, every unencrypted evidence snapshot
//! is copied encrypted with that key once it completes, and, only with
//! `DELETE_UNENCRYPTED_SNAPSHOTS=true`, the unencrypted source is deleted once its copy is
//! complete and verified.
//!
//! Completion is learned from EBS's own events, through two rules in the template, never by
//! waiting inside a containment (a snapshot takes minutes to hours; the cuts take seconds):
//!
//! 1. "EBS Multi-Volume Snapshots Completion Status" (`createSnapshots`): read the snapshots
//!    named; for each one that is this function's evidence (tagged with an instance and an
//!    incident), unencrypted and completed, look for a copy already made (tagged
//!    `ec2-quarantine:encrypted-copy-of`), and start one only if there is none, so a redelivered
//!    event makes no second copy. Snapshots of anyone else are left alone.
//! 2. "EBS Snapshot Notification" (`copySnapshot`): read the copy and its source; verify the copy
//!    ([`plan::verify_copy`]); note it in the incident record; then delete the source if, and only
//!    if, the setting says so ([`retire`]). Anything short of a verified copy keeps the source.
//!
//! A `failed` result for evidence means the evidence (or its encrypted copy) is at risk: the
//! invocation fails, with the report, so that it reaches the failure queue and its alarm.

pub mod event;
pub mod key;
pub mod plan;
mod retire;
mod snapshots;

use serde::Serialize;

use crate::aws::{AwsError, Clients};
use crate::config::Config;
use crate::event::EventError;
use crate::incident::IncidentStore;
use crate::report::Report;
use event::{SnapshotEvent, SnapshotEventKind};
use key::KmsKeyRef;
use plan::{CopyPlan, SnapshotFacts};

/// What was done about one evidence snapshot (or found about one that is not).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvidenceReport {
    /// The snapshot the event names as the source (the unencrypted evidence).
    pub snapshot_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub action: EvidenceAction,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<AwsError>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvidenceAction {
    /// Not this function's evidence: left alone.
    NotEvidence,
    AlreadyEncrypted,
    CopyStarted,
    /// A copy was made earlier (a redelivered event): no second one.
    CopyExists,
    /// The copy is verified; the unencrypted source is kept (the default).
    Verified,
    /// The copy is verified and the unencrypted source deleted.
    Deleted,
    /// The copy is not verified: the source is kept, and the detail says why.
    Kept,
    /// The source no longer exists (deleted by an earlier delivery).
    SourceGone,
    Failed,
}

pub async fn handle(
    clients: &Clients,
    config: &Config,
    event: &SnapshotEvent,
) -> Result<Report, EventError> {
    let Some(key) = &config.snapshot_kms_key else {
        return Ok(Report::ignored(
            "SNAPSHOT_KMS_KEY_ID is not set: evidence snapshots are not copied encrypted"
                .to_owned(),
        ));
    };
    if let (Some(event_region), Some(own)) = (&event.region, &config.region) {
        if event_region != own {
            return Err(EventError::OtherRegion {
                event: event_region.clone(),
                own: own.clone(),
            });
        }
    }
    let region = event
        .region
        .clone()
        .or_else(|| config.region.clone())
        .or_else(|| clients.ec2.config().region().map(|r| r.to_string()))
        .unwrap_or_default();
    let store = IncidentStore::new(
        clients.dynamodb.clone(),
        &config.incident_table,
        config.claim_timeout,
    );
    let (reason, items) = match &event.kind {
        SnapshotEventKind::Created { snapshot_ids } => (
            format!(
                "createSnapshots {} for {}",
                result(event),
                snapshot_ids.join(", ")
            ),
            created(clients, &store, key, &region, event, snapshot_ids).await,
        ),
        SnapshotEventKind::Copied { copy_id, source_id } => (
            format!(
                "copySnapshot {} for {copy_id}, a copy of {source_id}",
                result(event)
            ),
            copied(clients, &store, config, key, event, copy_id, source_id).await,
        ),
    };
    Ok(Report::from_evidence(reason, items))
}

fn result(event: &SnapshotEvent) -> String {
    if event.succeeded {
        "succeeded".to_owned()
    } else {
        format!("failed ({})", event.cause)
    }
}

fn item(snapshot: &str, action: EvidenceAction, detail: impl Into<String>) -> EvidenceReport {
    EvidenceReport {
        snapshot_id: snapshot.to_owned(),
        copy_id: None,
        instance_id: None,
        action,
        detail: detail.into(),
        error: None,
    }
}

fn failed(snapshot: &str, error: AwsError) -> EvidenceReport {
    EvidenceReport {
        detail: error.to_string(),
        error: Some(error),
        ..item(snapshot, EvidenceAction::Failed, "")
    }
}

fn not_evidence(snapshot: &str) -> EvidenceReport {
    item(
        snapshot,
        EvidenceAction::NotEvidence,
        "not evidence of this function (no ec2-quarantine:instance-id and incident tags, or \
         not this account's): left alone",
    )
}

async fn created(
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
    if to_copy.is_empty() {
        return reports;
    }
    let sources: Vec<&str> = to_copy.iter().map(|f| f.id.as_str()).collect();
    let existing = match snapshots::existing_copies(clients, &sources).await {
        Ok(existing) => existing,
        Err(e) => {
            reports.extend(sources.iter().map(|id| failed(id, e.clone())));
            return reports;
        }
    };
    for source in to_copy {
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
                Err(e) => failed(&source.id, e),
            },
        };
        reports.push(record(store, source, report).await);
    }
    reports
}

/// The copy, and a read-back that it exists with the tag that names its source.
async fn start_copy(
    clients: &Clients,
    key: &KmsKeyRef,
    region: &str,
    source: &SnapshotFacts,
) -> Result<String, AwsError> {
    let copy_id = snapshots::copy(clients, source, key, region).await?;
    let read = snapshots::describe(clients, &[&copy_id]).await?;
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

/// Notes the copy in the incident record, so that a reviewer or a release finds it there. The
/// copy is the evidence either way; a failure to note it is said in the detail, not failed.
async fn record(
    store: &IncidentStore,
    source: &SnapshotFacts,
    report: EvidenceReport,
) -> EvidenceReport {
    let (Some(instance_id), Some(copy_id)) = (source.instance_id(), report.copy_id.as_deref())
    else {
        return report;
    };
    let detail = match store
        .record_encrypted_copy(instance_id, &source.id, copy_id)
        .await
    {
        Ok(()) => format!("{}; noted in the incident record", report.detail),
        Err(e) => format!("{}; not noted in the incident record ({e})", report.detail),
    };
    EvidenceReport {
        detail,
        instance_id: Some(instance_id.to_owned()),
        ..report
    }
}

async fn copied(
    clients: &Clients,
    store: &IncidentStore,
    config: &Config,
    key: &KmsKeyRef,
    event: &SnapshotEvent,
    copy_id: &str,
    source_id: &str,
) -> Vec<EvidenceReport> {
    let facts = match snapshots::describe(clients, &[copy_id, source_id]).await {
        Ok(facts) => facts,
        Err(e) => return vec![failed(source_id, e)],
    };
    let (copy, source) = (facts.get(copy_id), facts.get(source_id));
    // A copy someone else made of evidence (tagged by them, not as ours) is theirs to watch;
    // a copy that cannot be read is judged by its source.
    let ours = match copy {
        Some(c) if !event.succeeded => c.copy_of().is_some(),
        Some(c) => {
            c.copy_of().is_some()
                || source.is_some_and(|s| s.is_evidence() && s.copy_of().is_none())
        }
        None => source.is_some_and(|s| s.is_evidence() && s.copy_of().is_none()),
    };
    if !ours {
        return vec![not_evidence(source_id)];
    }
    let with_copy = |r: EvidenceReport| EvidenceReport {
        copy_id: Some(copy_id.to_owned()),
        instance_id: source
            .or(copy)
            .and_then(|f| f.instance_id().map(str::to_owned)),
        ..r
    };
    if !event.succeeded {
        return vec![with_copy(item(
            source_id,
            EvidenceAction::Failed,
            format!(
                "the encrypted copy {copy_id} of evidence {source_id} failed ({}); the \
                 unencrypted snapshot is kept. Replay the snapshot set's createSnapshots event \
                 to copy it again",
                event.cause
            ),
        ))];
    }
    let Some(source) = source else {
        return vec![with_copy(item(
            source_id,
            EvidenceAction::SourceGone,
            format!("{source_id} no longer exists: nothing to keep or delete"),
        ))];
    };
    let Some(copy) = copy else {
        return vec![with_copy(item(
            source_id,
            EvidenceAction::Kept,
            format!("{copy_id} cannot be read: {source_id} is kept"),
        ))];
    };
    let verified = match plan::verify_copy(source, copy, key) {
        Ok(verified) => verified,
        Err(why) => {
            return vec![with_copy(item(
                source_id,
                EvidenceAction::Kept,
                format!("{why}: {source_id} is kept"),
            ))]
        }
    };
    let report = if config.unencrypted_snapshot_deletion {
        match retire::delete_source(clients, &verified).await {
            Ok(()) => item(
                source_id,
                EvidenceAction::Deleted,
                format!(
                    "{} is a complete copy encrypted with {key}: the unencrypted {} is deleted",
                    verified.copy_id(),
                    verified.source_id()
                ),
            ),
            Err(e) => failed(source_id, e),
        }
    } else {
        item(
            source_id,
            EvidenceAction::Verified,
            format!(
                "{copy_id} is a complete copy encrypted with {key}; {source_id} is kept \
                 (DELETE_UNENCRYPTED_SNAPSHOTS=false)"
            ),
        )
    };
    vec![record(store, source, with_copy(report)).await]
}
