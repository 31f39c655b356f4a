//! ec2-quarantine: contains a compromised EC2 instance when a quarantine tag is set on it.
//!
//! `event` decides what an inbound event asks for, `contain` does it (`release` undoes it, in
//! the release function), `report` says what was done; `config` and `aws` are read and built
//! once at start, `accounts` reaches the member accounts an event may name, and `handler` ties
//! them together for the Lambda runtime; `sweep` finds what a lost tag event left uncontained.

pub mod accounts;
pub mod aws;
pub mod config;
pub mod consistency;
pub mod contain;
pub mod event;
pub mod evidence_copy;
pub mod handler;
pub mod incident;
pub mod release;
pub mod report;
pub mod revocations;
pub mod sweep;
