//! A serving certificate signed by the cluster, as a kubelet with `serverTLSBootstrap` gets
//! one: a CertificateSigningRequest for signer `kubernetes.io/kubelet-serving` (CN
//! `system:node:<node>`, O `system:nodes`, the node name and pod IP as SANs). Someone approves it
//! (an admin with `kubectl certificate approve`, or this replica itself when allowed, since the
//! usual approvers accept only requests made by a `system:node:` user); kube-controller-manager
//! signs it; it is served from then on and asked for again at 80 % of its validity.
//!
//! Every replica asks for its own: the certificate names its own pod IP, and a standby that
//! becomes leader must already hold one. The request is the replica's own credential, like its
//! Lease, not shared state. Until the first one is issued the port serves a self-signed one.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::api::{Api, Patch, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt};
use rustls::pki_types::PrivateKeyDer;
use serde_json::json;
use tracing::{info, warn};
use vk_eci_core::crd::{NODE_LABEL, node_label_value};

use crate::runtime::context::patch_params;
use crate::tls::ServingCert;

pub const SIGNER: &str = "kubernetes.io/kubelet-serving";

/// How often a request still waiting for approval is said again.
const WAITING_NOTICE: Duration = Duration::from_secs(300);
const FIRST_RETRY: Duration = Duration::from_secs(30);
const LAST_RETRY: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("cannot make the certificate request: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("CertificateSigningRequest {name}: {source}")]
    Api { name: String, source: kube::Error },
    #[error("CertificateSigningRequest {name} was {condition}: {message}")]
    Refused {
        name: String,
        condition: String,
        message: String,
    },
    #[error("CertificateSigningRequest {name} was signed with an unusable certificate: {reason}")]
    Unusable { name: String, reason: String },
}

/// What one issued certificate is.
struct Issued {
    chain_pem: Vec<u8>,
    key: PrivateKeyDer<'static>,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
}

/// When to ask for the next certificate: 80 % into this one's validity, as the kubelet does
/// (it jitters between 70 and 90 %), so a slow approval still has a fifth of it left.
pub fn renew_at(not_before: DateTime<Utc>, not_after: DateTime<Utc>) -> DateTime<Utc> {
    let lifetime = not_after.signed_duration_since(not_before);
    let lead = TimeDelta::milliseconds(lifetime.num_milliseconds().saturating_mul(4) / 5);
    not_before.checked_add_signed(lead).unwrap_or(not_before)
}

/// The PEM request and its key for `node` with SANs `names` (DNS names or IP addresses).
fn request_for(node: &str, names: &[String]) -> Result<(String, rcgen::KeyPair), rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let key = rcgen::KeyPair::generate()?;
    let request = params.serialize_request(&key)?.pem()?;
    Ok((request, key))
}

/// The object asking for it. The key is ECDSA, so the signer allows exactly these usages.
fn csr_object(node: &str, request_pem: &str) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: kube::api::ObjectMeta {
            generate_name: Some(format!("{node}-serving-")),
            labels: Some([(NODE_LABEL.to_string(), node_label_value(node))].into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request_pem.as_bytes().to_vec()),
            signer_name: SIGNER.into(),
            usages: Some(vec!["digital signature".into(), "server auth".into()]),
            ..Default::default()
        },
        status: None,
    }
}

/// Whether the request is settled: signed, or refused (`Denied`/`Failed`).
fn settled(csr: Option<&CertificateSigningRequest>) -> bool {
    let Some(status) = csr.and_then(|c| c.status.as_ref()) else {
        return false;
    };
    status.certificate.as_ref().is_some_and(|c| !c.0.is_empty()) || refusal(csr).is_some()
}

fn refusal(csr: Option<&CertificateSigningRequest>) -> Option<(String, String)> {
    csr?.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True")
        .map(|c| (c.type_.clone(), c.message.clone().unwrap_or_default()))
}

/// The validity of the first certificate in `pem`.
fn validity(pem: &[u8]) -> Result<(DateTime<Utc>, DateTime<Utc>), String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| e.to_string())?;
    let cert = pem.parse_x509().map_err(|e| e.to_string())?;
    let at = |t: x509_parser::time::ASN1Time| {
        DateTime::from_timestamp(t.timestamp(), 0)
            .ok_or_else(|| "a validity out of range".to_string())
    };
    Ok((
        at(cert.validity().not_before)?,
        at(cert.validity().not_after)?,
    ))
}

