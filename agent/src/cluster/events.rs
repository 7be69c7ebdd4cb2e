//! Events about this node's pods (and the claims it expands), written to the apiserver the way
//! the kubelet's event recorder does: an event seen again within ten minutes (same object, field
//! path, type, reason and message) increments the `count` of the first one instead of creating
//! another.
//! Writing never blocks a pod: events queue here, a failed write is retried a few times and
//! then dropped, and a long outage drops the oldest beyond [`MAX_QUEUE`].

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

/// The Event the kubelet would create for `r`.
pub fn new_event(r: &EventRecord, node: &str, now: SystemTime) -> Event {
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
        let now = SystemTime::now();
        let mut done = false;
        for attempt in 0..ATTEMPTS {
            let result = match seen.get(&k) {
                Some(s) => {
                    let patch = serde_json::json!({
                        "count": s.count + 1,
                        "lastTimestamp": time(now),
                    });
                    api.patch(&s.name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| (s.name.clone(), s.count + 1))
                }
                None => {
                    let ev = new_event(&r, &node, now);
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
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    seen.remove(&k);
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "cannot write an event");
                    tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                }
            }
        }
        if !done {
            tracing::warn!(reason = %r.reason, pod = %r.name, "event dropped: the apiserver did not take it");
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
        };
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let e = new_event(&r, "node1", t);
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
        let e = new_event(&claim, "node1", t);
        assert_eq!(
            e.involved_object.kind.as_deref(),
            Some("PersistentVolumeClaim")
        );
        assert_eq!(e.involved_object.api_version.as_deref(), Some("v1"));
        assert_eq!(e.involved_object.name.as_deref(), Some("data-web-0"));
    }
}
