//! Serving TLS, shared by every HTTPS endpoint of `vk-eci run` (the kubelet API, the
//! admission webhook): the serving certificate, reloaded when its files change, issued at
//! start, self-signed, or replaced while running (a cluster-signed one); and an accept loop
//! that hands each request the client's certificates.
//!
//! Reloading happens on the handshake path, checked at most once per [`RELOAD_CHECK`]: a
//! certificate rotated by cert-manager or a Secret update (kubelet symlink swap) is served
//! within seconds without a restart, and a half-written pair keeps the old one in use.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// How often a handshake may look at the certificate files.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no {what} in PEM form")]
    Pem { what: &'static str, path: PathBuf },
    #[error("the key in {path} is not usable: {source}")]
    Key {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("the certificate in {path} does not match its key: {source}")]
    Mismatch {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider every endpoint uses (the one kube's client uses too).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The serving certificate of an endpoint.
#[derive(Debug)]
pub struct ServingCert {
    files: Option<CertFiles>,
    current: Mutex<Current>,
}

#[derive(Debug, Clone)]
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    /// The files' modification times when `key` was read from them.
    modified: Option<(SystemTime, SystemTime)>,
    checked: Instant,
}

impl ServingCert {
    /// The certificate chain and key in PEM files, reloaded when either file changes.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let files = CertFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        let modified = files.modified().ok();
        let certified = files.load()?;
        Ok(Arc::new(Self {
            files: Some(files),
            current: Mutex::new(Current {
                key: certified,
                modified,
                checked: Instant::now(),
            }),
        }))
    }

    /// A self-signed certificate for `names` (DNS names or IP addresses): nothing can verify
    /// it, so clients must skip verification; the caller says so loudly.
    pub fn self_signed(names: &[String]) -> Result<Arc<Self>, TlsError> {
        let generated = rcgen::generate_simple_self_signed(names.to_vec())?;
        let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der()).map_err(|_| {
            TlsError::Pem {
                what: "private key",
                path: PathBuf::from("<generated>"),
            }
        })?;
        let certified = certified_key(vec![generated.cert.der().clone()], key, Path::new(""))?;
        Ok(Arc::new(Self {
            files: None,
            current: Mutex::new(Current {
                key: certified,
                modified: None,
                checked: Instant::now(),
            }),
        }))
    }

    /// A certificate for `names` (DNS names or IP addresses), subject `common_name` /
    /// `organization`, valid a year, issued now by the CA whose PEM certificate and key are
    /// in `ca_cert` / `ca_key`: for an address known only at start (the pod IP) that clients
    /// can still verify against that CA. The chain served is the leaf and the CA.
    pub fn issued_by(
        ca_cert: &Path,
        ca_key: &Path,
        common_name: &str,
        organization: Option<&str>,
        names: &[String],
    ) -> Result<Arc<Self>, TlsError> {
        let read = |what, path: &Path| {
            std::fs::read_to_string(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        let ca_pem = read("CA certificate", ca_cert)?;
        let ca_signing_key =
            ca_key_pair(read("CA key", ca_key)?.as_bytes()).ok_or_else(|| TlsError::Pem {
                what: "usable private key (RSA, or ECDSA/Ed25519 in PKCS#8)",
                path: ca_key.to_path_buf(),
            })?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_signing_key).map_err(|_| {
            TlsError::Pem {
                what: "CA certificate",
                path: ca_cert.to_path_buf(),
            }
        })?;
        let mut params = rcgen::CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        if let Some(organization) = organization {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, organization);
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
        ];
        set_validity_from_yesterday_for_a_year(&mut params);
        let leaf_key = rcgen::KeyPair::generate()?;
        let leaf = params.signed_by(&leaf_key, &issuer)?;
        let ca_der =
            CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|_| TlsError::Pem {
                what: "CA certificate",
                path: ca_cert.to_path_buf(),
            })?;
        let key = PrivateKeyDer::try_from(leaf_key.serialize_der()).map_err(|_| TlsError::Pem {
            what: "private key",
            path: PathBuf::from("<generated>"),
        })?;
        let certified = certified_key(vec![leaf.der().clone(), ca_der], key, Path::new(""))?;
        Ok(Arc::new(Self {
            files: None,
            current: Mutex::new(Current {
                key: certified,
                modified: None,
                checked: Instant::now(),
            }),
        }))
    }

    /// Serves `chain_pem` (PEM, leaf first) with `key` from now on: a certificate obtained
    /// while running, such as a cluster-signed one. A chain that does not match the key is
    /// refused and the current one kept.
    pub fn replace(&self, chain_pem: &[u8], key: PrivateKeyDer<'static>) -> Result<(), TlsError> {
        let issued = Path::new("<issued>");
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
            .filter_map(Result::ok)
            .collect();
        if chain.is_empty() {
            return Err(TlsError::Pem {
                what: "certificate",
                path: issued.to_path_buf(),
            });
        }
        let certified = certified_key(chain, key, issued)?;
        if let Ok(mut current) = self.current.lock() {
            current.key = certified;
        }
        Ok(())
    }

    /// The certificate to serve now, reloaded first if its files changed.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().ok()?;
        if let Some(files) = &self.files
            && current.checked.elapsed() >= RELOAD_CHECK
        {
            current.checked = Instant::now();
            if let Ok(modified) = files.modified()
                && current.modified != Some(modified)
            {
                match files.load() {
                    Ok(key) => {
                        info!(cert = %files.cert.display(), "serving certificate reloaded");
                        current.key = key;
                        current.modified = Some(modified);
                    }
                    Err(error) => {
                        warn!(%error, "new serving certificate not usable; still serving the old one")
                    }
                }
            }
        }
        Some(current.key.clone())
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl CertFiles {
    fn modified(&self) -> std::io::Result<(SystemTime, SystemTime)> {
        let of = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified());
        Ok((of(&self.cert)?, of(&self.key)?))
    }

    fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read("certificate", &self.cert)?)
                .filter_map(Result::ok)
                .collect();
        if chain.is_empty() {
            return Err(TlsError::Pem {
                what: "certificate",
                path: self.cert.clone(),
            });
        }
        let key =
            PrivateKeyDer::from_pem_slice(&read("key", &self.key)?).map_err(|_| TlsError::Pem {
                what: "private key",
                path: self.key.clone(),
            })?;
        certified_key(chain, key, &self.key)
    }
}

