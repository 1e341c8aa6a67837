use super::*;

fn load(env: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Settings::load_from(None, env)
}

#[test]
fn defaults_are_the_embedded_default() {
    let s = Settings::defaults();
    assert_eq!(s.http.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
    assert_eq!(s.metrics.listen, None);
    assert_eq!(
        s.http.country_header,
        Some(HeaderName::from_static("cloudfront-viewer-country"))
    );
    assert_eq!(s.storage.backend, StorageBackend::Sqlite);
    assert_eq!(s.events.backend, EventBackend::Inprocess);
    assert_eq!(s.links.code_length, 7);
    assert!(s.links.code_key.is_none());
    assert_eq!(s.http.public_base_url, None);
    assert_eq!(s.links.retention, Duration::from_secs(30 * 86_400));
}

#[test]
fn environment_overrides_defaults() {
    let s = load(&[
        ("SHORTENER__HTTP__LISTEN", "0.0.0.0:9000"),
        ("SHORTENER__HTTP__PUBLIC_BASE_URL", "https://sho.rt"),
        ("SHORTENER__CACHE__L1__TTL", "10m"),
        (
            "SHORTENER__LINKS__BLOCKED_HOSTS",
            "evil.example,worse.example",
        ),
        ("SHORTENER__HTTP__WORKERS", "3"),
        (
            "SHORTENER__HTTP__COUNTRY_HEADER",
            "CloudFront-Viewer-Country",
        ),
        ("SHORTENER__METRICS__LISTEN", "127.0.0.1:9464"),
        ("SHORTENER__EVENTS__KAFKA__COMPRESSION", "zstd"),
        ("OTHER__HTTP__LISTEN", "ignored"),
    ])
    .expect("valid");
    assert_eq!(s.http.listen, SocketAddr::from(([0, 0, 0, 0], 9000)));
    assert_eq!(
        s.http.public_base_url.as_ref().map(PublicBaseUrl::as_str),
        Some("https://sho.rt")
    );
    assert_eq!(s.cache.l1.ttl, Duration::from_secs(600));
    let hosts = ["evil.example", "worse.example"].map(|h| HostIdentity::parse(h).expect("valid"));
    assert_eq!(s.links.blocked_hosts, hosts);
    assert_eq!(s.http.workers, 3);
    assert_eq!(
        s.http.country_header,
        Some(HeaderName::from_static("cloudfront-viewer-country"))
    );
    assert_eq!(
        s.metrics.listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
    );
    assert_eq!(s.events.kafka.compression, Compression::Zstd);
}

#[test]
fn files_override_defaults_and_the_environment_overrides_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("10-base.toml"),
        "[http]\nworkers = 2\nlisten = \"127.0.0.1:1\"\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("20-site.toml"), "[http]\nworkers = 5\n").expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not toml").expect("write");
    let env = [(
        "SHORTENER__HTTP__LISTEN".to_string(),
        "127.0.0.1:2".to_string(),
    )];
    let s = Settings::load_from(Some(dir.path()), env).expect("valid");
    assert_eq!(s.http.workers, 5);
    assert_eq!(s.http.listen, SocketAddr::from(([127, 0, 0, 1], 2)));
}

