//! Kubernetes quantities (`100m`, `64Mi`, `1.5Gi`) as apimachinery's `resource.Quantity`
//! parses them, in thousandths of a unit, capped like Kubernetes; and a container's cpu and
//! memory numbers after the apiserver's defaulting.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Why a Kubernetes quantity string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("empty quantity")]
    Empty,
    #[error("no digits")]
    NoDigits,
    #[error("unknown suffix {0:?}")]
    Suffix(String),
    #[error("too many digits")]
    TooLong,
}

/// An exactly parsed quantity, kept as thousandths rounded up (away from zero) like
/// `Quantity.MilliValue()`; the largest magnitude is capped at 2^63-1 units like Kubernetes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ParsedQuantity {
    milli: i128,
}

const QUANTITY_CAP_MILLI: i128 = (i64::MAX as i128) * 1000;

impl ParsedQuantity {
    pub fn from_milli(milli: i128) -> Self {
        Self {
            milli: milli.clamp(-QUANTITY_CAP_MILLI, QUANTITY_CAP_MILLI),
        }
    }
    /// `MilliValue()`: thousandths, rounded up.
    pub fn milli_value(self) -> i128 {
        self.milli
    }
    /// `Value()`: units, rounded up.
    pub fn value(self) -> i128 {
        ceil_div(self.milli, 1000)
    }
    pub fn is_zero(self) -> bool {
        self.milli == 0
    }
}

/// `n / d` rounded away from zero when inexact (towards +infinity for positive results).
pub fn ceil_div(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d != 0 && ((n > 0) == (d > 0)) {
        q + 1
    } else {
        q
    }
}

/// Parses a Kubernetes quantity (`100m`, `0.5`, `2`, `64Mi`, `1G`, `1e3`, `128974848`) exactly.
pub fn parse_quantity(s: &str) -> Result<ParsedQuantity, QuantityError> {
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let (negative, rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let int_part = &rest[..int_len];
    let mut after = &rest[int_len..];
    let mut frac_part = "";
    if let Some(stripped) = after.strip_prefix('.') {
        let frac_len = stripped.bytes().take_while(u8::is_ascii_digit).count();
        frac_part = &stripped[..frac_len];
        after = &stripped[frac_len..];
    }
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(QuantityError::NoDigits);
    }
    let (dec_exp, bin_pow): (i64, u32) = match after {
        "" => (0, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        other => {
            let exp = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .filter(|e| {
                    let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                })
                .and_then(|e| e.parse::<i64>().ok())
                .ok_or_else(|| QuantityError::Suffix(other.to_string()))?;
            (exp, 0)
        }
    };
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 36 {
        return Err(QuantityError::TooLong);
    }
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| QuantityError::TooLong)?
    };
    // value * 1000 = mantissa * 2^bin_pow * 10^(dec_exp - frac_len + 3)
    let scale = dec_exp - frac_part.len() as i64 + 3;
    let mut v = mantissa
        .checked_mul(1i128 << bin_pow)
        .unwrap_or(QUANTITY_CAP_MILLI);
    if v != 0 {
        if scale >= 0 {
            for _ in 0..scale {
                v = v.saturating_mul(10);
                if v >= QUANTITY_CAP_MILLI {
                    break;
                }
            }
        } else if scale < -36 {
            v = 1;
        } else {
            v = ceil_div(v, 10i128.pow((-scale) as u32));
        }
    }
    Ok(ParsedQuantity::from_milli(if negative { -v } else { v }))
}

/// The quantity `name` of a resource list, when it parses.
pub fn quantity_in(
    list: Option<&BTreeMap<String, Quantity>>,
    name: &str,
) -> Option<ParsedQuantity> {
    list.and_then(|l| l.get(name))
        .and_then(|q| parse_quantity(&q.0).ok())
}

/// Whether `name` can be set at the pod level (`spec.resources`, the PodLevelResources feature,
/// beta and on by default at 1.36): cpu, memory and hugepages (component-helpers'
/// `IsSupportedPodLevelResource`).
pub fn is_pod_level_resource(name: &str) -> bool {
    name == "cpu" || name == "memory" || name.starts_with("hugepages-")
}

fn names_pod_level(list: Option<&BTreeMap<String, Quantity>>) -> bool {
    list.is_some_and(|l| l.keys().any(|k| is_pod_level_resource(k)))
}

/// The pod's `spec.resources`, as written.
pub fn pod_level(pod: &Pod) -> Option<&ResourceRequirements> {
    pod.spec.as_ref().and_then(|s| s.resources.as_ref())
}

/// `IsPodLevelResourcesSet`: pod-level requests or limits name a supported resource.
pub fn pod_level_resources_set(pod: &Pod) -> bool {
    pod_level(pod)
        .is_some_and(|r| names_pod_level(r.requests.as_ref()) || names_pod_level(r.limits.as_ref()))
}

/// `IsPodLevelRequestsSet`.
pub fn pod_level_requests_set(pod: &Pod) -> bool {
    pod_level(pod).is_some_and(|r| names_pod_level(r.requests.as_ref()))
}

