//! The durable incident record: one DynamoDB item per instance (`INCIDENT_TABLE`, key
//! `instance_id`), written only by this function.
//!
//! It is the lock and the source of truth. The first invocation to claim an instance (a
//! conditional put) names the incident and records the instance's original state before any
//! change; a concurrent or later invocation finds the claim and converges on it: the same
//! incident, the same snapshots, and an original state that is never overwritten with the
//! isolated one. Release restores from this record, never from tags, which anyone allowed to
//! tag can alter.
//!
//! IAM: `dynamodb:PutItem`, `dynamodb:GetItem`, `dynamodb:UpdateItem` on the table (a release's
//! `TransactWriteItems` needs only `dynamodb:UpdateItem`, the action of each of its writes).
//!
//! Each piece of original state is its own attribute, written with `if_not_exists`, so the first
//! observation of a piece wins whichever invocation made it. Complex values are stored as JSON
//! strings: the record is read by this function and by people, not queried.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::aws::{aws_err, AwsError};
use crate::report::{InterfaceGroups, OriginalState, SnapshotRecord, TargetRegistration};

/// The table's key: an instance id; `role#<ARN>` for a role's revocation list
/// ([`crate::revocations`]); `released#<instance id>#<incident>#<time>` for the record of a
/// released incident, kept when the instance is quarantined again ([`archive_key`]).
pub(crate) const KEY: &str = "instance_id";
const INCIDENT: &str = "incident";
const STATUS: &str = "status";
const CLAIMED_BY: &str = "claimed_by";
const CLAIMED_AT: &str = "claimed_at";
const UPDATED_AT: &str = "updated_at";
const REASON: &str = "reason";
/// The account the instance is in. Not part of the key: instance ids do not repeat across
/// accounts, and a new key would mean replacing a table that is kept on purpose.
const ACCOUNT: &str = "account";
const SNAPSHOTS: &str = "snapshots";
const LEASE_HOLDER: &str = "snapshot_lease_holder";
const LEASE_UNTIL: &str = "snapshot_lease_until";
/// The encrypted copies of the incident's snapshots, a string set of `SOURCE=COPY` pairs.
pub const ENCRYPTED_COPIES: &str = "encrypted_copies";
pub const ORIGINAL_INTERFACES: &str = "original_interfaces";
pub const ORIGINAL_PROFILE: &str = "original_profile";
pub const ORIGINAL_AUTO_SCALING_GROUP: &str = "original_auto_scaling_group";
pub const ORIGINAL_TARGET_GROUPS: &str = "original_target_groups";
pub const ORIGINAL_CLASSIC_LOAD_BALANCERS: &str = "original_classic_load_balancers";

/// The status a released instance's record carries; a new quarantine may claim it again.
pub const RELEASED: &str = "released";
/// The status of a record while its first containment runs: nothing to release yet.
pub const CONTAINING: &str = "containing";
/// A release that did not restore everything: it may be retried, and a new quarantine converges
/// on the same incident.
pub const RELEASE_PARTIAL: &str = "release-partial";
const RELEASED_AT: &str = "released_at";
const RELEASED_BY: &str = "released_by";
const RELEASE_REASON: &str = "release_reason";

/// The profile an instance had: `arn: None` when it had none (unlike a missing attribute,
/// which means nobody has observed it yet).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRecord {
    pub arn: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub instance_id: String,
    pub incident: String,
    pub status: String,
    pub claimed_by: String,
    pub claimed_at: String,
    pub reason: String,
    pub account: Option<String>,
    pub interfaces: Option<Vec<InterfaceGroups>>,
    pub profile: Option<ProfileRecord>,
    pub auto_scaling_group: Option<GroupRecord>,
    pub target_groups: Option<Vec<TargetRegistration>>,
    pub classic_load_balancers: Option<Vec<String>>,
    pub snapshots: Option<Vec<SnapshotRecord>>,
    /// Set on a claim: the claimer takes the snapshot lease with the claim itself, until then
    /// (seconds since the epoch), saving the round trip of taking it after.
    pub snapshot_lease_until: Option<u64>,
    /// When the record last changed status: a release marks it only if it has not changed since
    /// the release read it.
    pub updated_at: Option<String>,
}

