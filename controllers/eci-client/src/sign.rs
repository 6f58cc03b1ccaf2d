//! Request signatures of the Alibaba Cloud RPC gateway.
//!
//! Two schemes are in use: the legacy "v1" HMAC-SHA1 query signature (the docs now call it the V2
//! request syntax) and the current `ACS3-HMAC-SHA256` header signature. Both are pure functions
//! here so that the client that signs and the simulator that verifies share one implementation,
//! and both are pinned by the published test vectors (see the tests at the bottom).

use std::collections::BTreeMap;

use base64::Engine as _;
use ring::{digest, hmac};

/// The V3 algorithm name, as it appears in `Authorization` and in the string to sign.
pub const V3_ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// SHA-256 of the empty body, the value of `x-acs-content-sha256` for requests without a body.
pub const EMPTY_BODY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// RFC 3986 percent-encoding with upper-case hex, as both signatures require: only
/// `A-Z a-z 0-9 - _ . ~` stay literal (so space is `%20`, `*` is `%2A`, `~` stays `~`).
pub fn percent_encode(input: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(input.len() * 3 / 2);
    for &byte in input.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    out
}

/// `name=value` pairs sorted byte-wise by name, percent-encoded and joined with `&`.
///
/// Used as the v1 canonicalized query string and as the V3 canonical query string.
pub fn canonical_query<'a, I>(params: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let sorted: BTreeMap<&str, &str> = params.into_iter().collect();
    let mut out = String::new();
    for (name, value) in sorted {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&percent_encode(name));
        out.push('=');
        out.push_str(&percent_encode(value));
    }
    out
}

/// The v1 string to sign: `METHOD&%2F&pe(canonicalized query)`. The HTTP method is part of
/// it, so GET and POST give different signatures. `params` must not contain `Signature`.
pub fn v1_string_to_sign<'a, I>(method: &str, params: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode("/"),
        percent_encode(&canonical_query(params))
    )
}

/// v1 signature: Base64(HMAC-SHA1(secret + "&", string to sign)).
pub fn v1_signature(access_key_secret: &str, string_to_sign: &str) -> String {
    let key = hmac::Key::new(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        format!("{access_key_secret}&").as_bytes(),
    );
    let tag = hmac::sign(&key, string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// Lower-case hex SHA-256, as used for the payload hash and the hashed canonical request.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// The parts of a request that the V3 signature covers.
#[derive(Debug, Clone)]
pub struct V3Request<'a> {
    pub method: &'a str,
    /// Decoded query parameters (flattened, see [`eci_types::params`]).
    pub query: Vec<(&'a str, &'a str)>,
    /// Header names (any case) and values, exactly those to be signed.
    pub signed_headers: Vec<(&'a str, &'a str)>,
    /// Lower-case hex SHA-256 of the body.
    pub payload_hash: &'a str,
}

impl V3Request<'_> {
    /// The `;`-joined, sorted, lower-case header names that go into `SignedHeaders`.
    pub fn signed_header_names(&self) -> String {
        self.canonical_headers()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(";")
    }

    fn canonical_headers(&self) -> BTreeMap<String, String> {
        let mut headers: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (name, value) in &self.signed_headers {
            headers
                .entry(name.to_ascii_lowercase())
                .or_default()
                .push(value.trim());
        }
        headers
            .into_iter()
            .map(|(name, mut values)| {
                values.sort_unstable();
                (name, values.join(","))
            })
            .collect()
    }

    /// The canonical request; its SHA-256 is what gets signed.
    pub fn canonical_request(&self) -> String {
        let headers = self.canonical_headers();
        let mut canonical_headers = String::new();
        for (name, value) in &headers {
            canonical_headers.push_str(name);
            canonical_headers.push(':');
            canonical_headers.push_str(value);
            canonical_headers.push('\n');
        }
        format!(
            "{}\n/\n{}\n{}\n{}\n{}",
            self.method.to_ascii_uppercase(),
            canonical_query(self.query.iter().copied()),
            canonical_headers,
            headers.keys().cloned().collect::<Vec<_>>().join(";"),
            self.payload_hash
        )
    }

    /// `ACS3-HMAC-SHA256\n` + hex(SHA-256(canonical request)).
    pub fn string_to_sign(&self) -> String {
        format!(
            "{V3_ALGORITHM}\n{}",
            sha256_hex(self.canonical_request().as_bytes())
        )
    }

    /// hex(HMAC-SHA256(raw secret, string to sign)).
    pub fn signature(&self, access_key_secret: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, access_key_secret.as_bytes());
        hex(hmac::sign(&key, self.string_to_sign().as_bytes()).as_ref())
    }

    /// The complete `Authorization` header value.
    pub fn authorization(&self, access_key_id: &str, access_key_secret: &str) -> String {
        format!(
            "{V3_ALGORITHM} Credential={access_key_id},SignedHeaders={},Signature={}",
            self.signed_header_names(),
            self.signature(access_key_secret)
        )
    }
}

