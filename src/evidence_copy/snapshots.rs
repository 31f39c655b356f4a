//! The EC2 calls of the encrypted copies: reading snapshots, finding a copy already made, and
//! making one.
//!
//! IAM: `ec2:DescribeSnapshots`; `ec2:CopySnapshot` on snapshots; `ec2:CreateTags` on
//! snapshots as `CopySnapshot` creates them, `ec2-quarantine:*` keys only; on the key,
//! `kms:DescribeKey`, `kms:CreateGrant` (for AWS resources), `kms:GenerateDataKeyWithoutPlaintext`,
//! `kms:ReEncryptFrom`/`To` and `kms:Decrypt`, which EBS uses on the caller's behalf.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

use super::key::KmsKeyRef;
use super::plan::{SnapshotFacts, COPY_OF};
use crate::aws::{aws_err, AwsError, Clients};
use crate::contain::evidence::own_snapshots;
use crate::contain::tags;

/// This account's snapshots among `ids`, by id. Unknown ids are simply absent: a filter, unlike
/// `SnapshotIds`, does not fail the whole call for one snapshot that no longer exists.
pub async fn describe(
    clients: &Clients,
    ids: &[&str],
) -> Result<BTreeMap<String, SnapshotFacts>, AwsError> {
    let found = own_snapshots(
        clients,
        vec![Filter::builder()
            .name("snapshot-id")
            .set_values(Some(ids.iter().map(|id| id.to_string()).collect()))
            .build()],
    )
    .await?;
    Ok(found
        .iter()
        .filter_map(SnapshotFacts::from_sdk)
        .map(|f| (f.id.clone(), f))
        .collect())
}

/// The copies already made of `sources` (source id to copy), but failed ones: a copy in
/// `error` is no copy, and a new one may be made.
pub async fn existing_copies(
    clients: &Clients,
    sources: &[&str],
) -> Result<BTreeMap<String, SnapshotFacts>, AwsError> {
    copies(
        clients,
        Filter::builder()
            .name(format!("tag:{COPY_OF}"))
            .set_values(Some(sources.iter().map(|id| id.to_string()).collect()))
            .build(),
    )
    .await
}

/// Every copy this function made in the account (source id to copy), but failed ones, for the
/// sweep: one listing, however many sources there are.
pub async fn all_copies(clients: &Clients) -> Result<BTreeMap<String, SnapshotFacts>, AwsError> {
    copies(
        clients,
        Filter::builder().name("tag-key").values(COPY_OF).build(),
    )
    .await
}

async fn copies(
    clients: &Clients,
    filter: Filter,
) -> Result<BTreeMap<String, SnapshotFacts>, AwsError> {
    let found = own_snapshots(clients, vec![filter]).await?;
    Ok(found
        .iter()
        .filter_map(SnapshotFacts::from_sdk)
        .filter(|f| f.state != "error")
        .filter_map(|f| Some((f.copy_of()?.to_owned(), f)))
        .collect())
}

/// The account's completed, unencrypted snapshots tagged with an incident: the candidates for
/// an encrypted copy, which [`super::plan::plan_copy`] then decides on one by one.
pub async fn unencrypted_evidence(clients: &Clients) -> Result<Vec<SnapshotFacts>, AwsError> {
    let filter = |name: &str, value: &str| Filter::builder().name(name).values(value).build();
    let found = own_snapshots(
        clients,
        vec![
            filter("tag-key", tags::INCIDENT),
            filter("status", "completed"),
            filter("encrypted", "false"),
        ],
    )
    .await?;
    Ok(found.iter().filter_map(SnapshotFacts::from_sdk).collect())
}

/// Starts the encrypted copy of `source`; returns the new snapshot's id. EBS finishes it in the
/// background and announces it with a `copySnapshot` event.
pub async fn copy(
    clients: &Clients,
    source: &SnapshotFacts,
    key: &KmsKeyRef,
    region: &str,
) -> Result<String, AwsError> {
    let tags = source
        .copy_tags()
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    let output = clients
        .ec2
        .copy_snapshot()
        .source_snapshot_id(&source.id)
        .source_region(region)
        .encrypted(true)
        .kms_key_id(key.as_str())
        .description(format!(
            "ec2-quarantine encrypted copy of evidence {} of {}",
            source.id,
            source.instance_id().unwrap_or("?")
        ))
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Snapshot)
                .set_tags(Some(tags))
                .build(),
        )
        .send()
        .await
        .map_err(aws_err("CopySnapshot"))?;
    output
        .snapshot_id()
        .map(str::to_owned)
        .ok_or_else(|| AwsError::local("CopySnapshot", "the answer names no snapshot"))
}
