//! Encrypted evidence against the emulator, which emits no EBS events: each test contains an
//! instance (real `CreateSnapshots`), then hands the function synthetic completion events of the
//! documented shapes naming the real snapshots, and reads the account back.
//!
//! moto's `CopySnapshot` keeps the `KmsKeyId` it is given and marks the copy encrypted when
//! there is one, and applies `TagSpecifications`; its snapshots are `completed` at once, so a
//! copy that is still `pending` is left to the unit tests of `evidence_copy::plan`.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use ec2_quarantine::evidence_copy::{EvidenceAction, EvidenceReport};
use ec2_quarantine::handler::{handle, Deps, HandlerError};
use ec2_quarantine::report::{Outcome, Report};
use serde_json::{json, Value};

use crate::containment::{contain, trigger_event};
use crate::support::faults::Faults;
use crate::support::scenario::{Account, Options, Scenario};
use crate::support::{
    create_incident_table, endpoint, recorded_clients, unique, with_faults, CallLog,
    INCIDENT_TABLE, REGION,
};

const COPY_OF: &str = "ec2-quarantine:encrypted-copy-of";

/// A customer managed key in the emulator's KMS, by ARN, made with the virtualenv's boto3 (the
/// function needs no KMS client, so the crate has none).
fn kms_key() -> String {
    let venv = std::env::var("EC2Q_VENV")
        .expect("EC2Q_VENV is not set: run the tests through scripts/test.sh or scripts/env.sh");
    let script = format!(
        "import boto3; print(boto3.client('kms', endpoint_url='{}', region_name='{REGION}', \
         aws_access_key_id='testing', aws_secret_access_key='testing')\
         .create_key(Description='ec2-quarantine evidence')['KeyMetadata']['Arn'])",
        endpoint()
    );
    let out = std::process::Command::new(format!("{venv}/bin/python"))
        .args(["-c", &script])
        .output()
        .expect("run the virtualenv's python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn created_event(snapshot_ids: &[&str], result: &str, cause: &str) -> Value {
    let arn = |id: &str| format!("arn:aws:ec2::{REGION}:snapshot/{id}");
    json!({
        "version": "0", "id": unique("ebs"), "detail-type": "EBS Multi-Volume Snapshots Completion Status",
        "source": "aws.ec2", "account": "123456789012", "time": "2026-11-23T10:05:00Z", "region": REGION,
        "resources": snapshot_ids.iter().map(|id| arn(id)).collect::<Vec<_>>(),
        "detail": {
            "event": "createSnapshots", "result": result, "cause": cause, "request-id": "",
            "startTime": "2026-11-23T10:00:00Z", "endTime": "2026-11-23T10:05:00Z",
            "snapshots": snapshot_ids.iter().map(|id| json!({
                "snapshot_id": arn(id), "source": format!("arn:aws:ec2::{REGION}:volume/vol-0123456789abcdef0"),
                "status": if result == "succeeded" { "completed" } else { "error" }
            })).collect::<Vec<_>>()
        }
    })
}

fn copied_event(copy_id: &str, source_id: &str, result: &str) -> Value {
    json!({
        "version": "0", "id": unique("ebs"), "detail-type": "EBS Snapshot Notification",
        "source": "aws.ec2", "account": "123456789012", "time": "2026-11-23T10:09:00Z", "region": REGION,
        "resources": [format!("arn:aws:ec2:{REGION}::snapshot/{copy_id}")],
        "detail": {
            "event": "copySnapshot", "result": result,
            "cause": if result == "failed" { "Source snapshot ID is not valid" } else { "" },
            "request-id": "",
            "snapshot_id": format!("arn:aws:ec2:{REGION}::snapshot/{copy_id}"),
            "source": format!("arn:aws:ec2:{REGION}::snapshot/{source_id}"),
            "startTime": "2026-11-23T10:05:00Z", "endTime": "2026-11-23T10:09:00Z",
            "Incremental": "false"
        }
    })
}

/// The function as deployed with `vars`, its calls recorded.
fn deps(scenario: &Scenario, vars: &[(&str, &str)]) -> (Deps, CallLog) {
    let log = CallLog::default();
    let deps = Deps {
        clients: recorded_clients(&scenario.account.sdk, &log),
        config: scenario.config(vars),
        accounts: crate::support::accounts(&scenario.account.sdk, &log),
    };
    (deps, log)
}

/// A contained instance and its evidence snapshots (sorted ids).
async fn contained() -> (Scenario, Vec<String>) {
    contained_in(Scenario::build(Options::default()).await).await
}

async fn contained_in(scenario: Scenario) -> (Scenario, Vec<String>) {
    let (report, _) = contain(&scenario, trigger_event(&[&scenario.instance_id]), &[]).await;
    report.expect("contained");
    let mut snapshots: Vec<String> = scenario
        .account
        .snapshots_of(&scenario.instance_id)
        .await
        .into_iter()
        .map(|(snapshot, _)| snapshot)
        .collect();
    snapshots.sort();
    assert_eq!(snapshots.len(), 2, "two volumes, two snapshots");
    (scenario, snapshots)
}

fn evidence_of<'a>(report: &'a Report, snapshot: &str) -> &'a EvidenceReport {
    report
        .evidence
        .iter()
        .find(|e| e.snapshot_id == snapshot)
        .unwrap_or_else(|| panic!("no entry for {snapshot}: {}", report.to_json()))
}

