//! The one deletion of evidence this function can make: an unencrypted evidence snapshot, once
//! its encrypted copy is verified, and only with `DELETE_UNENCRYPTED_SNAPSHOTS=true`.
//!
//! IAM: `ec2:DeleteSnapshot`, granted by the template only when that parameter is `true`, and
//! only on snapshots tagged `ec2-quarantine:instance-id`.
//!
//! It takes a [`Verified`], which only [`super::plan::verify_copy`] makes: there is no way to
//! call it for a snapshot whose copy was not checked just before. The deletion is read back.

use super::plan::Verified;
use super::snapshots;
use crate::aws::{aws_err, AwsError, Clients};

pub async fn delete_source(clients: &Clients, verified: &Verified) -> Result<(), AwsError> {
    let source = verified.source_id();
    clients
        .ec2
        .delete_snapshot()
        .snapshot_id(source)
        .send()
        .await
        .map_err(aws_err("DeleteSnapshot"))?;
    if snapshots::describe(clients, &[source])
        .await?
        .contains_key(source)
    {
        return Err(AwsError::local(
            "DescribeSnapshots",
            format!("{source} is still there after DeleteSnapshot"),
        ));
    }
    Ok(())
}
