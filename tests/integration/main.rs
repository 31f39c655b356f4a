//! End-to-end tests against moto's server, which `scripts/test.sh` starts. They compile into
//! one binary (one link of the AWS SDK instead of one per file). Every assertion about the
//! account reads it back through the SDK, never through the function's own report.

mod support;

/// A tagged instance, contained by the Lambda handler, with every step checked in the account.
mod containment;
/// The deny on the original role for the credentials already issued, read back as documents.
mod credentials;
/// The instance profile: replaced, associated, named by ARN.
mod identity;
/// Events that must not lead to a single AWS call, and instances that must not be changed.
mod input;
/// The isolation group: per VPC, created once, stripped, raced for.
mod network;
/// The files in events/, each parsed to the decision events/README.md promises (no emulator).
mod sample_events;