struct Described {
    encrypted: bool,
    kms_key_id: Option<String>,
    state: String,
    tags: BTreeMap<String, String>,
}

async fn describe(account: &Account, snapshot: &str) -> Option<Described> {
    let out = account
        .ec2
        .describe_snapshots()
        .filters(
            Filter::builder()
                .name("snapshot-id")
                .values(snapshot)
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.snapshots().first().map(|s| Described {
        encrypted: s.encrypted().unwrap_or(false),
        kms_key_id: s.kms_key_id().map(str::to_owned),
        state: s.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        tags: s
            .tags()
            .iter()
            .map(|t| (t.key().unwrap().to_owned(), t.value().unwrap().to_owned()))
            .collect(),
    })
}

/// Every snapshot tagged as the encrypted copy of `source`.
async fn copies_of(account: &Account, source: &str) -> Vec<String> {
    let out = account
        .ec2
        .describe_snapshots()
        .filters(
            Filter::builder()
                .name(format!("tag:{COPY_OF}"))
                .values(source)
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.snapshots()
        .iter()
        .map(|s| s.snapshot_id().unwrap().to_owned())
        .collect()
}

/// The copies the function made, through the completion event of the set.
async fn copy_all(scenario: &Scenario, snapshots: &[String], key: &str) -> Vec<String> {
    let (deps, _) = deps(scenario, &[("SNAPSHOT_KMS_KEY_ID", key)]);
    let ids: Vec<&str> = snapshots.iter().map(String::as_str).collect();
    let report = handle(created_event(&ids, "succeeded", ""), "copy", &deps)
        .await
        .expect("copies started");
    snapshots
        .iter()
        .map(|s| evidence_of(&report, s).copy_id.clone().expect("a copy"))
        .collect()
}

#[tokio::test]
async fn a_completed_set_of_evidence_is_copied_encrypted_with_the_key_and_tagged_like_its_source() {
    let (scenario, snapshots) = contained().await;
    let key = kms_key();
    let (deps, log) = deps(&scenario, &[("SNAPSHOT_KMS_KEY_ID", &key)]);
    let ids: Vec<&str> = snapshots.iter().map(String::as_str).collect();

    let report = handle(created_event(&ids, "succeeded", ""), "copy", &deps)
        .await
        .expect("no failure");

    assert_eq!(report.outcome, Outcome::Evidence, "{}", report.to_json());
    assert_eq!(log.count("CopySnapshot"), 2);
    let account = &scenario.account;
    for source in &snapshots {
        let entry = evidence_of(&report, source);
        assert_eq!(
            entry.action,
            EvidenceAction::CopyStarted,
            "{}",
            entry.detail
        );
        let copies = copies_of(account, source).await;
        assert_eq!(copies.len(), 1, "one copy of {source}: {copies:?}");
        assert_eq!(entry.copy_id.as_deref(), Some(copies[0].as_str()));
        let copy = describe(account, &copies[0]).await.unwrap();
        let original = describe(account, source).await.unwrap();
        assert!(copy.encrypted, "{} is encrypted", copies[0]);
        assert_eq!(copy.kms_key_id.as_deref(), Some(key.as_str()));
        assert!(!original.encrypted, "the source stays as it was");
        for tag in ["ec2-quarantine:instance-id", "ec2-quarantine:incident"] {
            assert_eq!(copy.tags.get(tag), original.tags.get(tag), "{tag}");
        }
        assert_eq!(copy.tags.get(COPY_OF), Some(source));
        assert_eq!(
            copy.tags.get("ec2-quarantine:instance-id"),
            Some(&scenario.instance_id)
        );
    }
    // The record of the incident names each copy.
    let item = account
        .dynamodb
        .get_item()
        .table_name(INCIDENT_TABLE)
        .key(
            "instance_id",
            aws_sdk_dynamodb::types::AttributeValue::S(scenario.instance_id.clone()),
        )
        .send()
        .await
        .unwrap();
    let mut recorded = item.item().unwrap()["encrypted_copies"]
        .as_ss()
        .unwrap()
        .clone();
    recorded.sort();
    let mut expected: Vec<String> = Vec::new();
    for source in &snapshots {
        expected.push(format!("{source}={}", copies_of(account, source).await[0]));
    }
    expected.sort();
    assert_eq!(recorded, expected);
}

#[tokio::test]
async fn a_redelivered_completion_event_makes_no_second_copy() {
    let (scenario, snapshots) = contained().await;
    let key = kms_key();
    let first = copy_all(&scenario, &snapshots, &key).await;
    let (deps, log) = deps(&scenario, &[("SNAPSHOT_KMS_KEY_ID", &key)]);
    let ids: Vec<&str> = snapshots.iter().map(String::as_str).collect();

    let report = handle(created_event(&ids, "succeeded", ""), "again", &deps)
        .await
        .unwrap();

    assert_eq!(log.count("CopySnapshot"), 0);
    for (source, copy) in snapshots.iter().zip(&first) {
        assert_eq!(
            copies_of(&scenario.account, source).await,
            vec![copy.clone()]
        );
        let entry = evidence_of(&report, source);
        assert_eq!(entry.action, EvidenceAction::CopyExists);
        assert_eq!(entry.copy_id.as_ref(), Some(copy));
    }
}

#[tokio::test]
async fn a_verified_copy_leaves_its_source_in_place_by_default() {
    let (scenario, snapshots) = contained().await;
    let key = kms_key();
    let copies = copy_all(&scenario, &snapshots, &key).await;
    let (deps, log) = deps(&scenario, &[("SNAPSHOT_KMS_KEY_ID", &key)]);

    let report = handle(
        copied_event(&copies[0], &snapshots[0], "succeeded"),
        "done",
        &deps,
    )
    .await
    .unwrap();

    assert_eq!(
        evidence_of(&report, &snapshots[0]).action,
        EvidenceAction::Verified
    );
    assert!(describe(&scenario.account, &snapshots[0]).await.is_some());
    assert_eq!(log.count("DeleteSnapshot"), 0);
}

#[tokio::test]
async fn a_verified_copy_replaces_its_unencrypted_source_when_deletion_is_on() {
    let (scenario, snapshots) = contained().await;
    let key = kms_key();
    let copies = copy_all(&scenario, &snapshots, &key).await;
    let vars = [
        ("SNAPSHOT_KMS_KEY_ID", key.as_str()),
        ("DELETE_UNENCRYPTED_SNAPSHOTS", "true"),
    ];
    let (deps, log) = deps(&scenario, &vars);

    let report = handle(
        copied_event(&copies[0], &snapshots[0], "succeeded"),
        "done",
        &deps,
    )
    .await
    .unwrap();

    assert_eq!(
        evidence_of(&report, &snapshots[0]).action,
        EvidenceAction::Deleted
    );
    assert_eq!(log.count("DeleteSnapshot"), 1);
    let account = &scenario.account;
    assert!(
        describe(account, &snapshots[0]).await.is_none(),
        "source deleted"
    );
    let copy = describe(account, &copies[0]).await.expect("the copy stays");
    assert_eq!((copy.encrypted, copy.state.as_str()), (true, "completed"));
    // The other volume's source, whose copy completed no event yet, is untouched.
    assert!(describe(account, &snapshots[1]).await.is_some());

    // The same event again: nothing left to delete, nothing else touched.
    let again = handle(
        copied_event(&copies[0], &snapshots[0], "succeeded"),
        "again",
        &deps,
    )
    .await
    .unwrap();
    assert_eq!(
        evidence_of(&again, &snapshots[0]).action,
        EvidenceAction::SourceGone
    );
    assert_eq!(log.count("DeleteSnapshot"), 1);
}

/// A snapshot made by the test as a stand-in for a copy: a real `CopySnapshot` of `source`,
/// with the key and tags given (none: unencrypted; the emulator keeps the source's state).
async fn copy_by_hand(
    account: &Account,
    source: &str,
    key: Option<&str>,
    tags: &[(&str, &str)],
) -> String {
    let mut copy = account
        .ec2
        .copy_snapshot()
        .source_snapshot_id(source)
        .source_region(REGION)
        .set_kms_key_id(key.map(str::to_owned));
    if !tags.is_empty() {
        copy = copy.tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Snapshot)
                .set_tags(Some(
                    tags.iter()
                        .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                        .collect(),
                ))
                .build(),
        );
    }
    copy.send().await.unwrap().snapshot_id().unwrap().to_owned()
}

