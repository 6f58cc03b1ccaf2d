//! `vk-eci run`: the operator. Flags fall back to the environment variables of Alibaba's own
//! virtual node, so an existing deployment's settings carry over unchanged.
//!
//! Where pods run is an explicit choice, never a fallback:
//! - an AccessKey (`ECI_ACCESS_KEY` + `ECI_SECRET_KEY`): Alibaba Cloud (or `ECI_ENDPOINT`);
//! - `--simulator` / `ECI_SIMULATOR=true` without an AccessKey: the ECI simulator at
//!   `ECI_ENDPOINT`, or one started in-process; the Node is marked `vk-eci.io/simulated`;
//! - neither, or both: refused at start (exit code 2), naming both settings. Both is refused
//!   rather than resolved either way: one of them is a mistake, and guessing wrong either runs
//!   production pods nowhere or spends real money on a tryout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use eci_client::{Credentials, EciClientConfig, Secret};
use eci_sim::{RunningSimulator, SimConfig, Simulator};
use tracing::warn;
use vk_eci::runtime::leader::Timing;
use vk_eci::runtime::operator::Operator;
use vk_eci::tls::ServingCert;
use vk_eci::webhook::WebhookServing;
use vk_eci_core::settings::{RawSettings, SettingError, Settings, env};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Name of the virtual Node.
    #[arg(long, env = "VKUBELET_NODE_NAME", default_value = "virtual-kubelet")]
    node_name: String,
    /// Cluster id: tags every container group, so GC only ever touches this cluster's.
    #[arg(long, env = "ALIYUN_CLUSTERID")]
    cluster_id: Option<String>,
    #[arg(long, env = "ECI_REGION")]
    region: Option<String>,
    #[arg(long, env = "ECI_VPC")]
    vpc: Option<String>,
    /// vSwitch ids, comma-separated (up to 10; several zones for multi-zone placement).
    #[arg(long, env = "ECI_VSWITCH")]
    vswitch: Option<String>,
    #[arg(long, env = "ECI_SECURITY_GROUP")]
    security_group: Option<String>,
    #[arg(long, env = "ECI_RESOURCE_GROUP")]
    resource_group: Option<String>,
    #[arg(long, env = "ECI_ACCESS_KEY")]
    access_key_id: Option<String>,
    #[arg(long, env = "ECI_SECRET_KEY", hide_env_values = true, value_parser = super::secret)]
    access_key_secret: Option<Secret>,
    /// STS token, for temporary credentials.
    #[arg(long, env = "ECI_SECURITY_TOKEN", hide_env_values = true, value_parser = super::secret)]
    security_token: Option<Secret>,
    /// ECI OpenAPI endpoint (default `https://eci.<region>.aliyuncs.com`).
    #[arg(long, env = "ECI_ENDPOINT")]
    endpoint: Option<String>,
    /// Simulator mode, instead of an AccessKey: pods run in the ECI simulator at ECI_ENDPOINT,
    /// or one started in-process, never on Alibaba Cloud.
    #[arg(long, env = "ECI_SIMULATOR")]
    simulator: bool,
    #[arg(
        long,
        env = "VKUBELET_TAINT_KEY",
        default_value = "virtual-kubelet.io/provider"
    )]
    taint_key: String,
    #[arg(long, env = "VKUBELET_TAINT_VALUE", default_value = "alibabacloud")]
    taint_value: String,
    /// `NoSchedule`, `PreferNoSchedule`, `NoExecute`, or empty for no taint.
    #[arg(long, env = "VKUBELET_TAINT_EFFECT", default_value = "NoSchedule")]
    taint_effect: String,
    #[arg(long, env = "ECI_QUOTA_CPU", default_value = "1000000")]
    quota_cpu: String,
    #[arg(long, env = "ECI_QUOTA_MEMORY", default_value = "6400Ti")]
    quota_memory: String,
    #[arg(long, env = "ECI_QUOTA_POD", default_value = "10000")]
    quota_pod: String,
    #[arg(long, env = "KUBELET_PORT", default_value_t = 10250)]
    kubelet_port: u16,
    /// The Node's InternalIP (the operator pod's IP).
    #[arg(long, env = "VKUBELET_POD_IP")]
    pod_ip: Option<String>,
    /// Serving certificate of the kubelet API (PEM; reloaded when it changes). Its SANs must
    /// include the pod IP. Without it a self-signed one is generated (with a warning).
    #[arg(long, env = "VK_ECI_KUBELET_CERT", requires = "kubelet_key")]
    kubelet_cert: Option<PathBuf>,
    #[arg(long, env = "VK_ECI_KUBELET_KEY", requires = "kubelet_cert")]
    kubelet_key: Option<PathBuf>,
    /// A CA (PEM certificate and key) that issues the kubelet API's serving certificate at
    /// start, for the pod IP and the node name (the chart's generated CA or a cert-manager
    /// CA). Ignored when --kubelet-cert is given.
    #[arg(long, env = "VK_ECI_KUBELET_CA_CERT", requires = "kubelet_ca_key")]
    kubelet_ca_cert: Option<PathBuf>,
    #[arg(long, env = "VK_ECI_KUBELET_CA_KEY", requires = "kubelet_ca_cert")]
    kubelet_ca_key: Option<PathBuf>,
    /// Get the kubelet API's serving certificate from the cluster: a CertificateSigningRequest
    /// for signer kubernetes.io/kubelet-serving (CN system:node:<node>, the pod IP and node
    /// name as SANs), renewed at 80 % of its validity. Someone must approve it (kubectl
    /// certificate approve), unless --kubelet-csr-approve.
    #[arg(long, env = "VK_ECI_KUBELET_CSR", conflicts_with_all = ["kubelet_cert", "kubelet_ca_cert"])]
    kubelet_csr: bool,
    /// With --kubelet-csr: approve the request itself (needs the approval right on the
    /// kubelet-serving signer, which lets it approve any node's serving certificate).
    #[arg(long, env = "VK_ECI_KUBELET_CSR_APPROVE", requires = "kubelet_csr")]
    kubelet_csr_approve: bool,
    /// CA bundle that signs the API server's kubelet client certificate
    /// (`--kubelet-client-certificate`); without it only bearer tokens authenticate.
    #[arg(long, env = "VK_ECI_KUBELET_CLIENT_CA")]
    kubelet_client_ca: Option<PathBuf>,
    /// DescribeContainerLog calls a minute shared by every log request (ECI allows 500 per
    /// account: leave room for other tools).
    #[arg(long, env = "VK_ECI_KUBELET_LOG_CALLS_PER_MINUTE", default_value_t = 400,
        value_parser = clap::value_parser!(u32).range(1..=500))]
    kubelet_log_calls_per_minute: u32,
    /// ExecContainerCommand calls a minute shared by every exec (ECI allows 500 per account).
    #[arg(long, env = "VK_ECI_KUBELET_EXEC_CALLS_PER_MINUTE", default_value_t = 400,
        value_parser = clap::value_parser!(u32).range(1..=500))]
    kubelet_exec_calls_per_minute: u32,
    /// DescribeMultiContainerGroupMetric calls a minute for the metric refresher (ECI: 500,
    /// or 2000 per the current limits page).
    #[arg(long, env = "VK_ECI_KUBELET_METRIC_CALLS_PER_MINUTE", default_value_t = 400,
        value_parser = clap::value_parser!(u32).range(1..=2000))]
    kubelet_metric_calls_per_minute: u32,
    /// The shortest time between two metric refreshes (ECI samples every 15 s; refreshing
    /// faster fetches the same sample again).
    #[arg(long, env = "VK_ECI_KUBELET_METRIC_MIN_REFRESH_SECONDS", default_value_t = 15,
        value_parser = clap::value_parser!(u64).range(1..=600))]
    kubelet_metric_min_refresh_seconds: u64,
    /// Cluster DNS service IP, for `ClusterFirst` pods.
    #[arg(long, env = "CLUSTER_DNS")]
    cluster_dns: Option<String>,
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// This replica's identity in the leader election.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    lease_namespace: String,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "VK_ECI_ADMIN_LISTEN", default_value = "0.0.0.0:10256")]
    admin_listen: SocketAddr,
    /// Serve the ECI admission webhook (pods labelled, annotated or selected by the
    /// eci-profile go to ECI). Needs --webhook-cert and --webhook-key.
    #[arg(long, env = "WEBHOOK")]
    webhook: bool,
    /// Address of the webhook's HTTPS endpoint.
    #[arg(long, env = "VK_ECI_WEBHOOK_LISTEN", default_value = "0.0.0.0:9443")]
    webhook_listen: SocketAddr,
    /// PEM certificate chain the webhook serves (reloaded when the file changes).
    #[arg(long, env = "VK_ECI_WEBHOOK_CERT")]
    webhook_cert: Option<PathBuf>,
    /// PEM private key of --webhook-cert.
    #[arg(long, env = "VK_ECI_WEBHOOK_KEY")]
    webhook_key: Option<PathBuf>,
    /// Leader lease duration in seconds (failover takes at most this plus 2 s).
    #[arg(long, default_value_t = 10)]
    lease_duration_seconds: u64,
}