#[test]
fn errors_name_the_bad_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "SHORTENER__HTTP__LISTEN",
            "nonsense",
            "SHORTENER__HTTP__LISTEN",
        ),
        (
            "SHORTENER__HTTP__PUBLIC_BASE_URL",
            "sho.rt",
            "SHORTENER__HTTP__PUBLIC_BASE_URL",
        ),
        (
            "SHORTENER__LINKS__CODE_LENGTH",
            "3",
            "SHORTENER__LINKS__CODE_LENGTH",
        ),
        (
            "SHORTENER__LINKS__CODE_KEY",
            "abc",
            "SHORTENER__LINKS__CODE_KEY",
        ),
        ("SHORTENER__LOG__LEVEL", "info,[", "SHORTENER__LOG__LEVEL"),
        (
            "SHORTENER__HTTP__WORKERS",
            "many",
            "SHORTENER__HTTP__WORKERS",
        ),
        (
            "SHORTENER__HTTP__MAX_CONNECTIONS",
            "0",
            "SHORTENER__HTTP__MAX_CONNECTIONS",
        ),
        (
            "SHORTENER__HTTP__COUNTRY_HEADER",
            "not a header",
            "SHORTENER__HTTP__COUNTRY_HEADER",
        ),
        (
            "SHORTENER__METRICS__LISTEN",
            "localhost",
            "SHORTENER__METRICS__LISTEN",
        ),
        (
            "SHORTENER__EVENTS__KAFKA__COMPRESSION",
            "brotli",
            "SHORTENER__EVENTS__KAFKA__COMPRESSION",
        ),
        (
            "SHORTENER__STORAGE__SQLITE__READERS",
            "0",
            "SHORTENER__STORAGE__SQLITE__READERS",
        ),
        (
            "SHORTENER__HTTP__WORKERS",
            "513",
            "SHORTENER__HTTP__WORKERS",
        ),
        (
            "SHORTENER__HTTP__SEND_TIMEOUT",
            "1000years",
            "SHORTENER__HTTP__SEND_TIMEOUT",
        ),
        (
            "SHORTENER__HTTP__SHUTDOWN_TIMEOUT",
            "500ms",
            "SHORTENER__HTTP__SHUTDOWN_TIMEOUT",
        ),
        (
            "SHORTENER__LINKS__RETENTION",
            "1000years",
            "SHORTENER__LINKS__RETENTION",
        ),
        (
            "SHORTENER__LINKS__BLOCKED_HOSTS",
            "a..b",
            "SHORTENER__LINKS__BLOCKED_HOSTS",
        ),
        (
            "SHORTENER__CACHE__L1__TTL",
            "soon",
            "SHORTENER__CACHE__L1__TTL",
        ),
        (
            "SHORTENER__STORAGE__BACKEND",
            "oracle",
            "SHORTENER__STORAGE__BACKEND",
        ),
        (
            "SHORTENER__CACHE__REDIS__URL",
            "http://cache:6379",
            "SHORTENER__CACHE__REDIS__URL",
        ),
        (
            "SHORTENER__CACHE__REDIS__URL",
            "rediss://cache:6380",
            "SHORTENER__CACHE__REDIS__URL",
        ),
        (
            "SHORTENER__EVENTS__KAFKA__MIRROR_WAIT",
            "-1s",
            "SHORTENER__EVENTS__KAFKA__MIRROR_WAIT",
        ),
    ];
    for (name, value, mentioned) in cases {
        let err = load(&[(name, value)]).expect_err(name).to_string();
        assert!(err.contains(mentioned), "{name}={value}: {err}");
    }
    // Kafka's keys are checked where Kafka is used.
    let err = load(&[
        ("SHORTENER__STORAGE__BACKEND", "scylla"),
        ("SHORTENER__EVENTS__BACKEND", "kafka"),
        ("SHORTENER__EVENTS__KAFKA__MIRROR_WAIT", "2h"),
    ])
    .expect_err("a mirror wait of 2h")
    .to_string();
    assert!(
        err.contains("SHORTENER__EVENTS__KAFKA__MIRROR_WAIT"),
        "{err}"
    );
}

#[test]
fn production_settings_are_checked_when_chosen() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("SHORTENER__STORAGE__BACKEND", "scylla"),
                ("SHORTENER__STORAGE__SCYLLA__REPLICATION", "dc1"),
            ],
            "SHORTENER__STORAGE__SCYLLA__REPLICATION",
        ),
        (
            &[
                ("SHORTENER__STORAGE__BACKEND", "scylla"),
                ("SHORTENER__STORAGE__SCYLLA__KEYSPACE", "Bad-Name"),
            ],
            "SHORTENER__STORAGE__SCYLLA__KEYSPACE",
        ),
        (
            &[
                ("SHORTENER__EVENTS__BACKEND", "kafka"),
                ("SHORTENER__EVENTS__KAFKA__LINGER", "1m"),
            ],
            "SHORTENER__EVENTS__KAFKA__LINGER",
        ),
        (
            &[
                ("SHORTENER__EVENTS__BACKEND", "kafka"),
                ("SHORTENER__EVENTS__KAFKA__TOPIC", "no spaces"),
            ],
            "SHORTENER__EVENTS__KAFKA__TOPIC",
        ),
    ];
    for (env, mentioned) in cases {
        let err = load(env).expect_err(mentioned).to_string();
        assert!(err.contains(mentioned), "{env:?}: {err}");
    }
    let s = load(&[
        ("SHORTENER__STORAGE__BACKEND", "scylla"),
        ("SHORTENER__STORAGE__SCYLLA__NODES", "a:9042,b:9042"),
        ("SHORTENER__STORAGE__SCYLLA__REPLICATION", "eu:3, us:2"),
        ("SHORTENER__CACHE__REDIS__URL", "redis://cache:6379/0"),
        ("SHORTENER__EVENTS__BACKEND", "kafka"),
    ])
    .expect("valid");
    assert_eq!(s.storage.scylla.nodes, ["a:9042", "b:9042"]);
    assert_eq!(
        s.storage.scylla.replication.datacenters(),
        [("eu".to_owned(), 3), ("us".to_owned(), 2)]
    );
    assert!(
        !format!("{s:?}").contains("redis://cache"),
        "the URL may hold a password"
    );
}

#[test]
fn unknown_keys_are_refused() {
    let err = load(&[("SHORTENER__HTTP__LISTN", "127.0.0.1:1")]).expect_err("typo");
    assert!(err.to_string().contains("listn"), "{err}");
}