/// A CA key from PEM: PKCS#8, or PKCS#1 RSA (what Helm's `genCA` and cert-manager write by
/// default), rewrapped as PKCS#8 for ring.
fn ca_key_pair(pem: &[u8]) -> Option<rcgen::KeyPair> {
    let pkcs8 = match PrivateKeyDer::from_pem_slice(pem).ok()? {
        PrivateKeyDer::Pkcs8(key) => key.secret_pkcs8_der().to_vec(),
        PrivateKeyDer::Pkcs1(key) => rsa_pkcs1_to_pkcs8(key.secret_pkcs1_der()),
        _ => return None,
    };
    rcgen::KeyPair::try_from(pkcs8.as_slice()).ok()
}

fn der_length(length: usize) -> Vec<u8> {
    if length < 0x80 {
        return vec![length as u8];
    }
    let bytes: Vec<u8> = length
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

/// `PrivateKeyInfo { version 0, rsaEncryption, OCTET STRING pkcs1 }` (RFC 5208).
fn rsa_pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    const VERSION: [u8; 3] = [0x02, 0x01, 0x00];
    const RSA_ENCRYPTION: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut body = Vec::with_capacity(pkcs1.len() + 32);
    body.extend(VERSION);
    body.extend(RSA_ENCRYPTION);
    body.push(0x04);
    body.extend(der_length(pkcs1.len()));
    body.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    out.extend(der_length(body.len()));
    out.extend(body);
    out
}

/// From yesterday for a year (day of month at most 28, so both dates exist).
fn set_validity_from_yesterday_for_a_year(params: &mut rcgen::CertificateParams) {
    use chrono::Datelike;
    let yesterday = chrono::Utc::now().date_naive() - chrono::Days::new(1);
    let day = yesterday.day().min(28) as u8;
    let month = yesterday.month() as u8;
    params.not_before = rcgen::date_time_ymd(yesterday.year(), month, day);
    params.not_after = rcgen::date_time_ymd(yesterday.year().saturating_add(1), month, day);
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    key_path: &Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::Key {
            path: key_path.to_path_buf(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|source| TlsError::Mismatch {
            path: key_path.to_path_buf(),
            source,
        })?;
    Ok(Arc::new(certified))
}

/// A server configuration serving `cert`; with `clients`, client certificates are asked
/// for and verified by it (whether they are required is the verifier's choice).
pub fn server_config(
    cert: Arc<ServingCert>,
    clients: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let mut config = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    }
    .with_cert_resolver(cert);
    // HTTP/1.1 only: exec and attach upgrade the connection, which HTTP/2 cannot.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What a request learns about its connection: the client's address and the certificate
/// chain it presented (verified by the configuration's client verifier), if any.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub certificates: Arc<Vec<CertificateDer<'static>>>,
}