impl RunArgs {
    fn settings(&self) -> Result<Settings, SettingError> {
        RawSettings {
            node_name: self.node_name.clone(),
            cluster_id: self.cluster_id.clone(),
            region: self.region.clone(),
            vpc: self.vpc.clone(),
            vswitches: self.vswitch.clone(),
            security_group: self.security_group.clone(),
            resource_group: self.resource_group.clone(),
            taint_key: self.taint_key.clone(),
            taint_value: self.taint_value.clone(),
            taint_effect: self.taint_effect.clone(),
            quota_cpu: self.quota_cpu.clone(),
            quota_memory: self.quota_memory.clone(),
            quota_pods: self.quota_pod.clone(),
            kubelet_port: self.kubelet_port,
            pod_ip: self.pod_ip.clone(),
            cluster_dns: self.cluster_dns.clone(),
            cluster_domain: self.cluster_domain.clone(),
            has_access_key: self.access_key_id.is_some() || self.access_key_secret.is_some(),
            simulator: self.simulator,
        }
        .validate()
    }

    /// The webhook's endpoint, if enabled: a certificate the API server can verify is
    /// required, since a webhook nobody can verify is one that never answers.
    fn webhook(&self) -> anyhow::Result<Option<WebhookServing>> {
        if !self.webhook {
            return Ok(None);
        }
        let (Some(cert), Some(key)) = (&self.webhook_cert, &self.webhook_key) else {
            return Err(SettingError {
                setting: "VK_ECI_WEBHOOK_CERT",
                problem: "WEBHOOK is on but --webhook-cert and --webhook-key (VK_ECI_WEBHOOK_CERT, VK_ECI_WEBHOOK_KEY) are not both set".into(),
            }
            .into());
        };
        let cert =
            ServingCert::from_files(cert, key).context("the webhook's serving certificate")?;
        Ok(Some(WebhookServing {
            listen: self.webhook_listen,
            cert,
        }))
    }

