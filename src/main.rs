//! The Lambda entry: logging, configuration, clients, then the runtime loop.

use ec2_quarantine::accounts::Accounts;
use ec2_quarantine::aws::{config_loader, Clients};
use ec2_quarantine::config::Config;
use ec2_quarantine::handler::{function_handler, Deps};
use lambda_runtime::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config =
        Config::from_env().inspect_err(|e| tracing::error!(error = %e, "bad configuration"))?;
    let sdk = config_loader().load().await;
    let deps = Deps {
        clients: Clients::new(&sdk),
        config,
        accounts: Accounts::new(sdk.clone(), Clients::new),
    };
    lambda_runtime::run(service_fn(|event| function_handler(event, &deps))).await
}
