//! Evidence: one crash-consistent `CreateSnapshots` call for every EBS volume of the instance,
//! each snapshot tagged with the instance and the incident. (The instance description itself is
//! kept by [`super::instance`] and goes into the report.)
//!
//! IAM: `ec2:CreateSnapshots`, `ec2:CreateTags` (tag on create), `ec2:DescribeSnapshots`.
//!
//! Snapshots are tagged only through `CreateSnapshots` itself, and only with `ec2-quarantine:`
//! keys: the function's role may write no other tag, so the volumes' own tags are not copied.
//!
//! Idempotent per incident: snapshots already tagged with this instance and incident are found
//! first, and only volumes without one are snapshotted, so a retried or redelivered event never
//! makes a second set. Instance-store volumes cannot be snapshotted; an instance with only those
//! is skipped with that reason.

use std::collections::BTreeMap;
use std::time::Instant;

use aws_sdk_ec2::types::{
    Filter, InstanceSpecification, ResourceType, Snapshot, Tag, TagSpecification,
};

use super::instance::InstanceFacts;
use super::progress::Progress;
use super::tags;
use super::{step_report, StepResult};
use crate::aws::{aws_err, AwsError, Clients};
use crate::consistency::until_settled;
use crate::incident::IncidentStore;
use crate::report::{SnapshotRecord, Status, Step, StepReport};

pub struct EvidenceCut {
    pub report: StepReport,
    pub snapshots: Vec<SnapshotRecord>,
    /// Whether the snapshots this run created went into the incident record, when it was given
    /// one ([`Record`]); `None` when none was given or nothing was created.
    pub recorded: Option<Result<(), AwsError>>,
}

/// Where the snapshots a run creates are recorded: the incident record of the instance.
#[derive(Clone, Copy)]
pub struct Record<'a> {
    pub store: &'a IncidentStore,
    pub instance_id: &'a str,
    /// Told that the snapshots are taken before they are recorded, so that the tags need not
    /// wait for the record.
    pub progress: &'a Progress,
}

/// Where earlier snapshots of this incident may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prior {
    /// The incident was named just now by this invocation's claim: none can exist, and the
    /// search for them (slow: a tag filter over every snapshot the account can see) is skipped.
    None,
    /// An earlier run may have taken some: look for them by tag first.
    Possible,
}

pub async fn snapshot_volumes(
    clients: &Clients,
    facts: &InstanceFacts,
    incident: &str,
    enabled: bool,
    prior: Prior,
    record: Option<Record<'_>>,
) -> EvidenceCut {
    let started = Instant::now();
    let mut snapshots = Vec::new();
    let mut recorded = None;
    let result = if !enabled {
        Ok(StepResult::skipped("turned off by SNAPSHOT_VOLUMES=false"))
    } else if facts.volumes.is_empty() {
        Ok(StepResult::skipped(
            "no EBS volume attached (instance-store volumes cannot be snapshotted)",
        ))
    } else {
        snapshot(
            clients,
            facts,
            incident,
            prior,
            record,
            (&mut snapshots, &mut recorded),
        )
        .await
    };
    EvidenceCut {
        report: step_report(Step::SnapshotVolumes, started, result),
        snapshots,
        recorded,
    }
}

/// Every snapshot of this account that matches `filters`, all pages.
pub(crate) async fn own_snapshots(
    clients: &Clients,
    filters: Vec<Filter>,
) -> Result<Vec<Snapshot>, AwsError> {
    clients
        .ec2
        .describe_snapshots()
        .owner_ids("self")
        .set_filters(Some(filters))
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(aws_err("DescribeSnapshots"))
}

/// Volume id to snapshot id, for the snapshots of this instance and incident.
pub(crate) async fn existing(
    clients: &Clients,
    instance_id: &str,
    incident: &str,
) -> Result<BTreeMap<String, String>, AwsError> {
    let snapshots = own_snapshots(
        clients,
        vec![
            Filter::builder()
                .name(format!("tag:{}", tags::SNAPSHOT_INSTANCE))
                .values(instance_id)
                .build(),
            Filter::builder()
                .name(format!("tag:{}", tags::INCIDENT))
                .values(incident)
                .build(),
        ],
    )
    .await?;
    Ok(snapshots
        .iter()
        .filter(|s| s.state().map(|s| s.as_str()) != Some("error"))
        .filter_map(|s| Some((s.volume_id()?.to_owned(), s.snapshot_id()?.to_owned())))
        .collect())
}