    fn kubelet(&self, settings: &Settings) -> vk_eci::kubelet::KubeletConfig {
        use vk_eci::kubelet::{KubeletConfig, Serving};
        let mut names = vec![settings.node_name.clone()];
        names.extend(settings.pod_ip.map(|ip| ip.to_string()));
        let serving = match (
            &self.kubelet_cert,
            &self.kubelet_key,
            &self.kubelet_ca_cert,
            &self.kubelet_ca_key,
        ) {
            (Some(cert), Some(key), _, _) => Serving::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            (_, _, Some(ca_cert), Some(ca_key)) => Serving::IssuedBy {
                ca_cert: ca_cert.clone(),
                ca_key: ca_key.clone(),
                names,
            },
            _ if self.kubelet_csr => Serving::ClusterSigned {
                names,
                approve: self.kubelet_csr_approve,
            },
            _ => {
                names.push("localhost".into());
                Serving::SelfSigned { names }
            }
        };
        KubeletConfig {
            // The family of the address the Node advertises (an IPv6 pod IP needs `::`).
            listen: match settings.pod_ip {
                Some(IpAddr::V6(_)) => {
                    SocketAddr::from((Ipv6Addr::UNSPECIFIED, settings.kubelet_port))
                }
                _ => SocketAddr::from((Ipv4Addr::UNSPECIFIED, settings.kubelet_port)),
            },
            serving,
            client_ca: self.kubelet_client_ca.clone(),
            log_calls_per_minute: self.kubelet_log_calls_per_minute,
            exec_calls_per_minute: self.kubelet_exec_calls_per_minute,
            metric_calls_per_minute: self.kubelet_metric_calls_per_minute,
            metric_min_interval: std::time::Duration::from_secs(
                self.kubelet_metric_min_refresh_seconds,
            ),
        }
    }

    fn timing(&self) -> Timing {
        let lease = self.lease_duration_seconds.max(3);
        Timing {
            lease_duration: std::time::Duration::from_secs(lease),
            renew_deadline: std::time::Duration::from_secs(lease * 7 / 10),
            retry_period: std::time::Duration::from_secs((lease / 5).max(1)),
        }
    }
}

