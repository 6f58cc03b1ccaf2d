//! `vk-eci`: Alibaba Cloud ECI as a virtual node of a Kubernetes cluster.

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "vk-eci",
    version,
    about = "Alibaba Cloud ECI as a virtual node of any Kubernetes cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: the virtual node, pods as ECI container groups, spot handling.
    Run(Box<cli::run::RunArgs>),
    /// Serve the ECI simulator (the real ECI OpenAPI protocol, locally).
    Sim(cli::sim::SimArgs),
    /// Drive a running simulator's admin API: spot releases, stock, faults, stats.
    SimCtl(cli::sim_ctl::SimCtlArgs),
    /// Print the CustomResourceDefinitions (SpotRotationPolicy, SpotRotation) as YAML.
    Crd(cli::crd::CrdArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli::init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("vk-eci: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => cli::run::run(*args).await,
            Command::Sim(args) => cli::sim::run(args).await,
            Command::SimCtl(args) => cli::sim_ctl::run(args).await,
            Command::Crd(args) => cli::crd::run(args),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vk-eci: {error:#}");
            // Settings that cannot work exit 2, like clap's usage errors: "fix the configuration",
            // told apart from a failure while running.
            if error
                .downcast_ref::<vk_eci_core::settings::SettingError>()
                .is_some()
            {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
