use ec2_quarantine::report::{Status, Step};

use crate::containment::{contain, trigger_event};
use crate::support::scenario::{Options, Scenario};

#[tokio::test]
async fn an_instance_without_a_profile_gets_the_isolation_profile_associated() {
    let s = Scenario::build(Options::default()).await;
    assert_eq!(s.account.profile_of(&s.instance_id).await, None);
    let (result, log) = contain(&s, trigger_event(&[&s.instance_id]), &[]).await;
    let report = result.expect("contained");
    assert_eq!(
        s.account.profile_of(&s.instance_id).await.as_deref(),
        Some(s.isolation_profile.1.as_str())
    );
    assert_eq!(log.count("AssociateIamInstanceProfile"), 1);
    let original = report.instances[0].original.as_ref().unwrap();
    assert_eq!(original.instance_profile_arn, None, "no profile before");
}

#[tokio::test]
async fn the_isolation_profile_may_be_configured_by_arn() {
    let s = Scenario::build(Options {
        profile: true,
        ..Options::default()
    })
    .await;
    let arn = s.isolation_profile.1.clone();
    let (result, log) = contain(
        &s,
        trigger_event(&[&s.instance_id]),
        &[("ISOLATION_INSTANCE_PROFILE", &arn)],
    )
    .await;
    let report = result.expect("contained");
    assert_eq!(s.account.profile_of(&s.instance_id).await, Some(arn));
    assert_eq!(log.count("ReplaceIamInstanceProfileAssociation"), 1);
    let step = report.instances[0]
        .step(Step::ReplaceInstanceProfile)
        .unwrap();
    assert_eq!(step.status, Status::Done);
    assert_eq!(
        report.instances[0]
            .original
            .as_ref()
            .unwrap()
            .instance_profile_arn,
        s.original_profile_arn
    );
}
