//! Errors never repeat a request's secrets, whatever the gateway echoes: a stand-in gateway
//! answers every call with an error whose message quotes the sensitive parameters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use eci_client::sign::percent_encode;
use eci_client::{Credentials, EciClient, EciClientConfig, EciError, RetryPolicy};
use eci_types::EciFailure;
use eci_types::wire::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ENV_VALUE: &str = "db-password-from-a-secret";
const SHORT_ENV_VALUE: &str = "k9";
const REGISTRY_PASSWORD: &str = "registry-pass-123";
const FILE_CONTENT: &str = "c2VjcmV0LWNvbmZpZy1maWxl";
const FLEX_OPTIONS: &str = r#"{"akSecret":"flex-secret-value"}"#;

/// A gateway that answers every request with `status` and `body`.
async fn gateway(status: u16, body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 {status} Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{address}")
}

fn client(endpoint: String) -> EciClient {
    let mut config = EciClientConfig::new("cn-hangzhou", Credentials::new("LTAIid", "ak-secret"));
    config.endpoint = Some(endpoint);
    config.timeout = Duration::from_secs(5);
    config.retry = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    EciClient::new(config).unwrap()
}

fn create_request() -> CreateContainerGroupRequest {
    CreateContainerGroupRequest {
        container_group_name: "web".into(),
        container: vec![Container {
            name: "app".into(),
            image: "nginx".into(),
            environment_var: vec![
                EnvironmentVar {
                    key: "DB_PASSWORD".into(),
                    value: Some(ENV_VALUE.into()),
                    field_ref: None,
                },
                EnvironmentVar {
                    key: "PIN".into(),
                    value: Some(SHORT_ENV_VALUE.into()),
                    field_ref: None,
                },
            ],
            ..Container::default()
        }],
        volume: vec![
            Volume {
                name: "config".into(),
                r#type: "ConfigFileVolume".into(),
                config_file_volume: Some(ConfigFileVolume {
                    config_file_to_path: vec![ConfigFileToPath {
                        path: "app.conf".into(),
                        content: FILE_CONTENT.into(),
                        mode: None,
                    }],
                    default_mode: None,
                }),
                ..Volume::default()
            },
            Volume {
                name: "bucket".into(),
                r#type: "FlexVolume".into(),
                flex_volume: Some(FlexVolume {
                    driver: "alicloud/oss".into(),
                    fs_type: None,
                    options: Some(FLEX_OPTIONS.into()),
                }),
                ..Volume::default()
            },
        ],
        image_registry_credential: vec![ImageRegistryCredential {
            server: "registry.example.com".into(),
            user_name: "robot".into(),
            password: REGISTRY_PASSWORD.into(),
        }],
        ..CreateContainerGroupRequest::default()
    }
}

fn assert_clean(error: &EciError) {
    let shown = format!("{error} {error:?}");
    for secret in [
        ENV_VALUE,
        REGISTRY_PASSWORD,
        FILE_CONTENT,
        "flex-secret-value",
        "ak-secret",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
        assert!(
            !shown.contains(&percent_encode(secret)),
            "{secret} encoded in {shown}"
        );
    }
    assert!(!shown.contains("is not valid: k9"), "{shown}");
}

#[tokio::test]
async fn an_invalid_parameter_message_echoing_values_comes_out_scrubbed() {
    let message = format!(
        "Specified parameter Container.1.EnvironmentVar.1.Value is not valid: {ENV_VALUE}; \
         ImageRegistryCredential.1.Password {REGISTRY_PASSWORD} ({}); \
         Volume.1.ConfigFileVolume.ConfigFileToPath.1.Content {FILE_CONTENT}; \
         Volume.2.FlexVolume.Options {FLEX_OPTIONS}; \
         Container.1.EnvironmentVar.2.Value is not valid: {SHORT_ENV_VALUE}",
        percent_encode(REGISTRY_PASSWORD)
    );
    let body =
        serde_json::json!({"Code": "InvalidParameter", "Message": message, "RequestId": "r-1"});
    let error = client(gateway(400, body.to_string()).await)
        .call(&create_request())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("InvalidParameter"));
    assert_clean(&error);
    let shown = error.to_string();
    assert!(
        shown.contains(
            "Specified parameter Container.1.EnvironmentVar.1.Value is not valid: <redacted>"
        ),
        "the message stays readable: {shown}"
    );
}

#[tokio::test]
async fn an_unreadable_error_page_echoing_values_comes_out_scrubbed() {
    let page = format!(
        "<html>{}bad request for {ENV_VALUE} and {REGISTRY_PASSWORD}</html>",
        " ".repeat(480)
    );
    let error = client(gateway(400, page).await)
        .call(&create_request())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("Http400"));
    assert_clean(&error);
    let shown = format!("{error:?}");
    assert!(
        !shown.contains("db-pass"),
        "no part of a secret at the cut: {shown}"
    );
}
