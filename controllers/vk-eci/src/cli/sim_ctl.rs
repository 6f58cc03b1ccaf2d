//! `vk-eci sim-ctl`: a command-line front for the simulator's admin API.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use eci_sim::{
    FaultConfig, FaultRequest, MillisRange, SpotReleaseRequest, StockView, TimingConfig,
};
use eci_types::wire::Tag;

#[derive(Args, Debug)]
pub struct SimCtlArgs {
    /// The simulator's address.
    #[arg(long, env = "ECI_ENDPOINT", default_value = "http://127.0.0.1:18080")]
    endpoint: String,
    #[command(subcommand)]
    command: SimCtlCommand,
}

#[derive(Subcommand, Debug)]
enum SimCtlCommand {
    /// Announce spot releases: `SpotToBeReleased` now, `Expired` after the lead time.
    SpotRelease {
        /// Container group ids (comma-separated).
        #[arg(long, value_delimiter = ',', conflicts_with = "fraction")]
        ids: Vec<String>,
        /// Or: this fraction (0–1) of the running spot fleet.
        #[arg(long)]
        fraction: Option<f64>,
        /// Only groups carrying this tag (`key=value`); repeatable.
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<Tag>,
        /// Seconds between notice and release (default: the simulator's, 180).
        #[arg(long)]
        lead_seconds: Option<f64>,
    },
    /// Set a zone's remaining stock (optionally of one spec).
    Stock {
        #[arg(long)]
        zone: String,
        #[arg(long)]
        spec: Option<String>,
        /// Remaining instances; omit with --unlimited.
        #[arg(long, required_unless_present = "unlimited")]
        count: Option<u64>,
        #[arg(long)]
        unlimited: bool,
    },
    /// How long instances created from now on take to schedule and start (without ranges:
    /// real ECI's 1–4 s and 4–20 s).
    Timing {
        /// `MIN-MAX` milliseconds from create to scheduled.
        #[arg(long, value_parser = parse_range)]
        schedule_ms: Option<MillisRange>,
        /// `MIN-MAX` milliseconds from scheduled to running.
        #[arg(long, value_parser = parse_range)]
        start_ms: Option<MillisRange>,
    },
    /// Inject faults into one action (or all), or clear them.
    Faults {
        /// Action name, or `*` for all.
        #[arg(long, default_value = "*")]
        action: String,
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        #[arg(long, default_value_t = 0.0)]
        throttle_rate: f64,
        #[arg(long, default_value_t = 0.0)]
        timeout_rate: f64,
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        #[arg(long, default_value_t = 0.0)]
        lost_response_rate: f64,
        /// Extra latency, `MIN-MAX` milliseconds.
        #[arg(long, value_parser = parse_range)]
        latency_ms: Option<MillisRange>,
        /// Remove every injected fault instead.
        #[arg(long)]
        clear: bool,
    },
    /// Calls per action, throttled and failed calls, groups per status, stock.
    Stats,
    /// Every container group, briefly.
    Groups,
    /// Make groups at once, as an earlier fleet left them: FILE holds a JSON array of
    /// CreateContainerGroup parameters; no signatures, throttling or faults apply.
    CreateGroups {
        #[arg(long)]
        file: std::path::PathBuf,
    },
}

fn parse_tag(text: &str) -> Result<Tag, String> {
    let (key, value) = text.split_once('=').ok_or("expected key=value")?;
    Ok(Tag::new(key, value))
}

fn parse_range(text: &str) -> Result<MillisRange, String> {
    let (min, max) = text.split_once('-').unwrap_or((text, text));
    let parse = |s: &str| s.trim().parse::<u64>().map_err(|e| format!("`{s}`: {e}"));
    Ok(MillisRange {
        min: parse(min)?,
        max: parse(max)?,
    })
}

pub async fn run(args: SimCtlArgs) -> anyhow::Result<()> {
    eci_client::install_crypto_provider();
    let client = reqwest::Client::new();
    let base = args.endpoint.trim_end_matches('/');
    let (method, path, body) = match args.command {
        SimCtlCommand::SpotRelease {
            ids,
            fraction,
            tags,
            lead_seconds,
        } => (
            reqwest::Method::POST,
            "spot-release",
            Some(serde_json::to_string(&SpotReleaseRequest {
                container_group_ids: ids,
                fraction,
                tags,
                lead_seconds,
            })?),
        ),
        SimCtlCommand::Stock {
            zone,
            spec,
            count,
            unlimited,
        } => (
            reqwest::Method::PUT,
            "stock",
            Some(serde_json::to_string(&StockView {
                zone,
                spec,
                count: if unlimited { None } else { count },
            })?),
        ),
        SimCtlCommand::Timing {
            schedule_ms,
            start_ms,
        } => {
            let real = TimingConfig::default();
            (
                reqwest::Method::PUT,
                "timing",
                Some(serde_json::to_string(&TimingConfig {
                    schedule_ms: schedule_ms.unwrap_or(real.schedule_ms),
                    start_ms: start_ms.unwrap_or(real.start_ms),
                    ..real
                })?),
            )
        }
        SimCtlCommand::Faults { clear: true, .. } => (reqwest::Method::DELETE, "faults", None),
        SimCtlCommand::Faults {
            action,
            error_rate,
            throttle_rate,
            timeout_rate,
            timeout_ms,
            lost_response_rate,
            latency_ms,
            clear: false,
        } => (
            reqwest::Method::PUT,
            "faults",
            Some(serde_json::to_string(&FaultRequest {
                action: Some(action),
                fault: FaultConfig {
                    error_rate,
                    throttle_rate,
                    latency_ms,
                    timeout_rate,
                    timeout_ms,
                    lost_response_rate,
                },
            })?),
        ),
        SimCtlCommand::Stats => (reqwest::Method::GET, "stats", None),
        SimCtlCommand::Groups => (reqwest::Method::GET, "groups", None),
        SimCtlCommand::CreateGroups { file } => (
            reqwest::Method::POST,
            "groups",
            Some(
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?,
            ),
        ),
    };
    let url = format!("{base}/_sim/{path}");
    let mut request = client.request(method, &url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the simulator at {base}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .context("cannot read the simulator's answer")?;
    if !status.is_success() {
        anyhow::bail!("simulator answered {status}: {text}");
    }
    let pretty = serde_json::from_str::<serde_json::Value>(&text)
        .and_then(|value| serde_json::to_string_pretty(&value))
        .unwrap_or(text);
    println!("{pretty}");
    Ok(())
}
