//! Gateway authentication: v1 (HMAC-SHA1 query) and V3 (`ACS3-HMAC-SHA256`) signatures
//! verified against the configured AccessKey pairs, with timestamp skew and nonce replay checks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use chrono::{DateTime, NaiveDateTime, Utc};
use eci_client::sign::{self, V3Request};

use crate::error::ApiError;

/// One accepted AccessKey.
#[derive(Clone)]
pub struct AccessKey {
    pub secret: String,
    pub security_token: Option<String>,
}

/// What an authenticated request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub action: String,
    /// Business parameters only (no signature or common parameters).
    pub params: Vec<(String, String)>,
    /// v1 requests without `Format=JSON` get XML, as on the real gateway.
    pub xml: bool,
    pub access_key_id: String,
}

/// The raw pieces of an HTTP request the gateway looks at.
pub struct RawRequest<'a> {
    pub method: &'a str,
    /// The query string, undecoded.
    pub query: &'a str,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
}

impl RawRequest<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn is_form_body(&self) -> bool {
        self.header("content-type").is_some_and(|ct| {
            ct.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
    }
}

const V1_COMMON: &[&str] = &[
    "Action",
    "Version",
    "Format",
    "AccessKeyId",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "SignatureType",
    "Timestamp",
    "Signature",
    "SecurityToken",
];

/// Remembers nonces for the skew window, per AccessKey, as 64-bit hashes of (key, nonce): a
/// false "already used" needs a hash collision within one 15-minute window.
#[derive(Default)]
pub struct NonceCache {
    seen: HashSet<u64>,
    order: VecDeque<(DateTime<Utc>, u64)>,
}

impl NonceCache {
    /// Records the nonce; false if it was already used within `window_seconds`.
    fn check_and_record(
        &mut self,
        key: &str,
        nonce: &str,
        now: DateTime<Utc>,
        window_seconds: i64,
    ) -> bool {
        while let Some((at, hash)) = self.order.front().copied() {
            if (now - at).num_seconds() <= window_seconds {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&hash);
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (key, nonce).hash(&mut hasher);
        let hash = hasher.finish();
        if !self.seen.insert(hash) {
            return false;
        }
        self.order.push_back((now, hash));
        true
    }
}

pub struct Authenticator {
    pub keys: HashMap<String, AccessKey>,
    pub max_skew_seconds: i64,
    nonces: NonceCache,
}

fn decode_form(text: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(text)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%SZ")
        .ok()
        .map(|t| t.and_utc())
        .or_else(|| {
            DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        })
}

impl Authenticator {
    pub fn new(keys: HashMap<String, AccessKey>, max_skew_seconds: i64) -> Self {
        Self {
            keys,
            max_skew_seconds,
            nonces: NonceCache::default(),
        }
    }

