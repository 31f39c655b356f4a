//! The list behind each role's deny statement ([`crate::contain::credentials`]): which
//! instances' delivered credentials are denied on that role, one item per role in the incident
//! table (key `role#<role ARN>`), with a version that every change moves on.
//!
//! IAM has no conditional write, so the policy document cannot be the source of truth when
//! several invocations add instances to one role at once: each would read the document, add its
//! ARN and write, and the last write would drop the others'. The list here changes atomically
//! (`ADD`/`DELETE` on a string set), and reads of it are strongly consistent, unlike IAM's. A
//! writer adds its ARN, writes the whole list into the policy, then reads the version: if it
//! moved on, another writer changed the list meanwhile, and its own write may have landed after
//! the other's, so it writes the newer list again. Whichever write lands last, its writer then
//! sees its own version or writes once more, so the policy ends holding every ARN.
//!
//! IAM: `dynamodb:UpdateItem` and `dynamodb:GetItem` on the table, already the function's.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use crate::aws::{aws_err, AwsError};
use crate::incident::KEY;

const INSTANCE_ARNS: &str = "instance_arns";
const VERSION: &str = "version";

/// The list as one change left it, or as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub version: u64,
    pub instance_arns: BTreeSet<String>,
}

#[derive(Clone, Copy)]
enum Change {
    Add,
    Remove,
}

#[derive(Clone, Debug)]
pub struct RevocationLedger {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// The list sits in front of the deny on the credential cut's path, so, like the claim, it
    /// gets a short budget: past it, the step writes the policy from IAM's document alone.
    budget: Duration,
    turns: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

fn role_key(role_arn: &str) -> AttributeValue {
    AttributeValue::S(format!("role#{role_arn}"))
}

fn entry_of(item: Option<&HashMap<String, AttributeValue>>) -> Entry {
    let Some(item) = item else {
        return Entry::default();
    };
    Entry {
        version: item
            .get(VERSION)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or_default(),
        instance_arns: item
            .get(INSTANCE_ARNS)
            .and_then(|v| v.as_ss().ok())
            .map(|arns| arns.iter().cloned().collect())
            .unwrap_or_default(),
    }
}

impl RevocationLedger {
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        budget: Duration,
    ) -> Self {
        Self {
            client,
            table: table.into(),
            budget,
            turns: Arc::default(),
        }
    }

    /// The writers of one invocation (one ledger) take turns per role, so that the instances of
    /// one event that share a role do not all write its policy at once and again when they see
    /// each other's versions; invocations elsewhere are kept apart by the versions alone.
    pub fn turn(&self, role_arn: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        turns.entry(role_arn.to_owned()).or_default().clone()
    }

    fn timeouts(&self) -> aws_sdk_dynamodb::config::Builder {
        aws_sdk_dynamodb::config::Builder::default().timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(self.budget / 3)
                .operation_timeout(self.budget)
                .build(),
        )
    }

    /// Adds `instance_arn` to the role's list; returns the list with it.
    pub async fn add(&self, role_arn: &str, instance_arn: &str) -> Result<Entry, AwsError> {
        self.change(role_arn, instance_arn, Change::Add).await
    }

    /// Takes `instance_arn` off the role's list (a release); returns the list without it.
    pub async fn remove(&self, role_arn: &str, instance_arn: &str) -> Result<Entry, AwsError> {
        self.change(role_arn, instance_arn, Change::Remove).await
    }

    async fn change(
        &self,
        role_arn: &str,
        instance_arn: &str,
        change: Change,
    ) -> Result<Entry, AwsError> {
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, role_key(role_arn))
            .update_expression(match change {
                Change::Add => "ADD #arns :arn, #version :one",
                Change::Remove => "DELETE #arns :arn ADD #version :one",
            })
            .expression_attribute_names("#arns", INSTANCE_ARNS)
            .expression_attribute_names("#version", VERSION)
            .expression_attribute_values(":arn", AttributeValue::Ss(vec![instance_arn.to_owned()]))
            .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
            .return_values(ReturnValue::AllNew)
            .customize()
            .config_override(self.timeouts())
            .send()
            .await
            .map_err(aws_err("UpdateItem"))?;
        Ok(entry_of(output.attributes()))
    }

    /// The list as it stands, read consistently.
    pub async fn current(&self, role_arn: &str) -> Result<Entry, AwsError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, role_key(role_arn))
            .consistent_read(true)
            .customize()
            .config_override(self.timeouts())
            .send()
            .await
            .map_err(aws_err("GetItem"))?;
        Ok(entry_of(output.item()))
    }
}
