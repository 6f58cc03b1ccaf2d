//! The pod annotations users already put on pods for Alibaba's virtual node, parsed and
//! validated. A malformed value is an error naming the annotation, never silently dropped.

use std::collections::BTreeMap;

use eci_types::spec;

use crate::quantity;

pub const SECURITY_GROUP: &str = "k8s.aliyun.com/eci-security-group";
pub const VSWITCH: &str = "k8s.aliyun.com/eci-vswitch";
pub const SCHEDULE_STRATEGY: &str = "k8s.aliyun.com/eci-schedule-strategy";
pub const RAM_ROLE_NAME: &str = "k8s.aliyun.com/eci-ram-role-name";
pub const USE_SPECS: &str = "k8s.aliyun.com/eci-use-specs";
pub const SPOT_STRATEGY: &str = "k8s.aliyun.com/eci-spot-strategy";
pub const SPOT_PRICE_LIMIT: &str = "k8s.aliyun.com/eci-spot-price-limit";
pub const SPOT_DURATION: &str = "k8s.aliyun.com/eci-spot-duration";
pub const SPOT_RELEASE_STRATEGY: &str = "k8s.aliyun.com/eci-spot-release-strategy";
pub const CPU_OPTION_CORE: &str = "k8s.aliyun.com/eci-cpu-option-core";
pub const CPU_OPTION_HT: &str = "k8s.aliyun.com/eci-cpu-option-ht";
pub const RESCHEDULE_ENABLE: &str = "k8s.aliyun.com/eci-reschedule-enable";
pub const FAIL_ON_CREATE_ERR: &str = "k8s.aliyun.com/pod-fail-on-create-err";
pub const IMAGE_SNAPSHOT_ID: &str = "k8s.aliyun.com/eci-image-snapshot-id";
pub const IMAGE_CACHE: &str = "k8s.aliyun.com/eci-image-cache";
pub const ACR_INSTANCE_ID: &str = "k8s.aliyun.com/acr-instance-id";
pub const INSECURE_REGISTRY: &str = "k8s.aliyun.com/insecure-registry";
pub const EIP_INSTANCE_ID: &str = "k8s.aliyun.com/eci-eip-instanceid";
pub const WITH_EIP: &str = "k8s.aliyun.com/eci-with-eip";
pub const EIP_BANDWIDTH: &str = "k8s.aliyun.com/eip-bandwidth";
pub const EIP_BANDWIDTH_PACKAGE: &str = "k8s.aliyun.com/eip-common-bandwidth-package-id";
pub const EIP_ISP: &str = "k8s.aliyun.com/eip-isp";
pub const EIP_CHARGE_TYPE: &str = "k8s.aliyun.com/eip-internet-charge-type";
pub const ENABLE_IPV6: &str = "k8s.aliyun.com/eci-enable-ipv6";
pub const INGRESS_BANDWIDTH: &str = "kubernetes.io/ingress-bandwidth";
pub const EGRESS_BANDWIDTH: &str = "kubernetes.io/egress-bandwidth";
pub const EXTRA_EPHEMERAL_STORAGE: &str = "k8s.aliyun.com/eci-extra-ephemeral-storage";
pub const CORE_PATTERN: &str = "k8s.aliyun.com/eci-core-pattern";
pub const NTP_SERVER: &str = "k8s.aliyun.com/eci-ntp-server";
/// Written by vk-eci: the container group that runs the pod.
pub const INSTANCE_ID: &str = "k8s.aliyun.com/eci-instance-id";

/// The only documented release strategy.
pub const RELEASE_STRATEGY_API_EVICT: &str = "api-evict";

/// A malformed annotation value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}: `{value}` {problem}")]
pub struct AnnotationError {
    pub annotation: &'static str,
    pub value: String,
    pub problem: String,
}

