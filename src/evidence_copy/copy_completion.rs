//! A snapshot copy completed ("EBS Snapshot Notification", `copySnapshot`): verify it and,
//! only when asked, delete the unencrypted source it replaces.

use super::key::KmsKeyRef;
use super::{failed, item, not_evidence, plan, record, retire, snapshots};
use super::{EvidenceAction, EvidenceReport};
use crate::aws::Clients;
use crate::config::Config;
use crate::evidence_copy::event::SnapshotEvent;
use crate::incident::IncidentStore;

pub(super) async fn handle(
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