    pub fn authenticate(
        &mut self,
        request: &RawRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Authenticated, ApiError> {
        if !matches!(request.method, "GET" | "POST") {
            return Err(ApiError::new(
                400,
                "UnsupportedHTTPMethod",
                format!("Specified http method {} is not supported.", request.method),
            ));
        }
        let query = decode_form(request.query.as_bytes());
        let body = if request.is_form_body() {
            decode_form(request.body)
        } else {
            Vec::new()
        };
        match request.header("authorization") {
            Some(header) if header.starts_with(sign::V3_ALGORITHM) => {
                self.authenticate_v3(request, header, query, body, now)
            }
            _ => {
                let mut params = query;
                params.extend(body);
                self.authenticate_v1(request.method, params, now)
            }
        }
    }

    fn check_time(&self, text: &str, now: DateTime<Utc>) -> Result<(), ApiError> {
        let at = parse_time(text).ok_or_else(|| {
            ApiError::new(
                400,
                "InvalidTimeStamp.Format",
                "Specified time stamp or date value is not well formatted.",
            )
        })?;
        if (now - at).num_seconds().abs() > self.max_skew_seconds {
            return Err(ApiError::new(
                400,
                "InvalidTimeStamp.Expired",
                format!(
                    "Specified time stamp or date value is expired. Server time is {}.",
                    now.format("%Y-%m-%dT%H:%M:%SZ")
                ),
            ));
        }
        Ok(())
    }

    fn key(&self, access_key_id: &str) -> Result<&AccessKey, ApiError> {
        self.keys.get(access_key_id).ok_or_else(|| {
            ApiError::new(
                404,
                "InvalidAccessKeyId.NotFound",
                "Specified access key is not found.",
            )
        })
    }

    fn check_token(key: &AccessKey, given: Option<&str>) -> Result<(), ApiError> {
        match (&key.security_token, given) {
            (None, _) => Ok(()),
            (Some(expected), Some(given)) if sign::signatures_match(expected, given) => Ok(()),
            (Some(_), None) => Err(ApiError::new(
                400,
                "MissingSecurityToken",
                "SecurityToken is mandatory for this action.",
            )),
            (Some(_), Some(_)) => Err(ApiError::new(
                400,
                "InvalidSecurityToken.MismatchWithAccessKey",
                "Specified SecurityToken mismatch with the AccessKey.",
            )),
        }
    }

    fn check_nonce(&mut self, key: &str, nonce: &str, now: DateTime<Utc>) -> Result<(), ApiError> {
        if self
            .nonces
            .check_and_record(key, nonce, now, self.max_skew_seconds)
        {
            Ok(())
        } else {
            Err(ApiError::new(
                400,
                "SignatureNonceUsed",
                "Specified signature nonce was used already.",
            ))
        }
    }

    fn authenticate_v1(
        &mut self,
        method: &str,
        params: Vec<(String, String)>,
        now: DateTime<Utc>,
    ) -> Result<Authenticated, ApiError> {
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        let signature = get("Signature").ok_or_else(|| ApiError::missing_named("Signature"))?;
        let access_key_id =
            get("AccessKeyId").ok_or_else(|| ApiError::missing_named("AccessKeyId"))?;
        let action = get("Action").ok_or_else(|| ApiError::missing_named("Action"))?;
        let version = get("Version").ok_or_else(|| ApiError::missing_named("Version"))?;
        let method_name =
            get("SignatureMethod").ok_or_else(|| ApiError::missing_named("SignatureMethod"))?;
        if method_name != "HMAC-SHA1" {
            return Err(ApiError::new(
                400,
                "InvalidSignatureMethod",
                "Specified signature method is not valid.",
            ));
        }
        if get("SignatureVersion") != Some("1.0") {
            return Err(ApiError::new(
                400,
                "InvalidSignatureVersion",
                "Specified signature version is not valid.",
            ));
        }
        let timestamp = get("Timestamp").ok_or_else(|| ApiError::missing_named("Timestamp"))?;
        let nonce =
            get("SignatureNonce").ok_or_else(|| ApiError::missing_named("SignatureNonce"))?;
        let xml = match get("Format").map(str::to_ascii_uppercase).as_deref() {
            None | Some("XML") => true,
            Some("JSON") => false,
            Some(_) => {
                return Err(ApiError::new(
                    400,
                    "InvalidParameter.Format",
                    "Specified parameter Format is not valid.",
                ));
            }
        };
        if version != eci_client::API_VERSION {
            return Err(ApiError::unknown_action());
        }
        self.check_time(timestamp, now)?;
        let key = self.key(access_key_id)?.clone();
        let string_to_sign = sign::v1_string_to_sign(
            method,
            params
                .iter()
                .filter(|(k, _)| k != "Signature")
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let expected = sign::v1_signature(&key.secret, &string_to_sign);
        if !sign::signatures_match(&expected, signature) {
            return Err(ApiError::new(
                400,
                "SignatureDoesNotMatch",
                format!(
                    "Specified signature is not matched with our calculation. server string to sign is:{string_to_sign}"
                ),
            ));
        }
        Self::check_token(&key, get("SecurityToken"))?;
        let access_key_id = access_key_id.to_string();
        let action = action.to_string();
        self.check_nonce(&access_key_id, nonce, now)?;
        Ok(Authenticated {
            action,
            params: params
                .into_iter()
                .filter(|(k, _)| !V1_COMMON.contains(&k.as_str()))
                .collect(),
            xml,
            access_key_id,
        })
    }

    fn authenticate_v3(
        &mut self,
        request: &RawRequest<'_>,
        header: &str,
        query: Vec<(String, String)>,
        body: Vec<(String, String)>,
        now: DateTime<Utc>,
    ) -> Result<Authenticated, ApiError> {
        let incomplete = || {
            ApiError::new(
                400,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards.",
            )
        };
        let authorization = sign::parse_v3_authorization(header).ok_or_else(incomplete)?;
        if !authorization.signed_headers.iter().any(|h| h == "host") {
            return Err(incomplete());
        }
        let action = request
            .header("x-acs-action")
            .filter(|a| !a.is_empty())
            .ok_or_else(|| ApiError::missing_named("Action"))?
            .to_string();
        let version = request
            .header("x-acs-version")
            .ok_or_else(|| ApiError::missing_named("Version"))?;
        let date = request
            .header("x-acs-date")
            .ok_or_else(|| ApiError::missing_named("Timestamp"))?;
        let nonce = request
            .header("x-acs-signature-nonce")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::missing_named("SignatureNonce"))?
            .to_string();
        if version != eci_client::API_VERSION {
            return Err(ApiError::unknown_action());
        }
        self.check_time(date, now)?;
        let key = self.key(&authorization.access_key_id)?.clone();
        let payload_hash = sign::sha256_hex(request.body);
        if request
            .header("x-acs-content-sha256")
            .is_some_and(|given| !given.eq_ignore_ascii_case(&payload_hash))
        {
            return Err(ApiError::new(
                400,
                "SignatureDoesNotMatch",
                "Specified x-acs-content-sha256 does not match the request body.",
            ));
        }
        let mut signed_headers = Vec::new();
        for name in &authorization.signed_headers {
            for value in request.header_values(name) {
                signed_headers.push((name.as_str(), value));
            }
        }
        let v3 = V3Request {
            method: request.method,
            query: query
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            signed_headers,
            payload_hash: &payload_hash,
        };
        let canonical_names: Vec<&str> = authorization
            .signed_headers
            .iter()
            .map(String::as_str)
            .collect();
        let expected = v3.signature(&key.secret);
        if v3.signed_header_names() != {
            let mut sorted = canonical_names.clone();
            sorted.sort_unstable();
            sorted.dedup();
            sorted.join(";")
        } || !sign::signatures_match(&expected, &authorization.signature)
        {
            return Err(ApiError::new(
                400,
                "SignatureDoesNotMatch",
                format!(
                    "Specified signature is not matched with our calculation. server string to sign is:{}",
                    v3.string_to_sign()
                ),
            ));
        }
        Self::check_token(&key, request.header("x-acs-security-token"))?;
        self.check_nonce(&authorization.access_key_id, &nonce, now)?;
        let mut params = query;
        params.extend(body);
        Ok(Authenticated {
            action,
            params,
            xml: false,
            access_key_id: authorization.access_key_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> Authenticator {
        let mut keys = HashMap::new();
        keys.insert(
            "testid".to_string(),
            AccessKey {
                secret: "testsecret".into(),
                security_token: None,
            },
        );
        keys.insert(
            "STS.testid".to_string(),
            AccessKey {
                secret: "testsecret".into(),
                security_token: Some("sts-token-123".into()),
            },
        );
        Authenticator::new(keys, 900)
    }

    fn at(text: &str) -> DateTime<Utc> {
        parse_time(text).unwrap()
    }

    /// ECI-V1-A as a GET with the official signature: accepted; replayed: refused.
    #[test]
    fn v1_vector_is_accepted_once() {
        let query = "AccessKeyId=testid&Action=DescribeContainerGroups&ContainerGroupIds=%5B%22eci-bp1aaaaaaaaaaaaaaaaa%22%2C%22eci-bp1bbbbbbbbbbbbbbbbb%22%5D&Format=JSON&Limit=20&RegionId=cn-hangzhou&SignatureMethod=HMAC-SHA1&SignatureNonce=0123456789abcdef0123456789abcdef&SignatureVersion=1.0&Timestamp=2024-01-02T03%3A04%3A05Z&Version=2018-08-08&Signature=Bc7WEWVZ0MDiaT5c4TXw56LjSF4%3D";
        let request = RawRequest {
            method: "GET",
            query,
            headers: vec![],
            body: b"",
        };
        let mut auth = authenticator();
        let ok = auth
            .authenticate(&request, at("2024-01-02T03:05:00Z"))
            .unwrap();
        assert_eq!(ok.action, "DescribeContainerGroups");
        assert!(!ok.xml);
        assert_eq!(ok.params.len(), 3);
        let replay = auth
            .authenticate(&request, at("2024-01-02T03:05:01Z"))
            .unwrap_err();
        assert_eq!(replay.code, "SignatureNonceUsed");
    }

    #[test]
    fn v1_rejects_tampering_skew_and_unknown_keys() {
        let base = "Action=DescribeContainerGroups&Format=JSON&Limit=20&RegionId=cn-hangzhou&SignatureMethod=HMAC-SHA1&SignatureNonce=0123456789abcdef0123456789abcdef&SignatureVersion=1.0&Timestamp=2024-01-02T03%3A04%3A05Z&Version=2018-08-08&ContainerGroupIds=%5B%22eci-bp1aaaaaaaaaaaaaaaaa%22%2C%22eci-bp1bbbbbbbbbbbbbbbbb%22%5D&Signature=Bc7WEWVZ0MDiaT5c4TXw56LjSF4%3D";
        let mut auth = authenticator();
        let tampered = format!(
            "AccessKeyId=testid&{}",
            base.replace("Limit=20", "Limit=10")
        );
        let err = auth
            .authenticate(
                &RawRequest {
                    method: "GET",
                    query: &tampered,
                    headers: vec![],
                    body: b"",
                },
                at("2024-01-02T03:05:00Z"),
            )
            .unwrap_err();
        assert_eq!(
            (err.status, err.code.as_str()),
            (400, "SignatureDoesNotMatch")
        );
        assert!(err.message.contains("server string to sign is:GET&%2F&"));

        let right = format!("AccessKeyId=testid&{base}");
        let err = auth
            .authenticate(
                &RawRequest {
                    method: "GET",
                    query: &right,
                    headers: vec![],
                    body: b"",
                },
                at("2024-01-02T04:00:00Z"),
            )
            .unwrap_err();
        assert_eq!(err.code, "InvalidTimeStamp.Expired");

        let unknown = format!("AccessKeyId=nobody&{base}");
        let err = auth
            .authenticate(
                &RawRequest {
                    method: "GET",
                    query: &unknown,
                    headers: vec![],
                    body: b"",
                },
                at("2024-01-02T03:05:00Z"),
            )
            .unwrap_err();
        assert_eq!(
            (err.status, err.code.as_str()),
            (404, "InvalidAccessKeyId.NotFound")
        );

        let err = auth
            .authenticate(
                &RawRequest {
                    method: "GET",
                    query: "Action=X",
                    headers: vec![],
                    body: b"",
                },
                at("2024-01-02T03:05:00Z"),
            )
            .unwrap_err();
        assert_eq!(err.code, "MissingSignature");
    }

    /// ECI-V3-C: a form body signed with STS credentials.
    #[test]
    fn v3_form_body_with_sts_vector_is_accepted() {
        let body = b"ContainerGroupId=eci-bp1aaaaaaaaaaaaaaaaa&RegionId=cn-hangzhou";
        let headers = vec![
            ("host", "eci.cn-hangzhou.aliyuncs.com"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-acs-action", "DeleteContainerGroup"),
            ("x-acs-date", "2024-01-02T03:04:05Z"),
            ("x-acs-security-token", "sts-token-123"),
            ("x-acs-signature-nonce", "0123456789abcdef0123456789abcdef"),
            ("x-acs-version", "2018-08-08"),
            ("x-acs-content-sha256", "3923c4e1b472e5e0be7a6284f60618597457fbcb55865e55ba139adb12fe23d4"),
            ("authorization", "ACS3-HMAC-SHA256 Credential=STS.testid,SignedHeaders=content-type;host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-security-token;x-acs-signature-nonce;x-acs-version,Signature=67f449f8a47293e63987932a65007bbe237800dde735e9da050b29a0a75d38bd"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>();
        let mut auth = authenticator();
        let ok = auth
            .authenticate(
                &RawRequest {
                    method: "POST",
                    query: "",
                    headers: headers.clone(),
                    body,
                },
                at("2024-01-02T03:04:30Z"),
            )
            .unwrap();
        assert_eq!(ok.action, "DeleteContainerGroup");
        assert_eq!(ok.params.len(), 2);

        let mut wrong_token = headers;
        for (name, value) in &mut wrong_token {
            if name == "x-acs-signature-nonce" {
                *value = "another".into();
            }
        }
        let err = auth
            .authenticate(
                &RawRequest {
                    method: "POST",
                    query: "",
                    headers: wrong_token,
                    body,
                },
                at("2024-01-02T03:04:30Z"),
            )
            .unwrap_err();
        assert_eq!(err.code, "SignatureDoesNotMatch");
    }
}