impl Record {
    /// The original state as the report shows it.
    pub fn original(&self) -> OriginalState {
        OriginalState {
            network_interfaces: self.interfaces.clone().unwrap_or_default(),
            instance_profile_arn: self.profile.as_ref().and_then(|p| p.arn.clone()),
            auto_scaling_group: self
                .auto_scaling_group
                .as_ref()
                .and_then(|g| g.name.clone()),
            target_groups: self.target_groups.clone().unwrap_or_default(),
            classic_load_balancers: self.classic_load_balancers.clone().unwrap_or_default(),
            already_isolated: Vec::new(),
        }
    }
}

#[derive(Clone)]
pub enum Claim {
    /// This invocation is the first: its incident and original state are the record's.
    New(Record),
    /// Another invocation (or an earlier run of this one) claimed the instance first.
    Existing(Record),
}

pub enum Lease {
    /// This invocation takes the snapshots.
    Held,
    /// They are taken already, for this incident.
    Done(Vec<SnapshotRecord>),
    /// Another invocation is taking them now.
    HeldByOther { holder: String },
    /// There is no record to lock (the claim failed): take them, relying on the tags.
    NoRecord,
}

#[derive(Clone, Debug)]
pub struct IncidentStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// The claim sits in front of the network and credential cuts, so it gets a budget of its
    /// own (`CLAIM_TIMEOUT_MS`), far below the SDK's default: if the table does not answer in
    /// time, the cuts go ahead without it.
    claim_timeout: Duration,
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn json<T: Serialize>(value: &T) -> AttributeValue {
    s(serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned()))
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> String {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

fn parsed<T: DeserializeOwned>(item: &HashMap<String, AttributeValue>, name: &str) -> Option<T> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .and_then(|v| serde_json::from_str(v).ok())
}

fn record_of(item: &HashMap<String, AttributeValue>) -> Record {
    Record {
        instance_id: text(item, KEY),
        incident: text(item, INCIDENT),
        status: text(item, STATUS),
        claimed_by: text(item, CLAIMED_BY),
        claimed_at: text(item, CLAIMED_AT),
        reason: text(item, REASON),
        account: item.get(ACCOUNT).and_then(|v| v.as_s().ok()).cloned(),
        interfaces: parsed(item, ORIGINAL_INTERFACES),
        profile: parsed(item, ORIGINAL_PROFILE),
        auto_scaling_group: parsed(item, ORIGINAL_AUTO_SCALING_GROUP),
        target_groups: parsed(item, ORIGINAL_TARGET_GROUPS),
        classic_load_balancers: parsed(item, ORIGINAL_CLASSIC_LOAD_BALANCERS),
        snapshots: parsed(item, SNAPSHOTS),
        snapshot_lease_until: item
            .get(LEASE_UNTIL)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok()),
        updated_at: item.get(UPDATED_AT).and_then(|v| v.as_s().ok()).cloned(),
    }
}

