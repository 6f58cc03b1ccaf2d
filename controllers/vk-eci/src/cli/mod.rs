pub mod crd;
pub mod run;
pub mod sim;
pub mod sim_ctl;

/// Parses a secret flag or variable into a [`eci_client::Secret`], so that `Debug` of the
/// arguments never shows it.
pub fn secret(text: &str) -> Result<eci_client::Secret, std::convert::Infallible> {
    Ok(eci_client::Secret::new(text))
}

/// Logs to stderr; `RUST_LOG` filters (default `info`), `VK_ECI_LOG_FORMAT=json` for JSON lines.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("VK_ECI_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _interrupted = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _interrupted = interrupt.await;
    }
}
