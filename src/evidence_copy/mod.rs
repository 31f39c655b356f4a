//! Encrypted evidence: when `SNAPSHOT_KMS_KEY_ID` is set, every unencrypted evidence snapshot
//! is copied encrypted with that key once it completes, and, only with
//! `DELETE_UNENCRYPTED_SNAPSHOTS=true`, the unencrypted source is deleted once its copy is
//! complete and verified.
//!
//! Completion is learned from EBS's own events, through two rules in the template, never by
//! waiting inside a containment (a snapshot takes minutes to hours; the cuts take seconds):
//!
//! 1. "EBS Multi-Volume Snapshots Completion Status" (`createSnapshots`, `set_completion`):
//!    read the snapshots named; for each one that is this function's evidence (tagged with an
//!    instance and an incident), unencrypted and completed, look for a copy already made
//!    (tagged `ec2-quarantine:encrypted-copy-of`), and start one only if there is none, so a
//!    redelivered event makes no second copy. Snapshots of anyone else are left alone.
//! 2. "EBS Snapshot Notification" (`copySnapshot`, `copy_completion`): read the copy and its
//!    source; verify the copy ([`plan::verify_copy`]); note it in the incident record; then
//!    delete the source if, and only if, the setting says so (`retire`). Anything short of a
//!    verified copy keeps the source.
//!
//! A `failed` result for evidence means the evidence (or its encrypted copy) is at risk: the
//! invocation fails, with the report, so that it reaches the failure queue and its alarm.

mod copy_completion;
pub mod event;
pub mod key;
pub mod plan;
mod retire;
mod set_completion;
mod snapshots;
pub mod sweep;

use serde::Serialize;

use crate::aws::{AwsError, Clients};
use crate::config::Config;
use crate::event::EventError;
use crate::incident::IncidentStore;
use crate::report::Report;
use event::{SnapshotEvent, SnapshotEventKind};
use plan::SnapshotFacts;

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
    /// `CopySnapshot` refused for the region's concurrent copy limit: waited out, not lost. The
    /// sweep starts the copy later.
    CopyDeferred,
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
    let region = region_of(clients, config, event.region.as_deref());
    let store = store_of(clients, config);
    let (reason, items) = match &event.kind {
        SnapshotEventKind::Created { snapshot_ids } => (
            format!(
                "createSnapshots {} for {}",
                result(event),
                snapshot_ids.join(", ")
            ),
            set_completion::handle(clients, &store, key, &region, event, snapshot_ids).await,
        ),
        SnapshotEventKind::Copied { copy_id, source_id } => (
            format!(
                "copySnapshot {} for {copy_id}, a copy of {source_id}",
                result(event)
            ),
            copy_completion::handle(clients, &store, config, key, event, copy_id, source_id).await,
        ),
    };
    Ok(Report::from_evidence(reason, items))
}

/// The region the snapshots are in, which `CopySnapshot` names as the source region.
fn region_of(clients: &Clients, config: &Config, named: Option<&str>) -> String {
    named
        .map(str::to_owned)
        .or_else(|| config.region.clone())
        .or_else(|| clients.ec2.config().region().map(|r| r.to_string()))
        .unwrap_or_default()
}

fn store_of(clients: &Clients, config: &Config) -> IncidentStore {
    IncidentStore::new(
        clients.dynamodb.clone(),
        &config.incident_table,
        config.claim_timeout,
    )
}

fn result(event: &SnapshotEvent) -> String {
    if event.succeeded {
        "succeeded".to_owned()
    } else {
        format!("failed ({})", event.cause)
    }
}

pub(crate) fn item(
    snapshot: &str,
    action: EvidenceAction,
    detail: impl Into<String>,
) -> EvidenceReport {
    EvidenceReport {
        snapshot_id: snapshot.to_owned(),
        copy_id: None,
        instance_id: None,
        action,
        detail: detail.into(),
        error: None,
    }
}

pub(crate) fn failed(snapshot: &str, error: AwsError) -> EvidenceReport {
    EvidenceReport {
        detail: error.to_string(),
        error: Some(error),
        ..item(snapshot, EvidenceAction::Failed, "")
    }
}

pub(crate) fn not_evidence(snapshot: &str) -> EvidenceReport {
    item(
        snapshot,
        EvidenceAction::NotEvidence,
        "not evidence of this function (no ec2-quarantine:instance-id and incident tags, or \
         not this account's): left alone",
    )
}

/// Notes the copy in the incident record, so that a reviewer or a release finds it there. The
/// copy is the evidence either way; a failure to note it is said in the detail, not failed.
pub(crate) async fn record(
    store: &IncidentStore,
    source: &SnapshotFacts,
    report: EvidenceReport,
) -> EvidenceReport {
    let (Some(instance_id), Some(incident), Some(copy_id)) = (
        source.instance_id(),
        source.incident(),
        report.copy_id.as_deref(),
    ) else {
        return report;
    };
    let detail = match store
        .record_encrypted_copy(instance_id, incident, &source.id, copy_id)
        .await
    {
        Ok(()) => format!("{}; noted in the incident record", report.detail),
        Err(e) if e.has_code("ConditionalCheckFailedException") => format!(
            "{}; not noted in an incident record: the record of {instance_id} is now another \
             incident's (incident {incident} was released and the instance quarantined again); \
             the copy carries its incident's tags",
            report.detail
        ),
        Err(e) => format!("{}; not noted in the incident record ({e})", report.detail),
    };
    EvidenceReport {
        detail,
        instance_id: Some(instance_id.to_owned()),
        ..report
    }
}