#[tokio::test]
async fn the_source_is_never_deleted_unless_its_copy_is_proven_good() {
    let (scenario, snapshots) = contained().await;
    let (account, source, other) = (&scenario.account, &snapshots[0], &snapshots[1]);
    let key = kms_key();
    let other_key = kms_key();
    let original = describe(account, source).await.unwrap();
    let (instance, incident) = (
        original.tags["ec2-quarantine:instance-id"].clone(),
        original.tags["ec2-quarantine:incident"].clone(),
    );
    let ours = |of: &str| {
        vec![
            ("ec2-quarantine:instance-id".to_owned(), instance.clone()),
            ("ec2-quarantine:incident".to_owned(), incident.clone()),
            (COPY_OF.to_owned(), of.to_owned()),
        ]
    };
    let cases: Vec<(&str, String)> = vec![
        ("is missing", "snap-0ffffffffffffffff".to_owned()),
        (
            "carries no tag of this function",
            copy_by_hand(account, source, Some(&key), &[]).await,
        ),
        (
            "is the copy of another snapshot",
            copy_by_hand(account, source, Some(&key), &pairs(&ours(other))).await,
        ),
        (
            "is not encrypted",
            copy_by_hand(account, source, None, &pairs(&ours(source))).await,
        ),
        (
            "is encrypted with another key",
            copy_by_hand(account, source, Some(&other_key), &pairs(&ours(source))).await,
        ),
    ];
    let vars = [
        ("SNAPSHOT_KMS_KEY_ID", key.as_str()),
        ("DELETE_UNENCRYPTED_SNAPSHOTS", "true"),
    ];
    let (deps, log) = deps(&scenario, &vars);
    for (why, copy) in cases {
        let report = handle(copied_event(&copy, source, "succeeded"), "check", &deps)
            .await
            .unwrap_or_else(|e| panic!("the copy {why}: {e}"));
        let entry = evidence_of(&report, source);
        assert_eq!(
            entry.action,
            EvidenceAction::Kept,
            "the copy {why}: {}",
            entry.detail
        );
        assert!(
            describe(account, source).await.is_some(),
            "the copy {why}: source kept"
        );
    }
    assert_eq!(log.count("DeleteSnapshot"), 0);
}

