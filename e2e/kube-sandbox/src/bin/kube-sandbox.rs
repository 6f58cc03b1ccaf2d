//! `kube-sandbox`: the local Kubernetes API sandbox as a process, and a client for the fault
//! endpoints of a running one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kube_sandbox::{Fault, FaultSpec};

#[derive(Parser)]
#[command(
    name = "kube-sandbox",
    about = "An in-memory Kubernetes API server for local tests and demos",
    args_conflicts_with_subcommands = true
)]
struct Args {
    /// Address to serve the API on (plain HTTP; loopback only).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write a kubeconfig for kubectl and kube-rs.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// A fault to inject from the start, as JSON in the shape `POST /_sandbox/faults` takes
    /// (repeatable).
    #[arg(long = "fault", value_name = "JSON", value_parser = parse_fault)]
    faults: Vec<Fault>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Inject, list and remove API faults of a running sandbox.
    Faults {
        /// The sandbox's URL.
        #[arg(
            long,
            env = "KUBE_SANDBOX_URL",
            default_value = "http://127.0.0.1:6443"
        )]
        server: String,
        #[command(subcommand)]
        action: FaultsAction,
    },
}

#[derive(Subcommand)]
enum FaultsAction {
    /// Inject a fault; prints its id.
    Add(FaultSpec),
    /// Every injected fault with how many requests it hit, as JSON.
    List,
    /// Remove every fault.
    Clear,
    /// Remove one fault.
    Remove { id: u64 },
}

fn parse_fault(json: &str) -> Result<Fault, String> {
    let spec: FaultSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Fault::try_from(spec).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match args.command {
        Some(Command::Faults { server, action }) => match drive_faults(&server, action).await {
            Ok(output) => {
                if !output.is_empty() {
                    println!("{output}");
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("kube-sandbox: {error}");
                ExitCode::FAILURE
            }
        },
        None => serve(args).await,
    }
}

async fn serve(args: Args) -> ExitCode {
    let sandbox = kube_sandbox::Sandbox::new();
    for fault in args.faults {
        sandbox.faults().inject(fault);
    }
    let running = match sandbox.spawn(args.listen).await {
        Ok(running) => running,
        Err(error) => {
            eprintln!("kube-sandbox: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.kubeconfig
        && let Err(error) = std::fs::write(path, running.kubeconfig())
    {
        eprintln!("kube-sandbox: cannot write {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    tracing::info!(url = %running.url(), "kube-sandbox serving");
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _interrupted = tokio::signal::ctrl_c().await;
        }
    }
    ExitCode::SUCCESS
}

/// Sends one fault request; answers what to print.
async fn drive_faults(server: &str, action: FaultsAction) -> Result<String, String> {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let faults = format!("{}/_sandbox/faults", server.trim_end_matches('/'));
    let request = match &action {
        FaultsAction::Add(spec) => client
            .post(&faults)
            .header("content-type", "application/json")
            .body(serde_json::to_string(spec).map_err(|e| e.to_string())?),
        FaultsAction::List => client.get(&faults),
        FaultsAction::Clear => client.delete(&faults),
        FaultsAction::Remove { id } => client.delete(format!("{faults}/{id}")),
    };
    let response = request
        .send()
        .await
        .map_err(|e| format!("cannot reach {server}: {e}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("cannot read the answer of {server}: {e}"))?;
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if !status.is_success() {
        let message = body["message"].as_str().unwrap_or(&text);
        return Err(format!("{server} answered {status}: {message}"));
    }
    Ok(match action {
        FaultsAction::Add(_) => body["id"].to_string(),
        FaultsAction::List => serde_json::to_string_pretty(&body["faults"]).unwrap_or(text),
        FaultsAction::Clear | FaultsAction::Remove { .. } => String::new(),
    })
}