/// Everything the ECI annotations of one pod ask for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EciAnnotations {
    pub security_group: Option<String>,
    pub vswitches: Vec<String>,
    pub schedule_strategy: Option<String>,
    pub ram_role_name: Option<String>,
    pub use_specs: Vec<String>,
    pub spot_strategy: Option<String>,
    pub spot_price_limit: Option<f64>,
    pub spot_duration: Option<i64>,
    pub api_evict: bool,
    pub cpu_option_core: Option<i64>,
    pub cpu_option_threads_per_core: Option<i64>,
    pub reschedule: bool,
    pub fail_on_create_error: bool,
    pub image_snapshot_id: Option<String>,
    pub image_cache: bool,
    pub acr_instance_ids: Vec<String>,
    pub insecure_registries: Option<String>,
    pub eip_instance_id: Option<String>,
    pub with_eip: bool,
    pub eip_bandwidth: Option<i64>,
    pub eip_bandwidth_package: Option<String>,
    pub eip_isp: Option<String>,
    pub eip_charge_type: Option<String>,
    pub ipv6: bool,
    pub ingress_bandwidth: Option<i64>,
    pub egress_bandwidth: Option<i64>,
    pub extra_ephemeral_storage_gib: Option<i64>,
    pub core_pattern: Option<String>,
    pub ntp_servers: Vec<String>,
}

struct Reader<'a> {
    annotations: &'a BTreeMap<String, String>,
}