/// The three fields of a V3 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Authorization {
    pub access_key_id: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Parses `ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..`; `None` when the
/// header is not a well-formed V3 authorization.
pub fn parse_v3_authorization(header: &str) -> Option<V3Authorization> {
    let rest = header.strip_prefix(V3_ALGORITHM)?.trim_start();
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, value) = part.trim().split_once('=')?;
        match key {
            "Credential" => credential = Some(value.to_string()),
            "SignedHeaders" => signed = Some(value.to_string()),
            "Signature" => signature = Some(value.to_string()),
            _ => return None,
        }
    }
    let signed_headers: Vec<String> = signed?
        .split(';')
        .filter(|name| !name.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    Some(V3Authorization {
        access_key_id: credential.filter(|c| !c.is_empty())?,
        signed_headers,
        signature: signature.filter(|s| !s.is_empty())?,
    })
}

/// Constant-time comparison of two signatures.
pub fn signatures_match(expected: &str, given: &str) -> bool {
    let (expected, given) = (expected.as_bytes(), given.as_bytes());
    expected.len() == given.len()
        && expected
            .iter()
            .zip(given)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_follows_rfc3986_with_upper_hex() {
        assert_eq!(
            percent_encode("中文 a*b~c+d/e"),
            "%E4%B8%AD%E6%96%87%20a%2Ab~c%2Bd%2Fe"
        );
    }

    fn v1_common<'a>(action: &'a str, version: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("AccessKeyId", "testid"),
            ("Action", action),
            ("Version", version),
            ("Format", "JSON"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
        ]
    }

    /// eci-api.md §1.4, the official RPC-mechanism vector.
    #[test]
    fn v1_official_vector() {
        let mut params = v1_common("DescribeDedicatedHosts", "2014-05-26");
        params.extend([
            ("RegionId", "cn-beijing"),
            ("SignatureNonce", "edb2b34af0af9a6d14deaf7c1a5315eb"),
            ("Timestamp", "2023-03-13T08:34:30Z"),
        ]);
        assert_eq!(
            canonical_query(params.iter().copied()),
            "AccessKeyId=testid&Action=DescribeDedicatedHosts&Format=JSON&RegionId=cn-beijing&SignatureMethod=HMAC-SHA1&SignatureNonce=edb2b34af0af9a6d14deaf7c1a5315eb&SignatureVersion=1.0&Timestamp=2023-03-13T08%3A34%3A30Z&Version=2014-05-26"
        );
        let sts = v1_string_to_sign("GET", params.iter().copied());
        assert_eq!(
            sts,
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeDedicatedHosts%26Format%3DJSON%26RegionId%3Dcn-beijing%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3Dedb2b34af0af9a6d14deaf7c1a5315eb%26SignatureVersion%3D1.0%26Timestamp%3D2023-03-13T08%253A34%253A30Z%26Version%3D2014-05-26"
        );
        assert_eq!(
            v1_signature("testsecret", &sts),
            "9NaGiOspFP5UPcwX8Iwt2YJXXuk="
        );
        let post = v1_string_to_sign("POST", params.iter().copied());
        assert_eq!(
            v1_signature("testsecret", &post),
            "ZvQ9xGiFnquSJRvj+WE6kdSpTwU="
        );
    }

    fn eci_v1_common() -> Vec<(&'static str, &'static str)> {
        let mut params = v1_common("", "2018-08-08");
        params.retain(|(k, _)| *k != "Action");
        params.extend([
            ("SignatureNonce", "0123456789abcdef0123456789abcdef"),
            ("Timestamp", "2024-01-02T03:04:05Z"),
            ("RegionId", "cn-hangzhou"),
        ]);
        params
    }

    const IDS: &str = r#"["eci-bp1aaaaaaaaaaaaaaaaa","eci-bp1bbbbbbbbbbbbbbbbb"]"#;

    /// eci-api.md §1.6 ECI-V1-A.
    #[test]
    fn v1_eci_describe_vector() {
        let mut params = eci_v1_common();
        params.extend([
            ("Action", "DescribeContainerGroups"),
            ("ContainerGroupIds", IDS),
            ("Limit", "20"),
        ]);
        assert_eq!(
            canonical_query(params.iter().copied()),
            "AccessKeyId=testid&Action=DescribeContainerGroups&ContainerGroupIds=%5B%22eci-bp1aaaaaaaaaaaaaaaaa%22%2C%22eci-bp1bbbbbbbbbbbbbbbbb%22%5D&Format=JSON&Limit=20&RegionId=cn-hangzhou&SignatureMethod=HMAC-SHA1&SignatureNonce=0123456789abcdef0123456789abcdef&SignatureVersion=1.0&Timestamp=2024-01-02T03%3A04%3A05Z&Version=2018-08-08"
        );
        let get = v1_string_to_sign("GET", params.iter().copied());
        assert_eq!(
            v1_signature("testsecret", &get),
            "Bc7WEWVZ0MDiaT5c4TXw56LjSF4="
        );
        let post = v1_string_to_sign("POST", params.iter().copied());
        assert_eq!(
            v1_signature("testsecret", &post),
            "RrBkKX6qA6FcuhHLpjaEBhTeHIA="
        );
    }

    fn create_business_params() -> Vec<(&'static str, &'static str)> {
        vec![
            ("ClientToken", "tok-1"),
            ("Container.1.Arg.1", "echo hello world"),
            ("Container.1.Command.1", "/bin/sh"),
            ("Container.1.Command.2", "-c"),
            ("Container.1.Cpu", "1.0"),
            ("Container.1.EnvironmentVar.1.Key", "A"),
            ("Container.1.EnvironmentVar.1.Value", "b c+d*e~f"),
            ("Container.1.Image", "nginx:latest"),
            ("Container.1.Memory", "2.0"),
            ("Container.1.Name", "c1"),
            ("ContainerGroupName", "test-cg"),
            ("RegionId", "cn-hangzhou"),
            ("RestartPolicy", "Never"),
            ("SecurityGroupId", "sg-bp1xxx"),
            ("SpotStrategy", "SpotAsPriceGo"),
            ("Tag.1.Key", "k"),
            ("Tag.1.Value", "v"),
            ("VSwitchId", "vsw-a,vsw-b"),
        ]
    }

    /// eci-api.md §1.6 ECI-V1-B.
    #[test]
    fn v1_eci_create_vector() {
        let mut params = eci_v1_common();
        params.retain(|(k, _)| *k != "RegionId");
        params.push(("Action", "CreateContainerGroup"));
        params.extend(create_business_params());
        assert_eq!(
            canonical_query(params.iter().copied()),
            "AccessKeyId=testid&Action=CreateContainerGroup&ClientToken=tok-1&Container.1.Arg.1=echo%20hello%20world&Container.1.Command.1=%2Fbin%2Fsh&Container.1.Command.2=-c&Container.1.Cpu=1.0&Container.1.EnvironmentVar.1.Key=A&Container.1.EnvironmentVar.1.Value=b%20c%2Bd%2Ae~f&Container.1.Image=nginx%3Alatest&Container.1.Memory=2.0&Container.1.Name=c1&ContainerGroupName=test-cg&Format=JSON&RegionId=cn-hangzhou&RestartPolicy=Never&SecurityGroupId=sg-bp1xxx&SignatureMethod=HMAC-SHA1&SignatureNonce=0123456789abcdef0123456789abcdef&SignatureVersion=1.0&SpotStrategy=SpotAsPriceGo&Tag.1.Key=k&Tag.1.Value=v&Timestamp=2024-01-02T03%3A04%3A05Z&VSwitchId=vsw-a%2Cvsw-b&Version=2018-08-08"
        );
        let sts = v1_string_to_sign("POST", params.iter().copied());
        assert_eq!(
            v1_signature("testsecret", &sts),
            "bubvM6JXvtPNLi+SYqXw2vbFBo4="
        );
    }

    /// eci-api.md §1.6 ECI-V1-C (STS).
    #[test]
    fn v1_eci_delete_sts_vector() {
        let mut params = eci_v1_common();
        params.retain(|(k, _)| *k != "AccessKeyId");
        params.extend([
            ("AccessKeyId", "STS.testid"),
            ("Action", "DeleteContainerGroup"),
            ("ContainerGroupId", "eci-bp1aaaaaaaaaaaaaaaaa"),
            ("SecurityToken", "sts-token-123"),
        ]);
        let sts = v1_string_to_sign("POST", params.iter().copied());
        assert_eq!(
            v1_signature("testsecret", &sts),
            "golYkdwOzW0xnauhkufG02oFE60="
        );
    }

    /// eci-api.md §1.5, the official V3 vector.
    #[test]
    fn v3_official_vector() {
        let request = V3Request {
            method: "POST",
            query: vec![
                (
                    "ImageId",
                    "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
                ),
                ("RegionId", "cn-shanghai"),
            ],
            signed_headers: vec![
                ("host", "ecs.cn-shanghai.aliyuncs.com"),
                ("x-acs-action", "RunInstances"),
                ("x-acs-version", "2014-05-26"),
                ("x-acs-date", "2023-10-26T10:22:32Z"),
                ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
                ("x-acs-content-sha256", EMPTY_BODY_SHA256),
            ],
            payload_hash: EMPTY_BODY_SHA256,
        };
        assert_eq!(
            request.canonical_request(),
            "POST\n/\nImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai\nhost:ecs.cn-shanghai.aliyuncs.com\nx-acs-action:RunInstances\nx-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\nx-acs-date:2023-10-26T10:22:32Z\nx-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\nx-acs-version:2014-05-26\n\nhost;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(request.canonical_request().as_bytes()),
            "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
        );
        assert_eq!(
            request.authorization("YourAccessKeyId", "YourAccessKeySecret"),
            "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
    }

    fn eci_v3_headers(action: &'static str) -> Vec<(&'static str, &'static str)> {
        vec![
            ("host", "eci.cn-hangzhou.aliyuncs.com"),
            ("x-acs-action", action),
            ("x-acs-content-sha256", EMPTY_BODY_SHA256),
            ("x-acs-date", "2024-01-02T03:04:05Z"),
            ("x-acs-signature-nonce", "0123456789abcdef0123456789abcdef"),
            ("x-acs-version", "2018-08-08"),
        ]
    }

    /// eci-api.md §1.6 ECI-V3-A, POST and GET.
    #[test]
    fn v3_eci_describe_vector() {
        let mut request = V3Request {
            method: "POST",
            query: vec![
                ("ContainerGroupIds", IDS),
                ("Limit", "20"),
                ("RegionId", "cn-hangzhou"),
            ],
            signed_headers: eci_v3_headers("DescribeContainerGroups"),
            payload_hash: EMPTY_BODY_SHA256,
        };
        assert_eq!(
            sha256_hex(request.canonical_request().as_bytes()),
            "bb4a310fd41e8c5d78bb600773767fa225eec6687338e160e71321ed435900a1"
        );
        assert_eq!(
            request.signature("testsecret"),
            "8d1f67efc348fcc38e16c7b954e18d0e2f82c48f3b06cd7865e2356091220855"
        );
        request.method = "GET";
        assert_eq!(
            sha256_hex(request.canonical_request().as_bytes()),
            "cacc6ce58874ac4a4902fab8212868196617903edb26915a4dd6c4fac1587fba"
        );
        assert_eq!(
            request.signature("testsecret"),
            "1d5180ce50b594ed37d31980a531f274cb4202ed8d12207b9b1580b83089f648"
        );
    }

    /// eci-api.md §1.6 ECI-V3-B.
    #[test]
    fn v3_eci_create_vector() {
        let request = V3Request {
            method: "POST",
            query: create_business_params(),
            signed_headers: eci_v3_headers("CreateContainerGroup"),
            payload_hash: EMPTY_BODY_SHA256,
        };
        assert!(request.canonical_request().contains(
            "\nClientToken=tok-1&Container.1.Arg.1=echo%20hello%20world&Container.1.Command.1=%2Fbin%2Fsh&Container.1.Command.2=-c&Container.1.Cpu=1.0&Container.1.EnvironmentVar.1.Key=A&Container.1.EnvironmentVar.1.Value=b%20c%2Bd%2Ae~f&Container.1.Image=nginx%3Alatest&Container.1.Memory=2.0&Container.1.Name=c1&ContainerGroupName=test-cg&RegionId=cn-hangzhou&RestartPolicy=Never&SecurityGroupId=sg-bp1xxx&SpotStrategy=SpotAsPriceGo&Tag.1.Key=k&Tag.1.Value=v&VSwitchId=vsw-a%2Cvsw-b\n"
        ));
        assert_eq!(
            sha256_hex(request.canonical_request().as_bytes()),
            "d82aa47636c31013b800906bb6ef0c724f0058ef5fed992a2669ecd25de284cb"
        );
        assert_eq!(
            request.signature("testsecret"),
            "df4b18856f24b238f3c01aa199f9d89210c8b9d209adf5b46032ae7fdb8b565d"
        );
    }

    /// eci-api.md §1.6 ECI-V3-C: form body, content-type signed, STS token header.
    #[test]
    fn v3_eci_delete_form_body_sts_vector() {
        let body = "ContainerGroupId=eci-bp1aaaaaaaaaaaaaaaaa&RegionId=cn-hangzhou";
        let payload_hash = sha256_hex(body.as_bytes());
        assert_eq!(
            payload_hash,
            "3923c4e1b472e5e0be7a6284f60618597457fbcb55865e55ba139adb12fe23d4"
        );
        let request = V3Request {
            method: "POST",
            query: vec![],
            signed_headers: vec![
                ("host", "eci.cn-hangzhou.aliyuncs.com"),
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-acs-action", "DeleteContainerGroup"),
                ("x-acs-date", "2024-01-02T03:04:05Z"),
                ("x-acs-security-token", "sts-token-123"),
                ("x-acs-signature-nonce", "0123456789abcdef0123456789abcdef"),
                ("x-acs-version", "2018-08-08"),
                ("x-acs-content-sha256", &payload_hash),
            ],
            payload_hash: &payload_hash,
        };
        assert_eq!(
            request.signed_header_names(),
            "content-type;host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-security-token;x-acs-signature-nonce;x-acs-version"
        );
        assert_eq!(
            sha256_hex(request.canonical_request().as_bytes()),
            "7d17cf6c19d0561c329997784e411ee5e960eb8903d8185fadd33a25d0b6ef65"
        );
        assert_eq!(
            request.signature("testsecret"),
            "67f449f8a47293e63987932a65007bbe237800dde735e9da050b29a0a75d38bd"
        );
    }

    #[test]
    fn v3_authorization_parses_and_rejects_garbage() {
        let parsed = parse_v3_authorization(
            "ACS3-HMAC-SHA256 Credential=id,SignedHeaders=Host;x-acs-date,Signature=abc",
        )
        .unwrap();
        assert_eq!(parsed.access_key_id, "id");
        assert_eq!(parsed.signed_headers, vec!["host", "x-acs-date"]);
        assert_eq!(parsed.signature, "abc");
        assert!(parse_v3_authorization("ACS3-HMAC-SHA256 Credential=id").is_none());
        assert!(parse_v3_authorization("Bearer xyz").is_none());
        assert!(
            parse_v3_authorization("ACS3-HMAC-SHA256 Credential=,SignedHeaders=h,Signature=s")
                .is_none()
        );
    }
}