/// `IsPodLevelLimitsSet`.
pub fn pod_level_limits_set(pod: &Pod) -> bool {
    pod_level(pod).is_some_and(|r| names_pod_level(r.limits.as_ref()))
}

/// The pod-level request of `name` in thousandths, when pod-level requests are set and name it.
pub fn pod_level_request(pod: &Pod, name: &str) -> Option<i128> {
    if !pod_level_requests_set(pod) || !is_pod_level_resource(name) {
        return None;
    }
    quantity_in(pod_level(pod).and_then(|r| r.requests.as_ref()), name)
        .map(ParsedQuantity::milli_value)
}

/// The pod-level limit of `name` in thousandths, when pod-level resources are set and the
/// limits name it (`PodLimits` takes it over the containers' sum then).
pub fn pod_level_limit(pod: &Pod, name: &str) -> Option<i128> {
    if !pod_level_resources_set(pod) || !is_pod_level_resource(name) {
        return None;
    }
    quantity_in(pod_level(pod).and_then(|r| r.limits.as_ref()), name)
        .map(ParsedQuantity::milli_value)
}

/// The cpu and memory numbers of one container, in thousandths, after the apiserver's
/// defaulting (a missing request takes the limit's value).
#[derive(Clone, Copy, Debug, Default)]
pub struct ContainerRes {
    pub cpu_request: Option<i128>,
    pub cpu_limit: Option<i128>,
    pub memory_request: Option<i128>,
    pub memory_limit: Option<i128>,
}

pub fn container_res(c: &Container) -> ContainerRes {
    let res = c.resources.as_ref();
    let limits = res.and_then(|r| r.limits.as_ref());
    let requests = res.and_then(|r| r.requests.as_ref());
    let get = |name: &str| {
        let limit = quantity_in(limits, name).map(ParsedQuantity::milli_value);
        let request = match requests.and_then(|r| r.get(name)) {
            Some(q) => parse_quantity(&q.0).ok().map(ParsedQuantity::milli_value),
            None => limit,
        };
        (request, limit)
    };
    let (cpu_request, cpu_limit) = get("cpu");
    let (memory_request, memory_limit) = get("memory");
    ContainerRes {
        cpu_request,
        cpu_limit,
        memory_request,
        memory_limit,
    }
}

/// `NewQuantity(v, BinarySI).String()`: `100Mi`, `1536`, `12Ki`; under 1024 as a decimal.
pub fn binary_si(v: i64) -> String {
    if v.abs() < 1024 {
        return decimal_si(v);
    }
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let (mut n, mut i) = (v, 0);
    while n % 1024 == 0 && i < 6 {
        n /= 1024;
        i += 1;
    }
    format!("{n}{}", SUFFIXES[i])
}

/// `NewQuantity(v, DecimalSI).String()`: `1500`, `2k`, `3M`.
pub fn decimal_si(v: i64) -> String {
    const SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    if v == 0 {
        return "0".into();
    }
    let (mut n, mut i) = (v, 0);
    while n % 1000 == 0 && i < 6 {
        n /= 1000;
        i += 1;
    }
    format!("{n}{}", SUFFIXES[i])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn milli(s: &str) -> i128 {
        parse_quantity(s).expect("quantity").milli_value()
    }

    #[test]
    fn quantity_table() {
        let cases: &[(&str, i128)] = &[
            ("100m", 100),
            ("0.5", 500),
            ("2", 2000),
            ("0", 0),
            ("0m", 0),
            ("1.5", 1500),
            (".5", 500),
            ("5.", 5000),
            ("+3", 3000),
            ("-1", -1000),
            ("0.1m", 1),
            ("0.0001", 1),
            ("64Mi", 64 * 1024 * 1024 * 1000),
            ("1Ki", 1024 * 1000),
            ("1.5Gi", 1536 * 1024 * 1024 * 1000),
            ("1G", 1_000_000_000 * 1000),
            ("1k", 1_000_000),
            ("1M", 1_000_000_000),
            ("1e3", 1_000_000),
            ("1E3", 1_000_000),
            ("1e-3", 1),
            ("1e+2", 100_000),
            ("128974848", 128_974_848_000),
            ("129e6", 129_000_000_000),
            ("123Mi", 123 * 1024 * 1024 * 1000),
            ("1E", 1_000_000_000_000_000_000_000),
            ("1Ei", (1i128 << 60) * 1000),
        ];
        for (input, want) in cases {
            assert_eq!(milli(input), *want, "{input}");
        }
        assert_eq!(parse_quantity("64Mi").unwrap().value(), 67_108_864);
        assert_eq!(parse_quantity("0.5").unwrap().value(), 1);
        assert_eq!(parse_quantity("100m").unwrap().value(), 1);
    }

    #[test]
    fn quantity_errors_and_cap() {
        for bad in [
            "", "abc", "1x", "Mi", "1 Mi", "1e", "1.2.3", ".", "1KiB", "--1", "1e3.5",
        ] {
            assert!(parse_quantity(bad).is_err(), "{bad:?} should fail");
        }
        // Capped at 2^63-1 units like Kubernetes.
        assert_eq!(parse_quantity("100Ei").unwrap().value(), i64::MAX as i128);
    }
}
