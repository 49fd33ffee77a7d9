//! Events published off the reconcile path. A pass queues its notes and goes on; one task
//! publishes them in order. As with client-go's event broadcaster, events are best effort:
//! the queue is bounded and a full one drops (and counts) an event rather than slowing the
//! pass (each event is an API call; a large policy's first pass has dozens).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::operator::events::Note;

/// Events waiting to be published, at most.
const CAPACITY: usize = 4096;

/// Where passes leave their events.
pub struct EventQueue {
    tx: mpsc::Sender<(Event, ObjectReference)>,
    dropped: Counter,
}

impl EventQueue {
    /// Starts the publishing task (it ends when the queue is dropped).
    pub fn start(recorder: Recorder, dropped: Counter) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Event, ObjectReference)>(CAPACITY);
        tokio::spawn(async move {
            while let Some((event, about)) = rx.recv().await {
                if let Err(e) = recorder.publish(&event, &about).await {
                    tracing::warn!(error = %e, reason = %event.reason, "could not publish event");
                }
            }
        });
        EventQueue { tx, dropped }
    }

    /// Queues `note` about `about`; never waits.
    pub fn send(&self, about: ObjectReference, note: Note) {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.into(),
            note: Some(note.message.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.tx.try_send((event, about)) {
            self.dropped.inc();
            let (event, _) = e.into_inner();
            tracing::warn!(reason = %event.reason, "event queue full: event dropped");
        }
    }
}
