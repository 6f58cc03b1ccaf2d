//! `vk-eci sim`: the ECI simulator as a standalone server.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use eci_sim::{CredentialConfig, SimConfig, Simulator};
use tracing::{info, warn};

#[derive(Args, Debug)]
pub struct SimArgs {
    /// Address to serve the ECI protocol and the `/_sim/` admin API on.
    #[arg(long, env = "ECI_SIM_LISTEN", default_value = "127.0.0.1:18080")]
    listen: SocketAddr,
    /// YAML configuration (region, vSwitches, stock, timing, throttling, faults, seed).
    #[arg(long, env = "ECI_SIM_CONFIG")]
    config: Option<PathBuf>,
    /// Seed for every random choice; overrides the file.
    #[arg(long)]
    seed: Option<u64>,
    /// Sub-second scheduling and start times (for tests and demos) instead of ECI-like ones.
    #[arg(long)]
    fast: bool,
    /// AccessKey id accepted besides those in the configuration file.
    #[arg(long, env = "ECI_ACCESS_KEY")]
    access_key_id: Option<String>,
    /// Its secret.
    #[arg(long, env = "ECI_SECRET_KEY", hide_env_values = true, value_parser = super::secret)]
    access_key_secret: Option<eci_client::Secret>,
}

pub fn load_config(args: &SimArgs) -> anyhow::Result<SimConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read simulator config {}", path.display()))?;
            SimConfig::from_yaml(&text)
                .map_err(|e| anyhow::anyhow!("invalid simulator config {}: {e}", path.display()))?
        }
        None => SimConfig::default(),
    };
    if args.fast {
        config.timing = eci_sim::config::TimingConfig::fast();
        config.telemetry = eci_sim::config::TelemetryConfig::fast();
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    Ok(config)
}

pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    let credentials = match (&args.access_key_id, &args.access_key_secret) {
        (Some(id), Some(secret)) => vec![CredentialConfig {
            access_key_id: id.clone(),
            access_key_secret: secret.expose().to_string(),
            security_token: None,
        }],
        (None, None) => Vec::new(),
        _ => anyhow::bail!("ECI_ACCESS_KEY and ECI_SECRET_KEY must be given together"),
    };
    if credentials.is_empty() && config.credentials.is_empty() {
        warn!(
            access_key_id = eci_sim::DEFAULT_ACCESS_KEY_ID,
            "no AccessKey configured: the simulator accepts its built-in default pair (see README)"
        );
    }
    let region = config.region.clone();
    let simulator = Simulator::new(config, credentials)
        .map_err(|e| anyhow::anyhow!("invalid simulator config: {e}"))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    info!(listen = %args.listen, %region, "ECI simulator serving; admin API under /_sim/");
    simulator
        .serve(listener, super::shutdown_signal())
        .await
        .context("simulator server failed")?;
    info!("ECI simulator stopped");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn debug_of_the_arguments_redacts_the_secret() {
        let parsed = Command::try_parse_from([
            "vk-eci",
            "--access-key-id",
            "sim-id",
            "--access-key-secret",
            "hunter2-secret",
        ])
        .unwrap();
        let debug = format!("{:?}", parsed.sim);
        assert!(
            debug.contains("sim-id") && !debug.contains("hunter2-secret"),
            "{debug}"
        );
    }
}
