//! The decisions, pure: whether a snapshot is this function's evidence, whether it needs an
//! encrypted copy, and whether a copy is proven good enough for its unencrypted source to go.
//! [`Verified`] can only be made by [`verify_copy`], and deleting a source takes one.

use std::collections::BTreeMap;

use super::key::KmsKeyRef;
use crate::contain::tags;

/// On an encrypted copy: the id of the evidence snapshot it copies. Written only by the
/// function, as the copy is created (`TagSpecifications` of `CopySnapshot`).
pub const COPY_OF: &str = "ec2-quarantine:encrypted-copy-of";

/// A snapshot as EC2 describes it, with what the decisions need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotFacts {
    pub id: String,
    /// `pending`, `completed`, `error`, ...
    pub state: String,
    pub encrypted: bool,
    /// The key ARN EC2 names, when encrypted.
    pub kms_key_id: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl SnapshotFacts {
    pub fn from_sdk(snapshot: &aws_sdk_ec2::types::Snapshot) -> Option<Self> {
        Some(Self {
            id: snapshot.snapshot_id()?.to_owned(),
            state: snapshot
                .state()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            encrypted: snapshot.encrypted().unwrap_or(false),
            kms_key_id: snapshot.kms_key_id().map(str::to_owned),
            tags: snapshot
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
                .collect(),
        })
    }

    /// Taken by a containment: it carries the instance and the incident it was taken for.
    pub fn is_evidence(&self) -> bool {
        self.instance_id().is_some() && self.tags.contains_key(tags::INCIDENT)
    }

    pub fn instance_id(&self) -> Option<&str> {
        self.tags.get(tags::SNAPSHOT_INSTANCE).map(String::as_str)
    }

    pub fn incident(&self) -> Option<&str> {
        self.tags.get(tags::INCIDENT).map(String::as_str)
    }

    pub fn copy_of(&self) -> Option<&str> {
        self.tags.get(COPY_OF).map(String::as_str)
    }

    fn completed(&self) -> bool {
        self.state == "completed"
    }

    /// The tags its encrypted copy gets: this function's own, which identify the evidence (the
    /// role may write no other key), and the one naming this snapshot as the source.
    pub fn copy_tags(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = self
            .tags
            .iter()
            .filter(|(k, _)| k.starts_with("ec2-quarantine:") && k.as_str() != COPY_OF)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.insert(COPY_OF.to_owned(), self.id.clone());
        out
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyPlan {
    NotEvidence,
    AlreadyEncrypted,
    /// Not copyable yet (`pending`) or never (`error`).
    NotCompleted(String),
    Copy,
}

pub fn plan_copy(source: &SnapshotFacts) -> CopyPlan {
    if !source.is_evidence() || source.copy_of().is_some() {
        CopyPlan::NotEvidence
    } else if source.encrypted {
        CopyPlan::AlreadyEncrypted
    } else if !source.completed() {
        CopyPlan::NotCompleted(source.state.clone())
    } else {
        CopyPlan::Copy
    }
}

/// Proof that a copy may stand in for its unencrypted source. Only [`verify_copy`] makes one.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    source_id: String,
    copy_id: String,
}

impl Verified {
    pub fn source_id(&self) -> &str {
        &self.source_id
    }

    pub fn copy_id(&self) -> &str {
        &self.copy_id
    }
}

/// Whether `copy` proves to be a complete encrypted copy of `source` with `key`; otherwise why
/// not. Every condition is needed before a source may be deleted: it is evidence and still
/// unencrypted and complete, and the copy is complete, encrypted with this key, tagged as the
/// copy of exactly this source, and names the same instance and incident.
pub fn verify_copy(
    source: &SnapshotFacts,
    copy: &SnapshotFacts,
    key: &KmsKeyRef,
) -> Result<Verified, String> {
    let (s, c) = (&source.id, &copy.id);
    if !source.is_evidence() {
        return Err(format!(
            "{s} carries no {} and {} tag: not evidence of this function",
            tags::SNAPSHOT_INSTANCE,
            tags::INCIDENT
        ));
    }
    if source.encrypted {
        return Err(format!(
            "{s} is encrypted itself: there is nothing to replace"
        ));
    }
    if !source.completed() {
        return Err(format!("{s} is {}, not completed", source.state));
    }
    match copy.copy_of() {
        Some(of) if of == s => {}
        Some(of) => return Err(format!("{c} is tagged {COPY_OF}={of}, not {s}")),
        None => {
            return Err(format!(
                "{c} has no {COPY_OF} tag: it is not a copy this function made"
            ))
        }
    }
    for key_name in [tags::SNAPSHOT_INSTANCE, tags::INCIDENT] {
        if copy.tags.get(key_name) != source.tags.get(key_name) {
            return Err(format!(
                "{c} does not carry {s}'s {key_name} tag ({:?} against {:?})",
                copy.tags.get(key_name),
                source.tags.get(key_name)
            ));
        }
    }
    if !copy.completed() {
        return Err(format!("{c} is {}, not completed", copy.state));
    }
    if !copy.encrypted {
        return Err(format!("{c} is not encrypted"));
    }
    let Some(described) = copy.kms_key_id.as_deref() else {
        return Err(format!("{c} names no KMS key"));
    };
    match key.names(described) {
        Some(true) => Ok(Verified {
            source_id: s.clone(),
            copy_id: c.clone(),
        }),
        Some(false) => Err(format!(
            "{c} is encrypted with {described}, not with SNAPSHOT_KMS_KEY_ID {key}"
        )),
        None => Err(format!(
            "{c} is encrypted with {described}, which cannot be matched with the alias {key} \
             without KMS"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn key() -> KmsKeyRef {
        KmsKeyRef::KeyArn(KEY.into())
    }

    fn source() -> SnapshotFacts {
        SnapshotFacts {
            id: "snap-0123456789abcdef0".into(),
            state: "completed".into(),
            encrypted: false,
            kms_key_id: None,
            tags: BTreeMap::from([
                (tags::SNAPSHOT_INSTANCE.into(), "i-0123456789abcdef0".into()),
                (tags::INCIDENT.into(), "inc-1".into()),
                ("Name".into(), "ec2-quarantine i-0123456789abcdef0".into()),
            ]),
        }
    }

    fn copy() -> SnapshotFacts {
        SnapshotFacts {
            id: "snap-0aaaaaaaaaaaaaaaa".into(),
            state: "completed".into(),
            encrypted: true,
            kms_key_id: Some(KEY.into()),
            tags: source().copy_tags(),
        }
    }

    #[test]
    fn the_copy_carries_the_functions_own_tags_of_its_source_and_names_it() {
        assert_eq!(
            copy().tags,
            BTreeMap::from([
                (tags::SNAPSHOT_INSTANCE.into(), "i-0123456789abcdef0".into()),
                (tags::INCIDENT.into(), "inc-1".into()),
                (COPY_OF.into(), "snap-0123456789abcdef0".into()),
            ])
        );
    }

    #[test]
    fn only_completed_unencrypted_evidence_is_copied() {
        assert_eq!(plan_copy(&source()), CopyPlan::Copy);
        let mut foreign = source();
        foreign.tags.remove(tags::INCIDENT);
        assert_eq!(plan_copy(&foreign), CopyPlan::NotEvidence);
        // A copy is never copied again, even if the event names it.
        assert_eq!(plan_copy(&copy()), CopyPlan::NotEvidence);
        let mut encrypted = source();
        encrypted.encrypted = true;
        assert_eq!(plan_copy(&encrypted), CopyPlan::AlreadyEncrypted);
        let mut pending = source();
        pending.state = "pending".into();
        assert_eq!(
            plan_copy(&pending),
            CopyPlan::NotCompleted("pending".into())
        );
    }

    #[test]
    fn a_complete_encrypted_copy_of_exactly_this_source_with_this_key_is_verified() {
        let verified = verify_copy(&source(), &copy(), &key()).unwrap();
        assert_eq!(verified.source_id(), "snap-0123456789abcdef0");
        assert_eq!(verified.copy_id(), "snap-0aaaaaaaaaaaaaaaa");
        let by_id = KmsKeyRef::KeyId("1234abcd-12ab-34cd-56ef-1234567890ab".into());
        assert!(verify_copy(&source(), &copy(), &by_id).is_ok());
    }

    #[test]
    fn anything_short_of_that_keeps_the_source_and_says_why() {
        type Change = fn(&mut SnapshotFacts, &mut SnapshotFacts);
        let cases: Vec<(Change, &str)> = vec![
            (
                |s, _| {
                    s.tags.remove(tags::SNAPSHOT_INSTANCE);
                },
                "not evidence",
            ),
            (|s, _| s.encrypted = true, "encrypted itself"),
            (|s, _| s.state = "error".into(), "is error, not completed"),
            (
                |_, c| c.state = "pending".into(),
                "is pending, not completed",
            ),
            (|_, c| c.encrypted = false, "is not encrypted"),
            (|_, c| c.kms_key_id = None, "names no KMS key"),
            (
                |_, c| c.kms_key_id = Some(KEY.replace("1234abcd-", "9999abcd-")),
                "not with SNAPSHOT_KMS_KEY_ID",
            ),
            (
                |_, c| {
                    c.tags.remove(COPY_OF);
                },
                "not a copy this function made",
            ),
            (
                |_, c| {
                    c.tags
                        .insert(COPY_OF.into(), "snap-0bbbbbbbbbbbbbbbb".into());
                },
                "not snap-0123456789abcdef0",
            ),
            (
                |_, c| {
                    c.tags.insert(tags::INCIDENT.into(), "inc-2".into());
                },
                "ec2-quarantine:incident tag",
            ),
        ];
        for (change, expected) in cases {
            let (mut s, mut c) = (source(), copy());
            change(&mut s, &mut c);
            let reason = verify_copy(&s, &c, &key()).unwrap_err();
            assert!(
                reason.contains(expected),
                "{reason:?} should say {expected:?}"
            );
        }
        let reason =
            verify_copy(&source(), &copy(), &KmsKeyRef::Alias("alias/x".into())).unwrap_err();
        assert!(reason.contains("alias"), "{reason}");
    }
}
