//! End-to-end tests against moto's server, which `scripts/test.sh` starts. They compile into
//! one binary (one link of the AWS SDK instead of one per file). Every assertion about the
//! account reads it back through the SDK, never through the function's own report.

mod support;

/// Many accounts: a member's instance contained there with the member role, from the security
/// account; an account it cannot reach fails clearly; other accounts refused when not set up.
mod accounts;
/// The catalogue of malformed and irrelevant events in tests/bad-events/, each with zero calls.
mod bad_input;
/// AWS's eventual consistency waited out; an interface stuck on the interim group closed there.
mod consistency;
/// A tagged instance, contained by the Lambda handler, with every step checked in the account.
mod containment;
/// The deny on the original role for the credentials already issued, read back as documents.
mod credentials;
/// Dry runs: every read, every change listed, not one mutating call.
mod dry_run;
/// Evidence snapshots copied encrypted on their completion events, and the opt-in deletion.
mod encrypted_evidence;
/// Faults the emulator cannot produce, injected under the SDK: throttling, denial, hangs.
mod faults;
/// GuardDuty findings as a trigger: an instance finding contains it, a low one calls nothing.
mod guardduty;
/// The instance profile: replaced, associated, named by ARN.
mod identity;
/// Events that must not lead to a single AWS call, and instances that must not be changed.
mod input;
/// Instance kinds and states: an instance-store root, a stopped instance.
mod instance_kinds;
/// Fifty instances at once: in one event, and as fifty concurrent invocations.
mod load;
/// The isolation group: per VPC, created once, stripped, raced for.
mod network;
/// No deleting call in the code but those named in one allowlist.
mod nothing_lost;
/// The durable incident record: the claim, the original state, convergence of concurrent runs.
mod record;
/// Release: contain, then restore the exact original state from the record; refusals.
mod release;
/// The files in events/, each parsed to the decision events/README.md promises (no emulator).
mod sample_events;
/// The sweep for lost tag events: a tagged instance no event contained is contained; released
/// and contained ones are left alone; member accounts swept, an unreachable one failed alone.
mod sweep;
/// The tags: written beside the last read-backs, corrected when one disagrees.
mod tagging;