impl IncidentStore {
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        claim_timeout: Duration,
    ) -> Self {
        Self {
            client,
            table: table.into(),
            claim_timeout,
        }
    }

    /// Claims the instance with `new`, or returns the record that is already there. A record of
    /// a released instance is replaced: that is a new quarantine.
    pub async fn claim(&self, new: &Record) -> Result<Claim, AwsError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(KEY, s(&new.instance_id))
            .item(INCIDENT, s(&new.incident))
            .item(STATUS, s(&new.status))
            .item(CLAIMED_BY, s(&new.claimed_by))
            .item(CLAIMED_AT, s(&new.claimed_at))
            .item(UPDATED_AT, s(&new.claimed_at))
            .item(REASON, s(&new.reason))
            .condition_expression("attribute_not_exists(#key) OR #status = :released")
            .expression_attribute_names("#key", KEY)
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_values(":released", s(RELEASED));
        if let Some(account) = &new.account {
            put = put.item(ACCOUNT, s(account));
        }
        if let Some(interfaces) = &new.interfaces {
            put = put.item(ORIGINAL_INTERFACES, json(interfaces));
        }
        if let Some(profile) = &new.profile {
            put = put.item(ORIGINAL_PROFILE, json(profile));
        }
        if let Some(until) = new.snapshot_lease_until {
            put = put
                .item(LEASE_HOLDER, s(&new.claimed_by))
                .item(LEASE_UNTIL, AttributeValue::N(until.to_string()));
        }
        let result = put
            .customize()
            .config_override(
                aws_sdk_dynamodb::config::Builder::default().timeout_config(
                    TimeoutConfig::builder()
                        // Room for a retry or two within the budget.
                        .operation_attempt_timeout(self.claim_timeout / 3)
                        .operation_timeout(self.claim_timeout)
                        .build(),
                ),
            )
            .send()
            .await
            .map_err(aws_err("PutItem"));
        match result {
            Ok(_) => Ok(Claim::New(new.clone())),
            Err(e) if e.has_code("ConditionalCheckFailedException") => {
                match self.get(&new.instance_id).await? {
                    Some(existing) => Ok(Claim::Existing(existing)),
                    // Released and removed between the put and the read: a rare race, and
                    // claiming again is exactly right.
                    None => Box::pin(self.claim(new)).await,
                }
            }
            Err(e) => Err(e),
        }
    }

    pub async fn get(&self, instance_id: &str) -> Result<Option<Record>, AwsError> {
        Ok(self.item(instance_id).await?.as_ref().map(record_of))
    }

    /// Records one piece of original state unless one is recorded already: called by a step
    /// as it changes that piece.
    pub async fn remember<T: Serialize>(
        &self,
        instance_id: &str,
        field: &'static str,
        value: &T,
    ) -> Result<(), AwsError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(KEY, s(instance_id))
            .update_expression("SET #f = if_not_exists(#f, :v)")
            .condition_expression("attribute_exists(#key)")
            .expression_attribute_names("#f", field)
            .expression_attribute_names("#key", KEY)
            .expression_attribute_values(":v", json(value))
            .send()
            .await
            .map(|_| ())
            .map_err(aws_err("UpdateItem"))
    }

    /// Takes the right to snapshot this instance for its incident, for `lease` seconds.
    pub async fn take_snapshot_lease(
        &self,
        instance_id: &str,
        holder: &str,
        now_secs: u64,
        lease_secs: u64,
    ) -> Result<Lease, AwsError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, s(instance_id))
            .update_expression("SET #holder = :me, #until = :until")
            .condition_expression(
                "attribute_exists(#key) AND attribute_not_exists(#snapshots) AND \
                 (attribute_not_exists(#until) OR #until < :now OR #holder = :me)",
            )
            .expression_attribute_names("#key", KEY)
            .expression_attribute_names("#holder", LEASE_HOLDER)
            .expression_attribute_names("#until", LEASE_UNTIL)
            .expression_attribute_names("#snapshots", SNAPSHOTS)
            .expression_attribute_values(":me", s(holder))
            .expression_attribute_values(":now", AttributeValue::N(now_secs.to_string()))
            .expression_attribute_values(
                ":until",
                AttributeValue::N((now_secs + lease_secs).to_string()),
            )
            .send()
            .await
            .map_err(aws_err("UpdateItem"));
        match result {
            Ok(_) => Ok(Lease::Held),
            Err(e) if e.has_code("ConditionalCheckFailedException") => {
                let Some(record) = self.get(instance_id).await? else {
                    return Ok(Lease::NoRecord);
                };
                if let Some(snapshots) = record.snapshots {
                    return Ok(Lease::Done(snapshots));
                }
                let item = self.item(instance_id).await?;
                Ok(Lease::HeldByOther {
                    holder: item.map(|i| text(&i, LEASE_HOLDER)).unwrap_or_default(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up after a failed attempt, so that the next invocation need not wait
    /// for it to lapse. Only the holder's own lease is removed.
    pub async fn release_snapshot_lease(
        &self,
        instance_id: &str,
        holder: &str,
    ) -> Result<(), AwsError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(KEY, s(instance_id))
            .update_expression("REMOVE #holder, #until")
            .condition_expression("#holder = :me")
            .expression_attribute_names("#holder", LEASE_HOLDER)
            .expression_attribute_names("#until", LEASE_UNTIL)
            .expression_attribute_values(":me", s(holder))
            .send()
            .await
            .map(|_| ())
            .map_err(aws_err("UpdateItem"))
    }

    async fn item(
        &self,
        instance_id: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, AwsError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, s(instance_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws_err("GetItem"))?;
        Ok(output.item().cloned())
    }

    pub async fn record_snapshots(
        &self,
        instance_id: &str,
        snapshots: &[SnapshotRecord],
    ) -> Result<(), AwsError> {
        self.remember(instance_id, SNAPSHOTS, &snapshots).await
    }

    /// Notes that `copy` is the encrypted copy of the evidence snapshot `source`. Adding to a
    /// set is idempotent and needs no read, so redeliveries and concurrent invocations converge.
    /// Only the record of the incident `source` was taken for is written: a record made of this
    /// alone would look claimed, and after a release and a new quarantine the live record is
    /// another incident's.
    pub async fn record_encrypted_copy(
        &self,
        instance_id: &str,
        incident: &str,
        source: &str,
        copy: &str,
    ) -> Result<(), AwsError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(KEY, s(instance_id))
            .update_expression("ADD #copies :pair")
            .condition_expression("attribute_exists(#key) AND #incident = :incident")
            .expression_attribute_names("#copies", ENCRYPTED_COPIES)
            .expression_attribute_names("#key", KEY)
            .expression_attribute_names("#incident", INCIDENT)
            .expression_attribute_values(":incident", s(incident))
            .expression_attribute_values(
                ":pair",
                AttributeValue::Ss(vec![format!("{source}={copy}")]),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(aws_err("UpdateItem"))
    }

    /// The end of a containment: its status, and any original state this run observed that no
    /// earlier run recorded. Returns the record as it now stands.
    pub async fn finish(
        &self,
        instance_id: &str,
        status: &str,
        now: &str,
        observed: &Observed,
    ) -> Result<Record, AwsError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, s(instance_id))
            .condition_expression("attribute_exists(#key)")
            .expression_attribute_names("#key", KEY)
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#updated", UPDATED_AT)
            .expression_attribute_values(":status", s(status))
            .expression_attribute_values(":updated", s(now))
            .return_values(ReturnValue::AllNew);
        let mut sets = vec![
            "#status = :status".to_owned(),
            "#updated = :updated".to_owned(),
        ];
        let pieces: [(&str, Option<AttributeValue>); 5] = [
            (ORIGINAL_INTERFACES, observed.interfaces.as_ref().map(json)),
            (ORIGINAL_PROFILE, observed.profile.as_ref().map(json)),
            (
                ORIGINAL_AUTO_SCALING_GROUP,
                observed.auto_scaling_group.as_ref().map(json),
            ),
            (
                ORIGINAL_TARGET_GROUPS,
                observed.target_groups.as_ref().map(json),
            ),
            (
                ORIGINAL_CLASSIC_LOAD_BALANCERS,
                observed.classic_load_balancers.as_ref().map(json),
            ),
        ];
        for (i, (field, value)) in pieces.into_iter().enumerate() {
            if let Some(value) = value {
                sets.push(format!("#o{i} = if_not_exists(#o{i}, :o{i})"));
                update = update
                    .expression_attribute_names(format!("#o{i}"), field)
                    .expression_attribute_values(format!(":o{i}"), value);
            }
        }
        let output = update
            .update_expression(format!("SET {}", sets.join(", ")))
            .send()
            .await
            .map_err(aws_err("UpdateItem"))?;
        Ok(output.attributes().map(record_of).unwrap_or_default())
    }
}

/// Where a released incident's record is kept: a new quarantine of the instance replaces the
/// live record, and this copy keeps what the first incident changed and took. The release time
/// tells apart two releases of one incident (the same event delivered again after a release).
pub fn archive_key(instance_id: &str, incident: &str, released_at: &str) -> String {
    format!("released#{instance_id}#{incident}#{released_at}")
}

impl IncidentStore {
    /// The end of a release: `status` ([`RELEASED`] or [`RELEASE_PARTIAL`]), when, by which
    /// invocation and why. Only when the record is as the release read it before its first
    /// change (`seen`: status and `updated_at`): a containment that claimed or finished the
    /// instance meanwhile is not overwritten, and the release is run again.
    ///
    /// A released record may be replaced by the next quarantine's claim, so it is also copied
    /// to [`archive_key`] in the same transaction: the copy and the status land together or not
    /// at all, and neither lands if the record changed since it was read for the copy.
    pub async fn finish_release(
        &self,
        instance_id: &str,
        seen: &Record,
        status: &str,
        now: &str,
        released_by: &str,
        reason: &str,
    ) -> Result<Option<String>, AwsError> {
        let mut live = aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.table)
            .key(KEY, s(instance_id))
            .update_expression(
                "SET #status = :status, #updated = :now, #at = :now, #by = :by, #reason = :reason",
            )
            .expression_attribute_names("#key", KEY)
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#updated", UPDATED_AT)
            .expression_attribute_names("#at", RELEASED_AT)
            .expression_attribute_names("#by", RELEASED_BY)
            .expression_attribute_names("#reason", RELEASE_REASON)
            .expression_attribute_values(":status", s(status))
            .expression_attribute_values(":now", s(now))
            .expression_attribute_values(":by", s(released_by))
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":seen", s(&seen.status));
        live = match &seen.updated_at {
            Some(updated) => live
                .condition_expression(
                    "attribute_exists(#key) AND #status = :seen AND #updated = :updated",
                )
                .expression_attribute_values(":updated", s(updated)),
            None => live.condition_expression(
                "attribute_exists(#key) AND #status = :seen AND attribute_not_exists(#updated)",
            ),
        };
        let mut transaction = self.client.transact_write_items().transact_items(
            aws_sdk_dynamodb::types::TransactWriteItem::builder()
                .update(live.build().map_err(request_error)?)
                .build(),
        );
        let mut archived = None;
        if status == RELEASED {
            // Read for the copy only: the transaction's condition decides whether it lands.
            let Some(mut item) = self.item(instance_id).await? else {
                return Err(AwsError::local(
                    "GetItem",
                    format!("the record of {instance_id} is gone, so it is not marked {status}"),
                ));
            };
            let incident = item
                .get(INCIDENT)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default();
            item.remove(KEY);
            for (name, value) in [
                (STATUS, status),
                (UPDATED_AT, now),
                (RELEASED_AT, now),
                (RELEASED_BY, released_by),
                (RELEASE_REASON, reason),
            ] {
                item.insert(name.to_owned(), s(value));
            }
            let key = archive_key(instance_id, &incident, now);
            transaction = transaction.transact_items(
                aws_sdk_dynamodb::types::TransactWriteItem::builder()
                    .update(copy_of(&self.table, &key, item)?)
                    .build(),
            );
            archived = Some(key);
        }
        transaction
            .send()
            .await
            .map(|_| archived)
            .map_err(aws_err("TransactWriteItems"))
    }
}