impl Reader<'_> {
    fn text(&self, name: &'static str) -> Option<String> {
        self.annotations
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn error(&self, name: &'static str, problem: impl Into<String>) -> AnnotationError {
        AnnotationError {
            annotation: name,
            value: self.annotations.get(name).cloned().unwrap_or_default(),
            problem: problem.into(),
        }
    }

    fn list(&self, name: &'static str) -> Vec<String> {
        self.text(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn flag(&self, name: &'static str) -> Result<bool, AnnotationError> {
        match self.text(name) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(_) => Err(self.error(name, "is not \"true\" or \"false\"")),
        }
    }

    fn whole(
        &self,
        name: &'static str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>, AnnotationError> {
        match self.text(name) {
            None => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if range.contains(&n) => Ok(Some(n)),
                _ => Err(self.error(
                    name,
                    format!(
                        "is not a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                )),
            },
        }
    }

    fn one_of(
        &self,
        name: &'static str,
        allowed: &[&str],
    ) -> Result<Option<String>, AnnotationError> {
        match self.text(name) {
            None => Ok(None),
            Some(v) if allowed.contains(&v.as_str()) => Ok(Some(v)),
            Some(_) => Err(self.error(name, format!("is not one of {}", allowed.join(", ")))),
        }
    }

    fn prefixed(
        &self,
        name: &'static str,
        prefix: &str,
    ) -> Result<Option<String>, AnnotationError> {
        match self.text(name) {
            None => Ok(None),
            Some(v) if v.starts_with(prefix) => Ok(Some(v)),
            Some(_) => Err(self.error(name, format!("does not look like an id (`{prefix}...`)"))),
        }
    }

    fn bandwidth(&self, name: &'static str) -> Result<Option<i64>, AnnotationError> {
        match self.text(name) {
            None => Ok(None),
            Some(v) => quantity::bandwidth(&v)
                .map(Some)
                .ok_or_else(|| self.error(name, "is not a bandwidth such as 40M")),
        }
    }
}

impl EciAnnotations {
    /// Reads and validates every ECI annotation; the first malformed one is the error.
    pub fn parse(annotations: &BTreeMap<String, String>) -> Result<Self, AnnotationError> {
        let r = Reader { annotations };
        let spot_strategy = r.one_of(SPOT_STRATEGY, &["SpotAsPriceGo", "SpotWithPriceLimit"])?;
        let spot_price_limit = match r.text(SPOT_PRICE_LIMIT) {
            None => None,
            Some(v) => match v.parse::<f64>() {
                Ok(price) if price > 0.0 && price.is_finite() => Some(price),
                _ => return Err(r.error(SPOT_PRICE_LIMIT, "is not a positive price")),
            },
        };
        if spot_strategy.as_deref() == Some("SpotWithPriceLimit") && spot_price_limit.is_none() {
            return Err(r.error(
                SPOT_STRATEGY,
                format!("needs {SPOT_PRICE_LIMIT} (the hourly price cap)"),
            ));
        }
        let use_specs = r.list(USE_SPECS);
        if let Some(bad) = use_specs.iter().find(|s| spec::parse(s).is_none()) {
            return Err(r.error(
                USE_SPECS,
                format!("has `{bad}`, which is neither an ECS type (ecs.c6.large) nor a <cpu>-<memory>Gi spec"),
            ));
        }
        let release = r.one_of(SPOT_RELEASE_STRATEGY, &[RELEASE_STRATEGY_API_EVICT])?;
        let extra_ephemeral_storage_gib = match r.text(EXTRA_EPHEMERAL_STORAGE) {
            None => None,
            Some(v) => match quantity::parse(&v) {
                Some(bytes) if bytes > 0.0 => Some(quantity::gib(bytes).ceil() as i64),
                _ => return Err(r.error(EXTRA_EPHEMERAL_STORAGE, "is not a size such as 50Gi")),
            },
        };
        let core_pattern = r.text(CORE_PATTERN);
        if core_pattern.as_ref().is_some_and(|p| p.starts_with('|')) {
            return Err(r.error(CORE_PATTERN, "must be a path, not a pipe"));
        }
        Ok(Self {
            security_group: r.prefixed(SECURITY_GROUP, "sg-")?,
            vswitches: {
                let list = r.list(VSWITCH);
                if list.len() > 10 || list.iter().any(|v| !v.starts_with("vsw-")) {
                    return Err(r.error(
                        VSWITCH,
                        "is not a comma list of at most 10 vSwitch ids (vsw-...)",
                    ));
                }
                list
            },
            schedule_strategy: r.one_of(SCHEDULE_STRATEGY, &["VSwitchOrdered", "VSwitchRandom"])?,
            ram_role_name: r.text(RAM_ROLE_NAME),
            use_specs,
            spot_strategy,
            spot_price_limit,
            spot_duration: r.whole(SPOT_DURATION, 0..=6)?,
            api_evict: release.is_some(),
            cpu_option_core: r.whole(CPU_OPTION_CORE, 1..=256)?,
            cpu_option_threads_per_core: r.whole(CPU_OPTION_HT, 1..=2)?,
            reschedule: r.flag(RESCHEDULE_ENABLE)?,
            fail_on_create_error: r.flag(FAIL_ON_CREATE_ERR)?,
            image_snapshot_id: r.prefixed(IMAGE_SNAPSHOT_ID, "imc-")?,
            image_cache: r.flag(IMAGE_CACHE)?,
            acr_instance_ids: {
                let list = r.list(ACR_INSTANCE_ID);
                if list.iter().any(|v| !v.starts_with("cri-")) {
                    return Err(r.error(
                        ACR_INSTANCE_ID,
                        "is not a comma list of ACR instance ids (cri-...)",
                    ));
                }
                list
            },
            insecure_registries: r.text(INSECURE_REGISTRY),
            eip_instance_id: r.prefixed(EIP_INSTANCE_ID, "eip-")?,
            with_eip: r.flag(WITH_EIP)?,
            eip_bandwidth: r.whole(EIP_BANDWIDTH, 1..=1_000_000)?,
            eip_bandwidth_package: r.prefixed(EIP_BANDWIDTH_PACKAGE, "cbwp-")?,
            eip_isp: r.one_of(EIP_ISP, &["BGP", "BGP_PRO"])?,
            eip_charge_type: r.one_of(EIP_CHARGE_TYPE, &["PayByBandwidth", "PayByTraffic"])?,
            ipv6: r.flag(ENABLE_IPV6)?,
            ingress_bandwidth: r.bandwidth(INGRESS_BANDWIDTH)?,
            egress_bandwidth: r.bandwidth(EGRESS_BANDWIDTH)?,
            extra_ephemeral_storage_gib,
            core_pattern,
            ntp_servers: r.list(NTP_SERVER),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<EciAnnotations, AnnotationError> {
        EciAnnotations::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn reads_every_annotation() {
        let parsed = parse(&[
            (SECURITY_GROUP, "sg-1"),
            (VSWITCH, "vsw-a, vsw-b"),
            (SCHEDULE_STRATEGY, "VSwitchRandom"),
            (RAM_ROLE_NAME, "role"),
            (USE_SPECS, "2-4Gi,ecs.c6.xlarge"),
            (SPOT_STRATEGY, "SpotWithPriceLimit"),
            (SPOT_PRICE_LIMIT, "0.5"),
            (SPOT_DURATION, "0"),
            (SPOT_RELEASE_STRATEGY, "api-evict"),
            (CPU_OPTION_CORE, "2"),
            (CPU_OPTION_HT, "1"),
            (RESCHEDULE_ENABLE, "true"),
            (FAIL_ON_CREATE_ERR, "TRUE"),
            (IMAGE_SNAPSHOT_ID, "imc-1"),
            (IMAGE_CACHE, "true"),
            (ACR_INSTANCE_ID, "cri-1"),
            (INSECURE_REGISTRY, "harbor.local"),
            (EIP_INSTANCE_ID, "eip-1"),
            (WITH_EIP, "true"),
            (EIP_BANDWIDTH, "5"),
            (EIP_BANDWIDTH_PACKAGE, "cbwp-1"),
            (EIP_ISP, "BGP_PRO"),
            (EIP_CHARGE_TYPE, "PayByTraffic"),
            (ENABLE_IPV6, "true"),
            (INGRESS_BANDWIDTH, "40M"),
            (EGRESS_BANDWIDTH, "1G"),
            (EXTRA_EPHEMERAL_STORAGE, "50Gi"),
            (CORE_PATTERN, "/pod/data/dump/core"),
            (NTP_SERVER, "100.100.5.1,100.100.5.2"),
        ])
        .unwrap();
        assert_eq!(parsed.vswitches, ["vsw-a", "vsw-b"]);
        assert_eq!(parsed.use_specs, ["2-4Gi", "ecs.c6.xlarge"]);
        assert_eq!(parsed.spot_price_limit, Some(0.5));
        assert!(
            parsed.api_evict && parsed.reschedule && parsed.fail_on_create_error && parsed.ipv6
        );
        assert_eq!(parsed.ingress_bandwidth, Some(40_000_000));
        assert_eq!(parsed.egress_bandwidth, Some(1_000_000_000));
        assert_eq!(parsed.extra_ephemeral_storage_gib, Some(50));
        assert_eq!(parsed.ntp_servers.len(), 2);
    }

    #[test]
    fn malformed_values_name_the_annotation() {
        let cases: &[(&str, &str)] = &[
            (SECURITY_GROUP, "default"),
            (VSWITCH, "subnet-1"),
            (SCHEDULE_STRATEGY, "Whatever"),
            (USE_SPECS, "2-4Gi,huge"),
            (SPOT_STRATEGY, "Cheap"),
            (SPOT_PRICE_LIMIT, "free"),
            (SPOT_RELEASE_STRATEGY, "delete"),
            (CPU_OPTION_HT, "3"),
            (FAIL_ON_CREATE_ERR, "yes"),
            (EIP_BANDWIDTH, "5M"),
            (INGRESS_BANDWIDTH, "fast"),
            (EXTRA_EPHEMERAL_STORAGE, "big"),
            (CORE_PATTERN, "|/bin/dump"),
        ];
        for (name, value) in cases {
            let error = parse(&[(name, value)]).unwrap_err();
            assert_eq!(error.annotation, *name);
            assert!(error.to_string().contains(value), "{error}");
        }
        let error = parse(&[(SPOT_STRATEGY, "SpotWithPriceLimit")]).unwrap_err();
        assert!(error.to_string().contains(SPOT_PRICE_LIMIT));
    }

    #[test]
    fn nothing_means_defaults() {
        assert_eq!(parse(&[]).unwrap(), EciAnnotations::default());
    }
}
