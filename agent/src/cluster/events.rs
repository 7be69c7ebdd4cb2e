//! Events about this node's pods (and the claims it expands), written to the apiserver the way
//! the kubelet's event recorder does: an event seen again within ten minutes (same object, field
//! path, type, reason and message) increments the `count` of the first one instead of creating
//! another.
//! Writing never blocks a pod: events queue here and carry the time they happened (the
//! recorder's timestamps, not the write's). As client-go's recorder does, an event the apiserver
//! rejects (any API status: forbidden in a terminating namespace, invalid...) is dropped at once
//! and never holds up the ones behind it; only a failure to reach the apiserver is retried a few
//! times, and a long outage drops the oldest beyond [`MAX_QUEUE`].

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::pods::status::time;
use crate::pods::EventRecord;

/// Events waiting beyond this are dropped, oldest first (the kubelet's broadcaster holds 1000).
pub const MAX_QUEUE: usize = 1000;
/// How long a repeated event is folded into the first one.
const CORRELATION_WINDOW: Duration = Duration::from_secs(600);
const ATTEMPTS: u32 = 3;

type Key = (String, String, Option<String>, String, String, String);

struct Seen {
    name: String,
    count: i32,
    at: Instant,
}

fn key(r: &EventRecord) -> Key {
    (
        r.namespace.clone(),
        r.uid.clone(),
        r.field_path.clone(),
        r.type_.clone(),
        r.reason.clone(),
        r.message.clone(),
    )
}

/// Is a failed write worth retrying? Only when the apiserver was not reached (client-go's
/// `recordEvent`: a `StatusError` is final, "will not retry"; a connection error holds the
/// queue while it retries).
pub fn should_retry(e: &kube::Error) -> bool {
    matches!(
        e,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_)
    )
}

/// The Event the kubelet would create for `r`, stamped with the time it happened.
pub fn new_event(r: &EventRecord, node: &str) -> Event {
    let now = r.at;
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{nanos:x}", r.name)),
            namespace: Some(r.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some(r.kind.into()),
            name: Some(r.name.clone()),
            namespace: Some(r.namespace.clone()),
            uid: Some(r.uid.clone()),
            field_path: r.field_path.clone(),
            ..Default::default()
        },
        reason: Some(r.reason.clone()),
        message: Some(r.message.clone()),
        type_: Some(r.type_.clone()),
        count: Some(1),
        first_timestamp: Some(time(now)),
        last_timestamp: Some(time(now)),
        event_time: None::<MicroTime>,
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.to_string()),
        }),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.to_string()),
        ..Default::default()
    }
}

/// Writes events until the channel closes.
pub async fn run(client: Client, node: String, mut rx: UnboundedReceiver<EventRecord>) {
    let mut seen: HashMap<Key, Seen> = HashMap::new();
    while let Some(r) = rx.recv().await {
        let mut dropped = 0;
        while rx.len() > MAX_QUEUE {
            let _ = rx.try_recv();
            dropped += 1;
        }
        if dropped > 0 {
            tracing::warn!(dropped, "event queue full; dropped the oldest events");
        }
        seen.retain(|_, s| s.at.elapsed() < CORRELATION_WINDOW);
        let api: Api<Event> = Api::namespaced(client.clone(), &r.namespace);
        let k = key(&r);
        let mut done = false;
        let mut attempt = 0;
        while attempt < ATTEMPTS {
            let result = match seen.get(&k) {
                Some(s) => {
                    let patch = serde_json::json!({
                        "count": s.count + 1,
                        "lastTimestamp": time(r.at),
                    });
                    api.patch(&s.name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| (s.name.clone(), s.count + 1))
                }
                None => {
                    let ev = new_event(&r, &node);
                    api.create(&PostParams::default(), &ev)
                        .await
                        .map(|e| (e.metadata.name.unwrap_or_default(), 1))
                }
            };
            match result {
                Ok((name, count)) => {
                    seen.insert(
                        k.clone(),
                        Seen {
                            name,
                            count,
                            at: Instant::now(),
                        },
                    );
                    done = true;
                    break;
                }
                // The folded-into event is gone (expired): start a new one.
                Err(kube::Error::Api(e)) if e.code == 404 && seen.remove(&k).is_some() => {}
                Err(e) if should_retry(&e) => {
                    tracing::debug!(error = %e, attempt, "cannot reach the apiserver to write an event");
                    tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::debug!(error = %e, reason = %r.reason, pod = %r.name, "event rejected by the apiserver (will not retry)");
                    done = true;
                    break;
                }
            }
        }
        if !done {
            tracing::warn!(reason = %r.reason, pod = %r.name, "event dropped: the apiserver could not be reached");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_look_like_the_kubelets() {
        let r = EventRecord {
            kind: "Pod",
            namespace: "ns".into(),
            name: "web".into(),
            uid: "u1".into(),
            field_path: Some("spec.containers{app}".into()),
            type_: "Normal".into(),
            reason: "Started".into(),
            message: "Started container app".into(),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        };
        // Stamped when it happened, whenever it is written.
        let e = new_event(&r, "node1");
        assert_eq!(e.metadata.name.as_deref(), Some("web.18fae27693b40000"));
        assert_eq!(
            e.involved_object.field_path.as_deref(),
            Some("spec.containers{app}")
        );
        assert_eq!(e.involved_object.uid.as_deref(), Some("u1"));
        assert_eq!(
            e.source.as_ref().and_then(|s| s.host.as_deref()),
            Some("node1")
        );
        assert_eq!(e.count, Some(1));
        let json = serde_json::to_value(&e).unwrap_or_default();
        assert_eq!(json["firstTimestamp"], "2027-01-15T08:00:00Z");
        assert_eq!(json["involvedObject"]["kind"], "Pod");
        let claim = EventRecord {
            kind: "PersistentVolumeClaim",
            name: "data-web-0".into(),
            field_path: None,
            ..r
        };
        let e = new_event(&claim, "node1");
        assert_eq!(
            e.involved_object.kind.as_deref(),
            Some("PersistentVolumeClaim")
        );
        assert_eq!(e.involved_object.api_version.as_deref(), Some("v1"));
        assert_eq!(e.involved_object.name.as_deref(), Some("data-web-0"));
    }

    #[test]
    fn only_unreachable_apiservers_are_retried() {
        let status = |code: u16, reason: &str| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                reason: reason.into(),
                message: "rejected".into(),
                ..Default::default()
            }))
        };
        // Rejections: forbidden (terminating namespace), invalid, conflict, server errors.
        for e in [
            status(403, "Forbidden"),
            status(422, "Invalid"),
            status(409, "AlreadyExists"),
            status(500, "InternalError"),
        ] {
            assert!(!should_retry(&e), "{e}");
        }
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(should_retry(&kube::Error::Service(Box::new(refused))));
        let read = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof");
        assert!(should_retry(&kube::Error::ReadEvents(read)));
    }
}
