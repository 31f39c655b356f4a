//! The Lambda handler: one event in, one report out. It owns the decision of whether the
//! invocation fails: an invalid event fails at once with nothing called, and a containment
//! with any failed step fails after every step has run, carrying the whole report, so that
//! Lambda retries it and, once retries are spent, hands it to the on-failure destination.

use std::time::{Duration, Instant};

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::Value;

use crate::accounts::{self, Accounts, Target};
use crate::aws::Clients;
use crate::config::Config;
use crate::contain;
use crate::event::{ContainRequest, EventError, Request, SweepRequest};
use crate::release;
use crate::report::Report;

/// What every invocation shares, built once at start.
pub struct Deps {
    pub clients: Clients,
    pub config: Config,
    /// The function's own account, and the clients of the member accounts it contains in.
    pub accounts: Accounts,
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("invalid event: {0}")]
    InvalidEvent(#[from] EventError),
    /// The message is the report as JSON, so the failure destination receives all of it.
    #[error("{}", .0.to_json())]
    ContainmentIncomplete(Box<Report>),
    /// A release that did not restore everything, or was refused for an instance (never
    /// contained, already released); the message is the report as JSON.
    #[error("{}", .0.to_json())]
    ReleaseIncomplete(Box<Report>),
    /// An evidence snapshot or its encrypted copy failed, or a step on it did: the message is
    /// the report as JSON.
    #[error("{}", .0.to_json())]
    EvidenceAtRisk(Box<Report>),
    /// A sweep that could not reach or list an account, could not read a record, or whose
    /// containment of an instance it found failed: the message is the report as JSON.
    #[error("{}", .0.to_json())]
    SweepIncomplete(Box<Report>),
}

impl From<HandlerError> for Diagnostic {
    fn from(error: HandlerError) -> Self {
        let error_type = match &error {
            HandlerError::InvalidEvent(_) => "InvalidEvent",
            HandlerError::ContainmentIncomplete(_) => "ContainmentIncomplete",
            HandlerError::ReleaseIncomplete(_) => "ReleaseIncomplete",
            HandlerError::EvidenceAtRisk(_) => "EvidenceAtRisk",
            HandlerError::SweepIncomplete(_) => "SweepIncomplete",
        };
        Diagnostic {
            error_type: error_type.to_owned(),
            error_message: error.to_string(),
        }
    }
}

pub async fn function_handler(
    event: LambdaEvent<Value>,
    deps: &Deps,
) -> Result<Report, HandlerError> {
    deps.accounts
        .learn_own_account(&event.context.invoked_function_arn);
    let deadline = stop_at(event.context.deadline);
    handle_until(event.payload, &event.context.request_id, deps, deadline).await
}