fn pairs(owned: &[(String, String)]) -> Vec<(&str, &str)> {
    owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[tokio::test]
async fn events_about_snapshots_that_are_not_evidence_change_nothing() {
    let scenario = Scenario::build(Options::default()).await;
    let account = &scenario.account;
    let volume = scenario.volumes[0].clone();
    let foreign = account
        .ec2
        .create_snapshot()
        .volume_id(&volume)
        .send()
        .await
        .unwrap()
        .snapshot_id()
        .unwrap()
        .to_owned();
    let foreign_copy = copy_by_hand(account, &foreign, None, &[]).await;
    let key = kms_key();
    let vars = [
        ("SNAPSHOT_KMS_KEY_ID", key.as_str()),
        ("DELETE_UNENCRYPTED_SNAPSHOTS", "true"),
    ];
    let (deps, log) = deps(&scenario, &vars);

    for event in [
        created_event(&[&foreign], "succeeded", ""),
        created_event(&[&foreign], "failed", "Snapshot is in status error"),
        copied_event(&foreign_copy, &foreign, "succeeded"),
        copied_event(&foreign_copy, &foreign, "failed"),
    ] {
        let report = handle(event.clone(), "foreign", &deps)
            .await
            .expect("not a failure");
        assert_eq!(report.outcome, Outcome::Ignored, "{}", report.to_json());
        assert!(report
            .evidence
            .iter()
            .all(|e| e.action == EvidenceAction::NotEvidence));
    }
    let calls = log.calls();
    assert!(
        calls.iter().all(|c| c.ends_with(".DescribeSnapshots")),
        "only reads: {calls:?}"
    );
    assert!(describe(account, &foreign).await.is_some());
    assert!(copies_of(account, &foreign).await.is_empty());
}

#[tokio::test]
async fn snapshot_events_are_ignored_without_a_key_and_malformed_ones_are_invalid_with_no_call() {
    let scenario = Scenario::build(Options::default()).await;
    let (without_key, log) = deps(&scenario, &[]);
    let real = created_event(&["snap-0123456789abcdef0"], "succeeded", "");
    let report = handle(real, "no key", &without_key).await.unwrap();
    assert_eq!(report.outcome, Outcome::Ignored);
    assert!(report
        .reason
        .unwrap()
        .contains("SNAPSHOT_KMS_KEY_ID is not set"));

    let key = kms_key();
    let (with_key, keyed_log) = deps(&scenario, &[("SNAPSHOT_KMS_KEY_ID", &key)]);
    let mut no_snapshots = created_event(&["snap-0123456789abcdef0"], "succeeded", "");
    no_snapshots["detail"]["snapshots"] = json!([]);
    let mut bad_arn = copied_event(
        "snap-0aaaaaaaaaaaaaaaa",
        "snap-0123456789abcdef0",
        "succeeded",
    );
    bad_arn["detail"]["source"] = json!("snap-0123456789abcdef0");
    let mut bad_result = copied_event(
        "snap-0aaaaaaaaaaaaaaaa",
        "snap-0123456789abcdef0",
        "succeeded",
    );
    bad_result["detail"]["result"] = json!("ok");
    let mut other_region = created_event(&["snap-0123456789abcdef0"], "succeeded", "");
    other_region["region"] = json!("eu-west-1");
    let own_region = scenario.config(&[("SNAPSHOT_KMS_KEY_ID", &key), ("AWS_REGION", REGION)]);
    let regional = Deps {
        clients: recorded_clients(&scenario.account.sdk, &keyed_log),
        config: own_region,
        accounts: crate::support::accounts(&scenario.account.sdk, &keyed_log),
    };
    for (event, deps, expected) in [
        (no_snapshots, &with_key, "detail.snapshots is empty"),
        (bad_arn, &with_key, "detail.source"),
        (bad_result, &with_key, "detail.result"),
        (other_region, &regional, "region eu-west-1"),
    ] {
        match handle(event, "bad", deps).await {
            Err(HandlerError::InvalidEvent(e)) => {
                assert!(
                    e.to_string().contains(expected),
                    "{e} should say {expected:?}"
                )
            }
            other => panic!("expected an invalid event, got {other:?}"),
        }
    }
    assert_eq!(log.calls(), Vec::<String>::new());
    assert_eq!(keyed_log.calls(), Vec::<String>::new());
}

#[tokio::test]
async fn a_failed_snapshot_set_or_copy_of_evidence_fails_the_invocation_and_keeps_everything() {
    let (scenario, snapshots) = contained().await;
    let key = kms_key();
    let (deps, log) = deps(&scenario, &[("SNAPSHOT_KMS_KEY_ID", &key)]);
    let ids: Vec<&str> = snapshots.iter().map(String::as_str).collect();

    let failed_set = handle(
        created_event(&ids, "failed", "Snapshot snap-x is in status error"),
        "failed",
        &deps,
    )
    .await;
    let Err(HandlerError::EvidenceAtRisk(report)) = failed_set else {
        panic!("a failed set of evidence must fail the invocation: {failed_set:?}")
    };
    let diagnostic = lambda_runtime::Diagnostic::from(HandlerError::EvidenceAtRisk(report.clone()));
    assert_eq!(diagnostic.error_type, "EvidenceAtRisk");
    assert!(diagnostic.error_message.contains("in status error"));
    assert_eq!(report.outcome, Outcome::Partial);
    for source in &snapshots {
        let entry = evidence_of(&report, source);
        assert_eq!(entry.action, EvidenceAction::Failed);
        assert!(entry.detail.contains("in status error"), "{}", entry.detail);
        assert_eq!(entry.instance_id.as_ref(), Some(&scenario.instance_id));
    }

    let failed_copy = handle(
        copied_event("snap-0eeeeeeeeeeeeeeee", &snapshots[0], "failed"),
        "failed copy",
        &deps,
    )
    .await;
    let Err(HandlerError::EvidenceAtRisk(report)) = failed_copy else {
        panic!("a failed copy of evidence must fail the invocation: {failed_copy:?}")
    };
    assert!(evidence_of(&report, &snapshots[0])
        .detail
        .contains("is kept"));
    assert_eq!(log.count("CopySnapshot") + log.count("DeleteSnapshot"), 0);
    for source in &snapshots {
        assert!(describe(&scenario.account, source).await.is_some());
    }

    // A copy of the evidence that someone else made, and that failed, is theirs to watch.
    let theirs = copy_by_hand(&scenario.account, &snapshots[0], Some(&key), &[]).await;
    let report = handle(
        copied_event(&theirs, &snapshots[0], "failed"),
        "theirs",
        &deps,
    )
    .await
    .expect("not this function's copy");
    assert_eq!(report.outcome, Outcome::Ignored, "{}", report.to_json());
}

#[tokio::test]
async fn a_members_forwarded_snapshot_event_is_ignored_with_no_call() {
    let (scenario, snapshots) = contained().await;
    let key = kms_key();
    let (deps, log) = deps(&scenario, &[("SNAPSHOT_KMS_KEY_ID", &key)]);
    let ids: Vec<&str> = snapshots.iter().map(String::as_str).collect();
    let mut event = created_event(&ids, "succeeded", "");
    event["account"] = json!("111122223333");

    let report = handle(event, "member", &deps).await.unwrap();

    assert_eq!(report.outcome, ec2_quarantine::report::Outcome::Ignored);
    assert!(
        report
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("111122223333")),
        "{report:?}"
    );
    assert_eq!(log.calls(), Vec::<String>::new());
}

