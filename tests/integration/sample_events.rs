use std::path::Path;

use ec2_quarantine::event::{EventError, Request};

use crate::support::config;

/// The member account of the `member-*` samples.
const MEMBER: &str = "111122223333";

enum Expected {
    Contain(&'static [&'static str]),
    Release(&'static [&'static str]),
    Member(&'static [&'static str]),
    Ignore,
    Invalid,
    /// An EBS completion event for the encrypted copies of evidence.
    Snapshots,
}

/// The ignored GuardDuty findings must say why: one is below the threshold, one is not
/// about an instance.
fn expected_reason(file: &str) -> Option<&'static str> {
    match file {
        "guardduty-instance-low.json" => Some("severity 2 is below the threshold 7"),
        "guardduty-s3-finding.json" => Some("S3Bucket, not an EC2 instance"),
        "guardduty-sample-finding.json" => Some("is a sample finding"),
        _ => None,
    }
}

/// The decision `events/README.md` promises for each sample file, with the parameter defaults.
fn expected(file: &str) -> Expected {
    const ONE: &[&str] = &["i-0123456789abcdef0"];
    match file {
        "tag-quarantine-instance.json"
        | "direct-invocation.json"
        | "direct-invocation-dry-run.json"
        | "guardduty-instance-high.json" => Expected::Contain(ONE),
        // In the member account 111122223333 (the handler decides whether it may act there).
        "member-tag-quarantine-instance.json"
        | "member-guardduty-instance-high.json"
        | "member-direct-invocation.json" => Expected::Member(ONE),
        "tag-quarantine-two-instances.json" => {
            Expected::Contain(&["i-0123456789abcdef0", "i-0fedcba9876543210"])
        }
        "tag-other-key.json"
        | "tag-function-own-tags.json"
        | "tag-quarantine-other-value.json"
        | "tag-quarantine-value-other-case.json"
        | "tag-quarantine-removed.json"
        | "tag-volume.json"
        | "guardduty-instance-low.json"
        | "guardduty-s3-finding.json"
        | "guardduty-sample-finding.json" => Expected::Ignore,
        "release-invocation.json" => Expected::Release(ONE),
        "invalid-unknown-shape.json" => Expected::Invalid,
        "ebs-create-snapshots-succeeded.json"
        | "ebs-create-snapshots-failed.json"
        | "ebs-copy-snapshot-succeeded.json"
        | "ebs-copy-snapshot-failed.json" => Expected::Snapshots,
        other => panic!("events/{other} has no expected decision here: add it"),
    }
}

#[test]
fn every_sample_event_gets_the_decision_its_readme_promises() {
    let trigger = config(&[("ISOLATION_INSTANCE_PROFILE", "isolation")]).trigger;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("events");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let decision = Request::from_slice(&std::fs::read(&path).unwrap(), &trigger);
        match (expected(&name), decision) {
            (Expected::Contain(ids), Ok(Request::Contain(request))) => {
                assert_eq!(request.instance_ids, ids, "{name}");
                assert_eq!(request.dry_run, name.contains("dry-run"), "{name}");
                assert_ne!(request.account.as_deref(), Some(MEMBER), "{name}");
            }
            (Expected::Release(ids), Ok(Request::Release(request))) => {
                assert_eq!(request.instance_ids, ids, "{name}")
            }
            (Expected::Member(ids), Ok(Request::Contain(request))) => {
                assert_eq!(request.instance_ids, ids, "{name}");
                assert_eq!(request.account.as_deref(), Some(MEMBER), "{name}");
            }
            (Expected::Ignore, Ok(Request::Ignore { reason })) => {
                assert!(!reason.is_empty(), "{name}");
                if let Some(why) = expected_reason(&name) {
                    assert!(reason.contains(why), "{name}: {reason}");
                }
            }
            (Expected::Invalid, Err(EventError::UnknownShape)) => {}
            (Expected::Snapshots, Ok(Request::Snapshots(event))) => {
                assert_eq!(event.succeeded, name.ends_with("-succeeded.json"), "{name}");
                assert_eq!(event.region.as_deref(), Some("us-east-1"), "{name}");
            }
            (_, other) => panic!("{name}: unexpected decision {other:?}"),
        }
        seen += 1;
    }
    assert!(
        seen >= 16,
        "expected the sample events in {}",
        dir.display()
    );
}
