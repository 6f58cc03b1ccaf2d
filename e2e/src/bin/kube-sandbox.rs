//! `kube-sandbox`: the local Kubernetes API sandbox as a process.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "kube-sandbox",
    about = "An in-memory Kubernetes API server for local tests and demos"
)]
struct Args {
    /// Address to serve the API on (plain HTTP; loopback only).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write a kubeconfig for kubectl and kube-rs.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let running = match kube_sandbox::Sandbox::new().spawn(args.listen).await {
        Ok(running) => running,
        Err(error) => {
            eprintln!("kube-sandbox: cannot listen on {}: {error}", args.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.kubeconfig
        && let Err(error) = std::fs::write(path, running.kubeconfig())
    {
        eprintln!("kube-sandbox: cannot write {}: {error}", path.display());
        return std::process::ExitCode::FAILURE;
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
    std::process::ExitCode::SUCCESS
}