/// When to stop starting work and report what was done: [`contain::DEADLINE_RESERVE`] before
/// Lambda's deadline (milliseconds since the epoch, from the invocation's context; 0 when a
/// runtime gave none, and then there is none).
fn stop_at(deadline_ms: u64) -> Option<Instant> {
    if deadline_ms == 0 {
        return None;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
    Some(Instant::now() + left.saturating_sub(contain::DEADLINE_RESERVE))
}

/// An invocation with no deadline of its own (the tests, the local run).
pub async fn handle(
    payload: Value,
    invocation_id: &str,
    deps: &Deps,
) -> Result<Report, HandlerError> {
    handle_until(payload, invocation_id, deps, None).await
}

pub async fn handle_until(
    payload: Value,
    invocation_id: &str,
    deps: &Deps,
    deadline: Option<Instant>,
) -> Result<Report, HandlerError> {
    let request = Request::from_value(payload, &deps.config.trigger)
        .and_then(|request| release::admit(request, deps.config.mode))
        .inspect_err(|e| {
            tracing::error!(error = %e, "invalid event; nothing was changed");
        })?;
    if let Request::Contain(ContainRequest {
        region: Some(event_region),
        ..
    }) = &request
    {
        if let Some(own) = deps
            .config
            .region
            .as_ref()
            .filter(|own| *own != event_region)
        {
            let error = EventError::OtherRegion {
                event: event_region.clone(),
                own: own.clone(),
            };
            tracing::error!(error = %error, "invalid event; nothing was changed");
            return Err(error.into());
        }
    }
    let report = match request {
        Request::Ignore { reason } => Report::ignored(reason),
        // The copies are made with this function's own permissions, so in its own account
        // only; a member's forwarded snapshot event is told, not acted on.
        Request::Snapshots(event)
            if event.account.as_deref().is_some_and(|account| {
                deps.accounts
                    .own_account()
                    .is_some_and(|own| own.account != account)
            }) =>
        {
            Report::ignored(format!(
                "the snapshots are in account {}: encrypted copies are made in this function's \
                 own account only",
                event.account.as_deref().unwrap_or_default()
            ))
        }
        Request::Snapshots(event) => {
            let report = crate::evidence_copy::handle(&deps.clients, &deps.config, &event)
                .await
                .inspect_err(
                    |e| tracing::error!(error = %e, "invalid event; nothing was changed"),
                )?;
            return finish(report, HandlerError::EvidenceAtRisk);
        }
        Request::Contain(request) => {
            contain_in_account(request, invocation_id, deps, deadline).await?
        }
        Request::Sweep(request) => {
            // As for a containment: the request may ask for a dry run, never lift DRY_RUN.
            let request = SweepRequest {
                dry_run: deps.config.dry_run || request.dry_run,
            };
            let report = crate::sweep::sweep_all(
                &deps.clients,
                &deps.accounts,
                &deps.config,
                &request,
                invocation_id,
            )
            .await;
            return finish(report, HandlerError::SweepIncomplete);
        }
        Request::Release(request) => {
            let report = release::release_all(
                &deps.clients,
                &deps.accounts,
                &deps.config,
                &request,
                invocation_id,
            )
            .await;
            return finish(report, HandlerError::ReleaseIncomplete);
        }
    };
    finish(report, HandlerError::ContainmentIncomplete)
}

/// Logs the report as one line of JSON, so that log queries can read it as fields, and fails the
/// invocation with it (as `failed`) when anything in it failed, so that Lambda retries it.
fn finish(report: Report, failed: fn(Box<Report>) -> HandlerError) -> Result<Report, HandlerError> {
    println!("{}", report.to_json());
    match report.has_failures() {
        true => Err(failed(Box::new(report))),
        false => Ok(report),
    }
}

/// Contains the request's instances in their account: the function's own, or a member's with
/// the member role. Another account without `MEMBER_ROLE_NAME` is refused with no call.
async fn contain_in_account(
    mut request: ContainRequest,
    invocation_id: &str,
    deps: &Deps,
    deadline: Option<Instant>,
) -> Result<Report, HandlerError> {
    let target = deps
        .accounts
        .target(
            request.account.as_deref(),
            deps.config.member_role.as_deref(),
        )
        .inspect_err(|e| tracing::error!(error = %e, "invalid event; nothing was changed"))?;
    // Either one asks for a dry run; an event cannot lift a deployment's DRY_RUN=true.
    let dry_run = deps.config.dry_run || request.dry_run;
    let mut report = match target {
        Target::Own(account) => {
            request.account = account;
            run(
                &deps.clients,
                &deps.config,
                &request,
                invocation_id,
                dry_run,
                deadline,
            )
            .await
        }
        Target::Member(member) => {
            let started = std::time::Instant::now();
            match deps.accounts.clients_for(&member, &deps.clients).await {
                Ok(clients) => {
                    let config = accounts::config_in(&deps.config, &member.account);
                    run(
                        &clients,
                        &config,
                        &request,
                        invocation_id,
                        dry_run,
                        deadline,
                    )
                    .await
                }
                Err(error) => {
                    tracing::error!(error = %error, "the member role could not be assumed");
                    accounts::not_reached(&request, &error, started.elapsed().as_millis() as u64)
                }
            }
        }
    };
    report.account = request.account;
    Ok(report)
}

async fn run(
    clients: &Clients,
    config: &Config,
    request: &ContainRequest,
    invocation_id: &str,
    dry_run: bool,
    deadline: Option<Instant>,
) -> Report {
    match dry_run {
        true => contain::dry_run::plan_all(clients, config, request, invocation_id).await,
        false => contain::contain_all(clients, config, request, invocation_id, deadline).await,
    }
}