/// Serves `router` over TLS on `listener` until `shutdown`; each request carries a
/// [`Peer`] extension. Connections still open at shutdown are closed.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: pause rather than spin.
                warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        connections.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    debug!(%addr, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%addr, "TLS handshake timed out");
                    return;
                }
            };
            let certificates = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default();
            let peer = Peer {
                addr,
                certificates: Arc::new(certificates),
            };
            let service = TowerToHyperService::new(router.layer(axum::Extension(peer)));
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades()
                .await;
            if let Err(error) = served {
                debug!(%addr, %error, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_pair(name: &str) -> (String, String) {
        let generated = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        (generated.cert.pem(), generated.signing_key.serialize_pem())
    }

    fn served_der(key: &CertifiedKey) -> Vec<u8> {
        key.cert[0].as_ref().to_vec()
    }

    #[test]
    fn files_are_reloaded_when_they_change_and_a_broken_pair_keeps_the_old_one() {
        let dir = std::env::temp_dir().join(format!("vk-eci-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
        let (cert_a, key_a) = pem_pair("a.example");
        std::fs::write(&cert_path, &cert_a).unwrap();
        std::fs::write(&key_path, &key_a).unwrap();
        let serving = ServingCert::from_files(&cert_path, &key_path).unwrap();
        let first = served_der(&serving.current().unwrap());

        // A certificate whose key is still the old one: refused, the old pair stays.
        let (cert_b, key_b) = pem_pair("b.example");
        std::fs::write(&cert_path, &cert_b).unwrap();
        std::thread::sleep(RELOAD_CHECK);
        assert_eq!(served_der(&serving.current().unwrap()), first);

        std::fs::write(&key_path, &key_b).unwrap();
        std::thread::sleep(RELOAD_CHECK);
        let second = served_der(&serving.current().unwrap());
        assert_ne!(second, first);
        assert_eq!(
            second,
            CertificateDer::from_pem_slice(cert_b.as_bytes())
                .unwrap()
                .as_ref()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_certificate_issued_by_a_ca_verifies_against_it_for_the_names_given() {
        use rustls::client::danger::ServerCertVerifier;
        let dir = std::env::temp_dir().join(format!("vk-eci-tls-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let (ca_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        std::fs::write(&ca_path, ca.pem()).unwrap();
        std::fs::write(&key_path, ca_key.serialize_pem()).unwrap();

        let serving = ServingCert::issued_by(
            &ca_path,
            &key_path,
            "system:node:virtual-kubelet",
            Some("system:nodes"),
            &["10.1.2.3".into(), "virtual-kubelet".into()],
        )
        .unwrap();
        let served = serving.current().unwrap();
        assert_eq!(served.cert.len(), 2, "leaf and CA");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let now = rustls::pki_types::UnixTime::now();
        let ip = rustls::pki_types::ServerName::try_from("10.1.2.3").unwrap();
        verifier
            .verify_server_cert(&served.cert[0], &served.cert[1..], &ip, &[], now)
            .unwrap();
        let other = rustls::pki_types::ServerName::try_from("10.9.9.9").unwrap();
        assert!(
            verifier
                .verify_server_cert(&served.cert[0], &served.cert[1..], &other, &[], now)
                .is_err()
        );
        let missing = ServingCert::issued_by(&dir.join("none"), &key_path, "x", None, &[]);
        assert!(missing.unwrap_err().to_string().contains("none"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_rsa_ca_key_in_pkcs1_form_is_accepted() {
        let dir = std::env::temp_dir().join(format!("vk-eci-tls-rsa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("ca.key");
        let made = std::process::Command::new("openssl")
            .args(["genrsa", "-traditional", "-out"])
            .arg(&key)
            .arg("2048")
            .output();
        if !made.is_ok_and(|o| o.status.success()) {
            eprintln!("skipped: openssl cannot make an RSA key here");
            return;
        }
        let pem = std::fs::read(&key).unwrap();
        assert!(String::from_utf8_lossy(&pem).contains("BEGIN RSA PRIVATE KEY"));
        let pair = ca_key_pair(&pem).expect("a PKCS#1 RSA key becomes a key pair");
        assert!(pair.is_compatible(&rcgen::PKCS_RSA_SHA256));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn der_lengths_use_the_short_and_long_forms() {
        assert_eq!(der_length(5), [5]);
        assert_eq!(der_length(0x80), [0x81, 0x80]);
        assert_eq!(der_length(0x1234), [0x82, 0x12, 0x34]);
    }

    #[test]
    fn unusable_files_are_refused_with_their_path() {
        let dir = std::env::temp_dir().join(format!("vk-eci-tls-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert_path, "not a certificate").unwrap();
        std::fs::write(&key_path, "not a key").unwrap();
        let error = ServingCert::from_files(&cert_path, &key_path).unwrap_err();
        assert!(error.to_string().contains("tls.crt"), "{error}");
        let missing = ServingCert::from_files(&dir.join("absent.crt"), &key_path).unwrap_err();
        assert!(missing.to_string().contains("absent.crt"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn serves_https_and_tells_requests_who_connected() {
        let serving = ServingCert::self_signed(&["127.0.0.1".into()]).unwrap();
        let config = server_config(serving.clone(), None).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/who",
            axum::routing::get(|axum::Extension(peer): axum::Extension<Peer>| async move {
                format!("{} {}", peer.addr.ip(), peer.certificates.len())
            }),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, config, router, async {
            stopped.await.ok();
        }));
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(serving.current().unwrap().cert[0].clone())
            .unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(client_config)
            .build()
            .unwrap();
        let body = client
            .get(format!("https://{addr}/who"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "127.0.0.1 0");
        stop.send(()).unwrap();
        server.await.unwrap();
    }
}
