use std::collections::BTreeMap;
use std::path::Path;

use ec2_quarantine::event::MAX_INSTANCES_PER_EVENT;
use ec2_quarantine::handler::{handle, Deps, HandlerError};
use ec2_quarantine::report::Outcome;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::support::scenario::Account;
use crate::support::{config, recorded_clients, CallLog};

#[derive(Deserialize)]
struct Expected {
    /// `invalid`, `ignored`, or `not-json` (refused by the runtime before the handler runs).
    kind: String,
    /// What the error or the ignore reason must say.
    mentions: String,
}

async fn deps(log: &CallLog) -> Deps {
    let account = Account::new().await;
    Deps {
        clients: recorded_clients(&account.sdk, log),
        accounts: crate::support::accounts(&account.sdk, log),
        config: config(&[
            ("ISOLATION_INSTANCE_PROFILE", "isolation"),
            ("AWS_REGION", "us-east-1"),
        ]),
    }
}

/// What the handler makes of `value`: ("invalid" | "ignored" | "contained..", message).
async fn decision(value: Value, deps: &Deps) -> (String, String) {
    match handle(value, "catalogue", deps).await {
        Err(HandlerError::InvalidEvent(e)) => ("invalid".to_owned(), e.to_string()),
        Err(other) => ("failed".to_owned(), other.to_string()),
        Ok(report) if report.outcome == Outcome::Ignored => {
            ("ignored".to_owned(), report.reason.unwrap_or_default())
        }
        Ok(report) => ("acted".to_owned(), report.to_json()),
    }
}

#[tokio::test]
async fn every_event_of_the_bad_input_catalogue_gets_its_own_answer_and_no_aws_call() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-events");
    let expected: BTreeMap<String, Expected> =
        serde_json::from_slice(&std::fs::read(dir.join("_expected.json")).unwrap()).unwrap();
    let log = CallLog::default();
    let deps = deps(&log).await;
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.starts_with('_') {
            continue;
        }
        let want = expected
            .get(&name)
            .unwrap_or_else(|| panic!("tests/bad-events/{name} has no entry in _expected.json"));
        let bytes = std::fs::read(&path).unwrap();
        let (kind, message) = match serde_json::from_slice::<Value>(&bytes) {
            Err(e) => ("not-json".to_owned(), e.to_string()),
            Ok(value) => decision(value, &deps).await,
        };
        assert_eq!(kind, want.kind, "{name}: {message}");
        assert!(
            message.contains(&want.mentions),
            "{name}: {message:?} should mention {:?}",
            want.mentions
        );
        files += 1;
    }
    assert_eq!(files, expected.len(), "every catalogue entry has its file");
    assert!(files >= 20, "the catalogue has {files} events");
    assert_eq!(
        log.calls(),
        Vec::<String>::new(),
        "bad input makes no AWS call"
    );
}

#[tokio::test]
async fn a_huge_event_is_refused_before_any_call() {
    let log = CallLog::default();
    let deps = deps(&log).await;
    let resources: Vec<String> = (0..MAX_INSTANCES_PER_EVENT + 1)
        .map(|n| format!("arn:aws:ec2:us-east-1:123456789012:instance/i-{n:017x}"))
        .collect();
    let event = json!({
        "version": "0", "id": "big", "detail-type": "Tag Change on Resource", "source": "aws.tag",
        "account": "123456789012", "time": "2026-11-23T10:00:00Z", "region": "us-east-1",
        "resources": resources,
        "detail": {"changed-tag-keys": ["Quarantine"], "service": "ec2", "resource-type": "instance",
                   "version": 1, "tags": {"Quarantine": "true"}}
    });
    let (kind, message) = decision(event, &deps).await;
    assert_eq!(kind, "invalid");
    assert!(message.contains("501 instances"), "{message}");
    assert_eq!(log.calls(), Vec::<String>::new());
}
