//! `infra/docker-compose.yml` cannot run here (no Docker engine), so this
//! keeps it honest: it parses, it has the services, images and ports the
//! documentation promises, the API's environment is a valid configuration of the
//! production tier under the documented keys, and the other files it names
//! exist and agree with it.

use std::{collections::BTreeMap, path::PathBuf};

use serde_yaml_ng::Value;
use shortener_api::config::{EventBackend, LoadSettings, Settings, StorageBackend};

fn infra(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../infra")
        .join(path)
}

fn compose() -> Value {
    let text = std::fs::read_to_string(infra("docker-compose.yml")).expect("read compose file");
    let mut value: Value = serde_yaml_ng::from_str(&text).expect("compose file is YAML");
    value.apply_merge().expect("merge keys resolve");
    value
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_mapping()
        .expect("environment as a map")
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => panic!("unexpected value {other:?}"),
            };
            (k.as_str().expect("key").to_owned(), value)
        })
        .collect()
}

fn ports(service: &Value) -> Vec<String> {
    service["ports"]
        .as_sequence()
        .map(|ports| {
            ports
                .iter()
                .map(|p| p.as_str().expect("port mapping").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_services_run_the_real_servers_on_their_usual_ports() {
    let compose = compose();
    let image = |name: &str| {
        service(&compose, name)["image"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert!(image("scylla").starts_with("scylladb/scylla:"));
    assert!(image("redis").starts_with("redis:"));
    assert!(image("kafka").starts_with("apache/kafka:"));
    assert!(image("nginx").starts_with("nginx:"));
    // The same ports as the dev stack's servers, and nginx in front.
    assert_eq!(ports(service(&compose, "scylla")), ["9042:9042"]);
    assert_eq!(ports(service(&compose, "redis")), ["6379:6379"]);
    assert_eq!(ports(service(&compose, "kafka")), ["9092:9092"]);
    assert_eq!(ports(service(&compose, "nginx")), ["8080:8080"]);
    let kafka = environment(service(&compose, "kafka"));
    assert_eq!(kafka["KAFKA_PROCESS_ROLES"], "broker,controller", "KRaft");
    for name in ["scylla", "redis", "kafka", "api-1", "api-2"] {
        assert!(
            service(&compose, name).get("healthcheck").is_some() || name.starts_with("api"),
            "{name} has no health check"
        );
    }
}

#[test]
fn the_api_environment_is_a_valid_production_configuration() {
    let compose = compose();
    for name in ["api-1", "api-2", "migrate"] {
        let env = environment(service(&compose, name));
        for key in [
            "SHORTENER__STORAGE__BACKEND",
            "SHORTENER__STORAGE__SCYLLA__NODES",
            "SHORTENER__STORAGE__SCYLLA__LOCAL_DC",
            "SHORTENER__CACHE__REDIS__URL",
            "SHORTENER__EVENTS__BACKEND",
            "SHORTENER__EVENTS__KAFKA__BROKERS",
        ] {
            assert!(env.contains_key(key), "{name} does not set {key}");
        }
        let settings = Settings::load_from(None, env.clone())
            .unwrap_or_else(|e| panic!("{name}'s environment is refused: {e}"));
        assert_eq!(settings.storage.backend, StorageBackend::Scylla);
        assert_eq!(settings.storage.scylla.nodes, ["scylla:9042"]);
        assert_eq!(settings.cache.redis.url(), Some("redis://redis:6379/0"));
        assert_eq!(settings.events.backend, EventBackend::Kafka);
        assert_eq!(settings.events.kafka.brokers, "kafka:9092");
        // The datacenter the API prefers is one its keyspace replicates to.
        let replication = settings.storage.scylla.replication.datacenters();
        assert!(
            replication
                .iter()
                .any(|(dc, _)| *dc == settings.storage.scylla.local_dc)
        );
        let port = settings.http.listen.port();
        assert_eq!(port, 8080);
    }
    let migrate = service(&compose, "migrate");
    assert_eq!(migrate["command"][0].as_str(), Some("migrate"));
}

#[test]
fn the_worker_environment_is_a_valid_worker_configuration_on_the_same_keyspace_and_topic() {
    let compose = compose();
    let api = Settings::load_from(None, environment(service(&compose, "api-1")))
        .expect("the API's environment is valid");
    let worker = service(&compose, "worker");
    let settings = shortener_worker::config::Settings::load_from(None, environment(worker))
        .unwrap_or_else(|e| panic!("the worker's environment is refused: {e}"));
    assert_eq!(settings.storage.scylla.nodes, api.storage.scylla.nodes);
    assert_eq!(
        settings.storage.scylla.keyspace,
        api.storage.scylla.keyspace
    );
    assert_eq!(
        settings.storage.scylla.local_dc,
        api.storage.scylla.local_dc
    );
    assert_eq!(settings.events.kafka.brokers, api.events.kafka.brokers);
    assert_eq!(settings.events.kafka.topic, api.events.kafka.topic);
    // Time to write, commit and leave the group on `docker compose stop`.
    let grace = worker["stop_grace_period"]
        .as_str()
        .expect("stop_grace_period");
    let grace = humantime_serde::re::humantime::parse_duration(grace).expect("a duration");
    assert!(grace > settings.worker.shutdown_timeout, "{grace:?}");
    for needs in ["migrate", "kafka", "scylla"] {
        assert!(
            worker["depends_on"].get(needs).is_some(),
            "the worker does not wait for {needs}"
        );
    }
}

#[test]
fn nginx_balances_both_instances_and_the_images_build_from_here() {
    let compose = compose();
    let nginx = std::fs::read_to_string(infra("nginx/nginx.conf")).expect("nginx.conf");
    for upstream in ["server api-1:8080", "server api-2:8080"] {
        assert!(nginx.contains(upstream), "nginx.conf lacks {upstream}");
    }
    assert!(nginx.contains("proxy_next_upstream"));
    let volume = service(&compose, "nginx")["volumes"][0]
        .as_str()
        .expect("volume");
    assert!(volume.starts_with("./nginx/nginx.conf:"));

    for (name, binary) in [("api-1", "shortener-api"), ("worker", "shortener-worker")] {
        let build = &service(&compose, name)["build"];
        assert_eq!(build["context"].as_str(), Some(".."));
        let dockerfile = build["dockerfile"].as_str().expect("dockerfile");
        let text = std::fs::read_to_string(infra("..").join(dockerfile))
            .unwrap_or_else(|e| panic!("{dockerfile}: {e}"));
        let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
        assert!(stages >= 2, "{dockerfile} is not multi-stage");
        assert!(
            text.contains(&format!("cargo build --release --locked -p {binary}")),
            "{dockerfile} does not build {binary}"
        );
    }
    // The APIs' health check asks readiness, as the load balancer does.
    let api = std::fs::read_to_string(infra("docker/api.Dockerfile")).expect("Dockerfile");
    assert!(api.contains("/readyz"));
}

/// The host paths a service mounts, by the path they appear at inside it.
fn mounts(service: &Value) -> BTreeMap<String, PathBuf> {
    service["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .map(|volume| {
            let spec = volume.as_str().expect("a short volume spec");
            let mut parts = spec.split(':');
            let host = infra(parts.next().expect("a host path"));
            let inside = parts.next().expect("a container path").to_owned();
            assert!(host.exists(), "{spec}: {} does not exist", host.display());
            (inside, host)
        })
        .collect()
}

#[test]
fn prometheus_scrapes_every_instance_on_its_metrics_port_with_the_rules_and_grafana_has_the_dashboards()
 {
    let compose = compose();
    let api = Settings::load_from(None, environment(service(&compose, "api-1")))
        .expect("the API's environment is valid");
    let api_port = api.metrics.listen.expect("an admin listener").port();
    let worker = shortener_worker::config::Settings::load_from(
        None,
        environment(service(&compose, "worker")),
    )
    .expect("the worker's environment is valid");
    let worker_port = worker.worker.metrics_listen.port();
    // Both send spans to the compose file's Jaeger.
    assert_eq!(api.traces.endpoint, "http://jaeger:4317");
    assert_eq!(worker.traces.endpoint, "http://jaeger:4317");
    assert!(
        service(&compose, "jaeger")["image"]
            .as_str()
            .is_some_and(|image| image.starts_with("jaegertracing/jaeger:2"))
    );

    let prometheus = service(&compose, "prometheus");
    let files = mounts(prometheus);
    let config: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(&files["/etc/prometheus/prometheus.yml"]).expect("config"),
    )
    .expect("YAML");
    let rules = config["rule_files"][0].as_str().expect("a rule file");
    assert_eq!(
        files[rules].canonicalize().expect("rules"),
        infra("../dashboards/prometheus/alerts.yml")
            .canonicalize()
            .expect("rules")
    );
    let job = |name: &str| {
        config["scrape_configs"]
            .as_sequence()
            .expect("scrape configs")
            .iter()
            .find(|job| job["job_name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no job {name}: the alert rules and dashboards use it"))
            .clone()
    };
    let targets: Vec<String> = job("shortener-api")["static_configs"][0]["targets"]
        .as_sequence()
        .expect("targets")
        .iter()
        .filter_map(|target| target.as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        targets,
        [format!("api-1:{api_port}"), format!("api-2:{api_port}")]
    );
    let workers = job("shortener-worker");
    assert_eq!(
        workers["dns_sd_configs"][0]["names"][0].as_str(),
        Some("worker")
    );
    assert_eq!(
        workers["dns_sd_configs"][0]["port"].as_u64(),
        Some(u64::from(worker_port))
    );

    let grafana = service(&compose, "grafana");
    let files = mounts(grafana);
    assert!(
        files["/etc/grafana/provisioning"]
            .join("datasources")
            .is_dir()
    );
    assert!(
        files["/var/lib/grafana/dashboards/shortener"]
            .join("overview.json")
            .is_file()
    );
    assert_eq!(
        environment(grafana)["PROMETHEUS_URL"],
        "http://prometheus:9090"
    );
}