/// An account of the emulator that no other test uses: the sweep copies every uncopied
/// evidence snapshot of its account, and the other tests' snapshots must stay theirs to copy.
async fn account_of_its_own() -> Account {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    // 12 digits, new at every run: the emulator outlives a run.
    let id = format!("9{:011}", (nanos / 1000 + u128::from(n)) % 100_000_000_000);
    let account = Account::other(&id).await;
    create_incident_table(&account.sdk).await;
    account
}

/// Asserts that `source` has exactly one copy, encrypted with `key` and tagged as its copy with
/// its instance and incident; returns the copy's id.
async fn assert_one_encrypted_copy(account: &Account, source: &str, key: &str) -> String {
    let copies = copies_of(account, source).await;
    assert_eq!(copies.len(), 1, "one copy of {source}: {copies:?}");
    let copy = describe(account, &copies[0]).await.unwrap();
    let original = describe(account, source).await.unwrap();
    assert!(copy.encrypted, "{} is encrypted", copies[0]);
    assert_eq!(copy.kms_key_id.as_deref(), Some(key));
    assert_eq!(copy.tags.get(COPY_OF).map(String::as_str), Some(source));
    for tag in ["ec2-quarantine:instance-id", "ec2-quarantine:incident"] {
        assert_eq!(copy.tags.get(tag), original.tags.get(tag), "{tag}");
    }
    copies[0].clone()
}