#[test]
fn secrets_never_print() {
    let s = load(&[("SHORTENER__LINKS__ADMIN_TOKEN", "a-very-secret-token")]).expect("valid");
    assert_eq!(s.admin_token(), Some("a-very-secret-token"));
    assert!(!format!("{s:?}").contains("a-very-secret-token"));
}

#[test]
fn the_configuration_reference_documents_every_key() {
    let reference = include_str!("../../../docs/configuration.md");
    let all = runtime::settings::keys_of(DEFAULTS).expect("defaults parse");
    assert!(all.len() > 30, "{all:?}");
    for key in all {
        let env = env_name(&key);
        assert!(
            reference.contains(&format!("`{env}`")),
            "docs/configuration.md does not document {env}"
        );
    }
}

#[test]
fn env_names_follow_keys() {
    assert_eq!(
        env_name("cache.l1.max_bytes"),
        "SHORTENER__CACHE__L1__MAX_BYTES"
    );
}

#[test]
fn values_are_parsed_once_into_their_types() {
    let key = CodeKey::generate();
    let s = load(&[
        ("SHORTENER__HTTP__PUBLIC_BASE_URL", "https://sho.rt/x/"),
        ("SHORTENER__LINKS__CODE_KEY", &key.to_hex()),
        ("SHORTENER__STORAGE__SCYLLA__REPLICATION", " eu:3 ,us:2,"),
    ])
    .expect("valid");
    let base = s.http.public_base_url.expect("set");
    assert_eq!(base.as_str(), "https://sho.rt/x");
    assert_eq!(s.links.code_key.map(|k| k.to_hex()), Some(key.to_hex()));
    let replication = &s.storage.scylla.replication;
    assert_eq!(replication.to_string(), "eu:3,us:2");
    assert_eq!(
        replication.to_string().parse().ok().as_ref(),
        Some(replication)
    );
    for bad in [
        "ftp://sho.rt",
        "https://sho.rt/?q=1",
        "https://sho.rt/#top",
        "/relative",
    ] {
        assert!(bad.parse::<PublicBaseUrl>().is_err(), "{bad}");
    }
}

#[test]
fn regions_are_checked_against_the_store() {
    let regions = [
        ("SHORTENER__REGION__NAME", "us"),
        ("SHORTENER__REGION__ALL", "eu:0:dc_eu,us:1:dc_us"),
    ];
    let scylla = [
        ("SHORTENER__STORAGE__BACKEND", "scylla"),
        ("SHORTENER__STORAGE__SCYLLA__REPLICATION", "dc_eu:3,dc_us:3"),
        ("SHORTENER__EVENTS__BACKEND", "kafka"),
    ];
    let s = load(&[regions.as_slice(), &scylla].concat()).expect("valid");
    let all = s.region.regions().expect("regions");
    assert_eq!(all.local().datacenter, "dc_us");
    assert_eq!(s.region.name(), "us");
    // The local datacenter follows the region.
    let options = crate::startup::scylla_options(&s);
    assert_eq!(options.local_dc, "dc_us");
    assert!(options.regions.is_some());

    let refused = |extra: &[(&str, &str)], key: &str| {
        let err = load(&[regions.as_slice(), extra].concat()).expect_err("refused");
        assert!(err.to_string().contains(key), "{key}: {err}");
    };
    // Regions need one cluster across them.
    refused(&[], "region.name");
    refused(
        &[
            scylla[0],
            scylla[2],
            ("SHORTENER__STORAGE__SCYLLA__REPLICATION", "dc_eu:3"),
        ],
        "storage.scylla.replication",
    );
    refused(
        &[
            scylla[0],
            scylla[1],
            scylla[2],
            ("SHORTENER__STORAGE__SCYLLA__LOCAL_DC", "dc_eu"),
        ],
        "storage.scylla.local_dc",
    );
    // Each region's Kafka carries its changes to the others.
    refused(&[scylla[0], scylla[1]], "events.backend");
    for (key, value, says) in [
        ("SHORTENER__REGION__NAME", "", "go together"),
        ("SHORTENER__REGION__ALL", "eu:0:dc_eu,us:0:dc_us", "slot"),
        (
            "SHORTENER__REGION__ALL",
            "eu:0:dc_eu",
            "not one of the regions",
        ),
        (
            "SHORTENER__REGION__ALL",
            "eu:99:dc_eu,us:1:dc_us",
            "below 16",
        ),
    ] {
        let mut env = vec![regions[0], regions[1], scylla[0], scylla[1], scylla[2]];
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
        let err = load(&env).expect_err("refused");
        assert!(err.to_string().contains(says), "{value}: {err}");
    }
    assert!(
        load(&[("SHORTENER__STORAGE__SCYLLA__CREATE_CONSISTENCY", "quorum")]).is_err(),
        "only local_quorum or each_quorum"
    );
}