fn request_error(e: aws_sdk_dynamodb::error::BuildError) -> AwsError {
    AwsError::local("TransactWriteItems", e.to_string())
}

/// An update that makes the item at `key` hold exactly `attributes` (it is new: nothing else is
/// there). An update rather than a put, so that the release role needs no `dynamodb:PutItem`.
fn copy_of(
    table: &str,
    key: &str,
    attributes: HashMap<String, AttributeValue>,
) -> Result<aws_sdk_dynamodb::types::Update, AwsError> {
    let mut update = aws_sdk_dynamodb::types::Update::builder()
        .table_name(table)
        .key(KEY, s(key))
        .condition_expression("attribute_not_exists(#key)")
        .expression_attribute_names("#key", KEY);
    let mut sets = Vec::new();
    for (i, (name, value)) in attributes.into_iter().enumerate() {
        sets.push(format!("#a{i} = :a{i}"));
        update = update
            .expression_attribute_names(format!("#a{i}"), name)
            .expression_attribute_values(format!(":a{i}"), value);
    }
    update
        .update_expression(format!("SET {}", sets.join(", ")))
        .build()
        .map_err(request_error)
}

/// Original state one run observed before changing it; `None` for what it did not observe
/// (already changed by an earlier run, or its read failed).
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub interfaces: Option<Vec<InterfaceGroups>>,
    pub profile: Option<ProfileRecord>,
    pub auto_scaling_group: Option<GroupRecord>,
    pub target_groups: Option<Vec<TargetRegistration>>,
    pub classic_load_balancers: Option<Vec<String>>,
}