async fn snapshot(
    clients: &Clients,
    facts: &InstanceFacts,
    incident: &str,
    prior: Prior,
    record: Option<Record<'_>>,
    (records, recorded): (&mut Vec<SnapshotRecord>, &mut Option<Result<(), AwsError>>),
) -> Result<StepResult, AwsError> {
    let before = match prior {
        Prior::Possible => existing(clients, &facts.instance_id, incident).await?,
        Prior::None => BTreeMap::new(),
    };
    let covered = |volume_id: &str| before.contains_key(volume_id);
    let missing: Vec<&str> = facts
        .volumes
        .iter()
        .map(|v| v.volume_id.as_str())
        .filter(|v| !covered(v))
        .collect();
    records.extend(
        before
            .iter()
            .map(|(volume_id, snapshot_id)| SnapshotRecord {
                snapshot_id: snapshot_id.clone(),
                volume_id: volume_id.clone(),
            }),
    );
    if missing.is_empty() {
        return Ok(StepResult::unchanged(format!(
            "{} volume(s) already snapshotted for incident {incident}",
            before.len()
        )));
    }
    let root_volume = facts
        .volumes
        .iter()
        .find(|v| Some(&v.device_name) == facts.root_device_name.as_ref())
        .map(|v| v.volume_id.as_str());
    let exclude_data: Vec<String> = facts
        .volumes
        .iter()
        .map(|v| v.volume_id.as_str())
        .filter(|v| covered(v) && Some(*v) != root_volume)
        .map(str::to_owned)
        .collect();
    let spec = InstanceSpecification::builder()
        .instance_id(&facts.instance_id)
        .exclude_boot_volume(root_volume.is_some_and(covered))
        .set_exclude_data_volume_ids((!exclude_data.is_empty()).then_some(exclude_data))
        .build();
    let output = clients
        .ec2
        .create_snapshots()
        .instance_specification(spec)
        .description(format!(
            "ec2-quarantine evidence of {} for incident {incident}",
            facts.instance_id
        ))
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Snapshot)
                .tags(tag(tags::SNAPSHOT_INSTANCE, &facts.instance_id))
                .tags(tag(tags::INCIDENT, incident))
                .build(),
        )
        .send()
        .await
        .map_err(aws_err("CreateSnapshots"))?;
    let created: Vec<SnapshotRecord> = output
        .snapshots()
        .iter()
        .filter_map(|s| {
            Some(SnapshotRecord {
                snapshot_id: s.snapshot_id()?.to_owned(),
                volume_id: s.volume_id()?.to_owned(),
            })
        })
        .collect();
    records.extend(created.iter().cloned());
    // New snapshot ids may be unknown to EC2 for seconds.
    let shows_every_volume =
        |after: &std::collections::BTreeSet<String>| missing.iter().all(|v| after.contains(*v));
    let after = until_settled(|| read_back(clients, &created), shows_every_volume).await?;
    let unreadable: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|v| !after.contains(*v))
        .collect();
    if !unreadable.is_empty() {
        return Err(AwsError::local(
            "DescribeSnapshots",
            format!("read back no snapshot of {}", unreadable.join(", ")),
        ));
    }
    // Recorded only once EC2 shows a snapshot of every volume: the record's snapshots end the
    // lease for good (a retry finds them and takes no more), so a failed or partial set must
    // not get there.
    if let Some(r) = record {
        r.progress.written(Step::SnapshotVolumes, Status::Done);
        *recorded = Some(r.store.record_snapshots(r.instance_id, records).await);
    }
    let ids: Vec<String> = created
        .iter()
        .map(|s| format!("{} of {}", s.snapshot_id, s.volume_id))
        .collect();
    Ok(StepResult::done(format!("created {}", ids.join(", "))))
}

/// The volumes of the snapshots just created that EC2 now shows, found by snapshot id.
async fn read_back(
    clients: &Clients,
    created: &[SnapshotRecord],
) -> Result<std::collections::BTreeSet<String>, AwsError> {
    if created.is_empty() {
        return Ok(Default::default());
    }
    let output = clients
        .ec2
        .describe_snapshots()
        .set_snapshot_ids(Some(
            created.iter().map(|s| s.snapshot_id.clone()).collect(),
        ))
        .send()
        .await
        .map_err(aws_err("DescribeSnapshots"))?;
    Ok(output
        .snapshots()
        .iter()
        .filter(|s| s.state().map(|s| s.as_str()) != Some("error"))
        .filter_map(|s| s.volume_id().map(str::to_owned))
        .collect())
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}