/// Where ECI is: the configured endpoint with the configured AccessKey, or (in simulator
/// mode, which [`Settings::simulated`] says was chosen with no AccessKey) a simulator.
async fn eci_config(
    args: &RunArgs,
    settings: &Settings,
) -> anyhow::Result<(EciClientConfig, Option<RunningSimulator>)> {
    match (&args.access_key_id, &args.access_key_secret) {
        (Some(id), Some(secret)) => {
            let mut credentials = Credentials::new(id, secret.expose());
            if let Some(token) = &args.security_token {
                credentials = credentials.with_security_token(token.expose());
            }
            let mut config = EciClientConfig::new(&settings.region, credentials);
            config.endpoint = args.endpoint.clone();
            Ok((config, None))
        }
        (Some(_), None) => Err(half_an_access_key(env::SECRET_KEY, env::ACCESS_KEY).into()),
        (None, Some(_)) => Err(half_an_access_key(env::ACCESS_KEY, env::SECRET_KEY).into()),
        (None, None) => {
            let credentials = Credentials::new(
                eci_sim::DEFAULT_ACCESS_KEY_ID,
                eci_sim::DEFAULT_ACCESS_KEY_SECRET,
            );
            let mut config = EciClientConfig::new(&settings.region, credentials);
            if let Some(endpoint) = &args.endpoint {
                warn!(%endpoint, "SIMULATOR MODE: using the ECI simulator at ECI_ENDPOINT; pods will not run on Alibaba Cloud");
                config.endpoint = Some(endpoint.clone());
                return Ok((config, None));
            }
            let simulator = Simulator::new(simulator_config(settings), Vec::new())
                .map_err(|e| anyhow::anyhow!("cannot configure the built-in ECI simulator: {e}"))?
                .spawn("127.0.0.1:0".parse()?)
                .await
                .context("cannot start the built-in ECI simulator")?;
            warn!(
                endpoint = %simulator.endpoint(),
                "SIMULATOR MODE: started the built-in ECI simulator; pods will not run on Alibaba Cloud"
            );
            config.endpoint = Some(simulator.endpoint());
            Ok((config, Some(simulator)))
        }
    }
}

fn half_an_access_key(missing: &'static str, given: &str) -> SettingError {
    SettingError {
        setting: missing,
        problem: format!("not set while {given} is: an AccessKey needs both"),
    }
}

/// The simulator standing in for the configured region.
fn simulator_config(settings: &Settings) -> SimConfig {
    let mut config = SimConfig::default();
    for (index, vswitch) in config.vswitches.iter_mut().enumerate() {
        vswitch.zone = format!("{}-{}", settings.region, ["h", "i", "j"][index % 3]);
    }
    config.region = settings.region.clone();
    config
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let webhook = args.webhook()?;
    let (eci, _simulator) = eci_config(&args, &settings).await?;
    let config = kube::Config::infer()
        .await
        .context("cannot configure the Kubernetes client (in-cluster or KUBECONFIG)")?;
    let client = vk_eci::runtime::operator::kube_client(config)
        .context("cannot build the Kubernetes client")?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME").unwrap_or_else(|_| format!("vk-eci-{}", std::process::id()))
    });
    let kubelet = Some(args.kubelet(&settings));
    let operator = Operator {
        kubelet,
        client,
        eci,
        settings,
        identity,
        lease_namespace: args.lease_namespace.clone(),
        admin: Some(args.admin_listen),
        leader_timing: args.timing(),
        full_sync_every: vk_eci::eci_status::FULL_EVERY,
        webhook,
    };
    operator.run(super::shutdown_signal()).await?;
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
        run: RunArgs,
    }

    #[test]
    fn debug_of_the_arguments_redacts_the_secret_and_the_token() {
        let parsed = Command::try_parse_from([
            "vk-eci",
            "--access-key-id",
            "LTAI-visible-id",
            "--access-key-secret",
            "hunter2-secret",
            "--security-token",
            "sts-token-value",
        ])
        .unwrap();
        let debug = format!("{:?}", parsed.run);
        assert!(debug.contains("LTAI-visible-id"), "{debug}");
        assert!(!debug.contains("hunter2-secret"), "{debug}");
        assert!(!debug.contains("sts-token-value"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let settings = format!("{:?}", parsed.run.settings());
        assert!(!settings.contains("hunter2-secret") && !settings.contains("sts-token-value"));
    }

    #[test]
    fn the_webhook_needs_a_certificate_and_is_off_by_default() {
        let off = Command::try_parse_from(["vk-eci"]).unwrap();
        assert!(off.run.webhook().unwrap().is_none());
        let uncertified = Command::try_parse_from(["vk-eci", "--webhook"]).unwrap();
        let error = uncertified.run.webhook().unwrap_err();
        assert_eq!(
            error.downcast_ref::<SettingError>().unwrap().setting,
            "VK_ECI_WEBHOOK_CERT"
        );
        let missing = Command::try_parse_from([
            "vk-eci",
            "--webhook",
            "--webhook-cert",
            "/nonexistent/tls.crt",
            "--webhook-key",
            "/nonexistent/tls.key",
        ])
        .unwrap();
        let error = format!("{:#}", missing.run.webhook().unwrap_err());
        assert!(error.contains("/nonexistent/tls.crt"), "{error}");
    }
}
