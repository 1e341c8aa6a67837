//! The API and the worker together, on the dev stack's real Kafka and
//! Cassandra: clicks through the API are counted by the worker and read by
//! the stats API; and the metrics, dashboards, alert rules and traces that
//! make all of it observable.

mod end_to_end;
mod observability;

use std::time::Duration;

use shortener_api::config::{EventBackend, LoadSettings, Settings, StorageBackend};
use shortener_testkit::{deployment::Deployment, stack::brokers};

/// An API on the deployment's keyspace and topic (production tier, events
/// to Kafka, no Redis), listening on a free port.
pub fn api_settings(deployment: &Deployment) -> Settings {
    let mut s = Settings::defaults();
    let o = &deployment.options;
    s.http.listen = ([127, 0, 0, 1], 0).into();
    s.storage.backend = StorageBackend::Scylla;
    s.storage.scylla.nodes = o.nodes.clone();
    s.storage.scylla.local_dc = o.local_dc.clone();
    s.storage.scylla.keyspace = o.keyspace.clone();
    s.storage.scylla.replication = format!("{}:{}", o.replication[0].0, o.replication[0].1)
        .parse()
        .expect("valid replication");
    s.storage.scylla.request_timeout = Duration::from_secs(10);
    s.events.backend = EventBackend::Kafka;
    s.events.kafka.brokers = brokers();
    s.events.kafka.topic = deployment.topic.clone();
    s.events.kafka.create_topic = false;
    s
}