/// Asks for one certificate and waits until it is signed or refused.
async fn obtain(
    client: &Client,
    node: &str,
    names: &[String],
    approve: bool,
) -> Result<Issued, CsrError> {
    let (request_pem, key) = request_for(node, names)?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let created = api
        .create(&PostParams::default(), &csr_object(node, &request_pem))
        .await
        .map_err(|source| CsrError::Api {
            name: format!("{node}-serving-*"),
            source,
        })?;
    let name = created.name_any();
    let api_error = |source| CsrError::Api {
        name: name.clone(),
        source,
    };
    if approve {
        let approval = json!({"status": {"conditions": [{
            "type": "Approved", "status": "True", "reason": "VkEciSelfApproved",
            "message": format!("vk-eci approved the serving certificate of its own node {node}"),
            "lastUpdateTime": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }]}});
        api.patch_approval(&name, &patch_params(), &Patch::Merge(&approval))
            .await
            .map_err(api_error)?;
        info!(csr = %name, "kubelet serving certificate requested and approved");
    } else {
        warn!(
            csr = %name,
            "kubelet serving certificate requested; waiting for its approval \
             (kubectl certificate approve {name})"
        );
    }
    let signed = loop {
        match tokio::time::timeout(
            WAITING_NOTICE,
            await_condition(
                api.clone(),
                &name,
                |csr: Option<&CertificateSigningRequest>| settled(csr),
            ),
        )
        .await
        {
            Ok(Ok(Some(csr))) => break csr,
            Ok(Ok(None)) => {
                return Err(CsrError::Refused {
                    name,
                    condition: "deleted".into(),
                    message: "it was deleted before it was signed".into(),
                });
            }
            Ok(Err(error)) => {
                return Err(CsrError::Unusable {
                    name,
                    reason: format!("watching it failed: {error}"),
                });
            }
            Err(_) => warn!(
                csr = %name,
                "kubelet serving certificate still waiting for approval \
                 (kubectl certificate approve {name})"
            ),
        }
    };
    if let Some((condition, message)) = refusal(Some(&signed)) {
        return Err(CsrError::Refused {
            name,
            condition,
            message,
        });
    }
    let chain_pem = signed
        .status
        .and_then(|s| s.certificate)
        .map(|c| c.0)
        .unwrap_or_default();
    let (not_before, not_after) = validity(&chain_pem).map_err(|reason| CsrError::Unusable {
        name: name.clone(),
        reason,
    })?;
    let key =
        PrivateKeyDer::try_from(key.serialize_der()).map_err(|reason| CsrError::Unusable {
            name: name.clone(),
            reason: reason.into(),
        })?;
    Ok(Issued {
        chain_pem,
        key,
        not_before,
        not_after,
    })
}

/// Keeps `cert` serving a cluster-signed certificate for `names`: asks, serves what is issued,
/// asks again at [`renew_at`]; a refusal or failure is logged and asked again with backoff,
/// while the last good certificate (or the self-signed one) goes on serving.
pub async fn keep_signed(
    client: Client,
    node: String,
    names: Vec<String>,
    approve: bool,
    cert: Arc<ServingCert>,
) {
    let mut retry = FIRST_RETRY;
    loop {
        let wait = match obtain(&client, &node, &names, approve).await {
            Ok(issued) => match cert.replace(&issued.chain_pem, issued.key) {
                Ok(()) => {
                    retry = FIRST_RETRY;
                    let renew = renew_at(issued.not_before, issued.not_after);
                    info!(
                        not_after = %issued.not_after,
                        %renew,
                        "kubelet API now serves its cluster-signed certificate"
                    );
                    renew
                        .signed_duration_since(Utc::now())
                        .to_std()
                        .unwrap_or(Duration::ZERO)
                }
                Err(error) => {
                    warn!(%error, "the cluster-signed certificate is not usable; asking again");
                    next_retry(&mut retry)
                }
            },
            Err(error) => {
                warn!(%error, "no cluster-signed kubelet serving certificate; asking again");
                next_retry(&mut retry)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

fn next_retry(retry: &mut Duration) -> Duration {
    let now = *retry;
    *retry = retry.saturating_mul(2).min(LAST_RETRY);
    now
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use x509_parser::prelude::FromDer;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn a_certificate_is_renewed_four_fifths_into_its_validity() {
        assert_eq!(
            renew_at(at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z")),
            at("2026-10-20T00:00:00Z")
        );
        assert_eq!(
            renew_at(at("2026-12-02T00:00:00Z"), at("2026-12-02T01:00:00Z")),
            at("2026-12-02T00:48:00Z")
        );
    }

    #[test]
    fn a_backwards_validity_renews_at_once() {
        let start = at("2026-12-02T00:00:00Z");
        assert!(renew_at(start, at("2026-12-01T00:00:00Z")) <= start);
    }

    #[test]
    fn the_request_is_what_the_kubelet_serving_signer_accepts() {
        let names = vec!["vk-node".to_string(), "10.0.0.7".to_string()];
        let (pem, _key) = request_for("vk-node", &names).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let (_, request) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
                .unwrap();
        let subject = &request.certification_request_info.subject;
        let cn: Vec<_> = subject
            .iter_common_name()
            .map(|c| c.as_str().unwrap())
            .collect();
        let o: Vec<_> = subject
            .iter_organization()
            .map(|o| o.as_str().unwrap())
            .collect();
        assert_eq!(cn, ["system:node:vk-node"]);
        assert_eq!(o, ["system:nodes"]);
        let sans = format!(
            "{:?}",
            request.requested_extensions().unwrap().collect::<Vec<_>>()
        );
        assert!(
            sans.contains(r#"DNSName("vk-node")"#) && sans.contains("IPAddress([10, 0, 0, 7])"),
            "{sans}"
        );

        let object = csr_object("vk-node", "PEM");
        assert_eq!(object.spec.signer_name, SIGNER);
        assert_eq!(
            object.spec.usages.unwrap(),
            ["digital signature", "server auth"]
        );
        assert_eq!(
            object.metadata.generate_name.as_deref(),
            Some("vk-node-serving-")
        );
    }

    #[test]
    fn a_request_is_settled_when_signed_or_refused() {
        let with = |status: serde_json::Value| -> CertificateSigningRequest {
            serde_json::from_value(json!({
                "metadata": {"name": "n"},
                "spec": {"request": "", "signerName": SIGNER},
                "status": status,
            }))
            .unwrap()
        };
        assert!(!settled(None));
        assert!(!settled(Some(&with(json!({})))));
        assert!(!settled(Some(&with(json!({"conditions": [
            {"type": "Approved", "status": "True"}]})))));
        assert!(settled(Some(&with(json!({"certificate": "Y2VydA=="})))));
        let denied = with(json!({"conditions": [
            {"type": "Denied", "status": "True", "message": "not yours"}]}));
        assert!(settled(Some(&denied)));
        assert_eq!(
            refusal(Some(&denied)),
            Some(("Denied".into(), "not yours".into()))
        );
    }
}