/// Issue 12: `CopySnapshot` answers `ResourceLimitExceeded` past 20 concurrent copies per
/// destination region. The copy is waited out, not failed, and the next sweep makes it.
#[tokio::test]
async fn a_copy_refused_for_the_concurrent_copy_limit_is_deferred_and_the_sweep_makes_it() {
    // GIVEN a contained instance's evidence, in an account of its own, and the copy limit reached
    let (scenario, snapshots) =
        contained_in(Scenario::build_in(account_of_its_own().await, Options::default()).await)
            .await;
    let key = kms_key();
    let vars = [("SNAPSHOT_KMS_KEY_ID", key.as_str())];
    let faults = Faults::default();
    faults.deny_next("CopySnapshot", "ResourceLimitExceeded", 2);
    let log = CallLog::default();
    let sdk = with_faults(&scenario.account.sdk, &faults);
    let at_the_limit = Deps {
        clients: recorded_clients(&sdk, &log),
        config: scenario.config(&vars),
        accounts: crate::support::accounts(&sdk, &log),
    };
    let ids: Vec<&str> = snapshots.iter().map(String::as_str).collect();

    // WHEN the set's completion event arrives
    let report = handle(created_event(&ids, "succeeded", ""), "limit", &at_the_limit)
        .await
        .unwrap_or_else(|e| panic!("a deferred copy does not fail the invocation: {e}"));

    // THEN no copy is made, and the report says it is deferred, with the AWS code
    assert_eq!(faults.injected("CopySnapshot"), 2);
    assert_eq!(report.outcome, Outcome::Evidence, "{}", report.to_json());
    for source in &snapshots {
        let entry = evidence_of(&report, source);
        assert_eq!(
            entry.action,
            EvidenceAction::CopyDeferred,
            "{}",
            entry.detail
        );
        assert_eq!(
            entry.detail,
            "copy deferred: the region's concurrent copy limit is reached; the sweep retries it"
        );
        let error = entry.error.as_ref().expect("the AWS error is kept");
        assert_eq!(
            (error.operation, error.code.as_deref()),
            ("CopySnapshot", Some("ResourceLimitExceeded"))
        );
        assert_eq!(entry.instance_id.as_ref(), Some(&scenario.instance_id));
        assert_eq!(
            copies_of(&scenario.account, source).await,
            Vec::<String>::new()
        );
    }

    // WHEN the sweep runs, the limit cleared
    let (sweeping, log) = deps(&scenario, &vars);
    let report = handle(json!({"action": "sweep"}), &unique("sweep"), &sweeping)
        .await
        .unwrap_or_else(|e| panic!("the sweep succeeds: {e}"));

    // THEN it makes each copy, encrypted with the key and tagged as the copy of its source
    assert_eq!(log.count("CopySnapshot"), 2);
    for source in &snapshots {
        let copy = assert_one_encrypted_copy(&scenario.account, source, &key).await;
        let entry = evidence_of(&report, source);
        assert_eq!(
            entry.action,
            EvidenceAction::CopyStarted,
            "{}",
            entry.detail
        );
        assert_eq!(entry.copy_id.as_ref(), Some(&copy));
    }

    // AND a sweep with nothing left to copy starts nothing
    let (sweeping, log) = deps(&scenario, &vars);
    let report = handle(json!({"action": "sweep"}), &unique("sweep"), &sweeping)
        .await
        .unwrap_or_else(|e| panic!("the sweep succeeds: {e}"));
    assert_eq!(log.count("CopySnapshot"), 0);
    assert!(report.evidence.is_empty(), "{}", report.to_json());
    for source in &snapshots {
        assert_one_encrypted_copy(&scenario.account, source, &key).await;
    }
}
