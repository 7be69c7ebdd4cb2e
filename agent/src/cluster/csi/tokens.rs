//! Service account tokens for CSI drivers (a CSIDriver's `tokenRequests`), as the kubelet hands
//! them over: in the volume context or in NodePublishVolume's secrets.

use bosun_volumes::csi::{self, CsiVolume, PodInfo};

/// The service account tokens a CSIDriver asked for (`tokenRequests`), as JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountTokens {
    pub json: String,
    /// `serviceAccountTokenInSecrets`: in NodePublishVolume's secrets, not its volume context.
    pub in_secrets: bool,
}

/// The kubelet's `csi.storage.k8s.io/serviceAccount.tokens` value: a JSON object of audience
/// -> `{token, expirationTimestamp}` (RFC 3339, seconds).
pub fn tokens_json(tokens: &[(String, String, std::time::SystemTime)]) -> String {
    let mut m = serde_json::Map::new();
    for (audience, token, expires) in tokens {
        let at = k8s_openapi::jiff::Timestamp::try_from(*expires)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        m.insert(
            audience.clone(),
            serde_json::json!({"token": token, "expirationTimestamp": at}),
        );
    }
    serde_json::Value::Object(m).to_string()
}

/// Hands the tokens to the driver where the CSIDriver wants them.
pub(super) fn give_tokens(
    vol: &mut CsiVolume,
    info: &mut PodInfo,
    tokens: Option<ServiceAccountTokens>,
) {
    let Some(t) = tokens else { return };
    if t.in_secrets {
        vol.publish_secrets.insert(
            csi::pod_info_keys::SERVICE_ACCOUNT_TOKENS.to_string(),
            t.json,
        );
    } else {
        info.service_account_tokens = Some(t.json);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn service_account_tokens_like_the_kubelet() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let json = tokens_json(&[
            ("vault".into(), "t1".into(), at),
            ("".into(), "t2".into(), at),
        ]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(v["vault"]["token"], "t1");
        assert_eq!(v["vault"]["expirationTimestamp"], "2027-01-15T08:00:00Z");
        assert_eq!(v[""]["token"], "t2");
        let t = ServiceAccountTokens {
            json: json.clone(),
            in_secrets: false,
        };
        let mut vol = CsiVolume::new("d", "h", "pv");
        let mut info = PodInfo::default();
        give_tokens(&mut vol, &mut info, Some(t.clone()));
        assert_eq!(info.service_account_tokens.as_deref(), Some(json.as_str()));
        assert!(vol.publish_secrets.is_empty());
        let mut info = PodInfo::default();
        give_tokens(
            &mut vol,
            &mut info,
            Some(ServiceAccountTokens {
                in_secrets: true,
                ..t
            }),
        );
        assert!(info.service_account_tokens.is_none());
        assert_eq!(
            vol.publish_secrets
                .get("csi.storage.k8s.io/serviceAccount.tokens")
                .map(String::as_str),
            Some(json.as_str())
        );
    }
}
