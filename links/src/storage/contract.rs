//! The contract every [`LinkStore`] adapter passes.
//!
//! An adapter's test crate instantiates the suite with
//! [`link_store_contract!`](crate::link_store_contract), giving it an async
//! function that returns a fresh, empty store (its own file, keyspace, …):
//!
//! ```text
//! links::link_store_contract!(fresh_store);
//! ```

use std::{any::Any, collections::HashSet, sync::Arc};

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::{LinkStore, StoreError, Uniqueness};
use crate::{
    clicks::{Aggregator, ClickEvent, Counts, Dimension, Granularity, UserAgentClassifier},
    code::Code,
    link::{Link, LinkChanges, ManageToken, RedirectStatus},
    stats::StatsQuery,
    target::{TargetUrl, UrlPolicy},
};

/// A store under test, with whatever keeps its backing resources alive.
pub struct Fixture {
    pub store: Arc<dyn LinkStore>,
    pub guard: Box<dyn Any + Send>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Generates one `#[tokio::test]` per contract case for an adapter.
#[macro_export]
macro_rules! link_store_contract {
    ($fixture:path) => {
        $crate::link_store_contract!(@cases $fixture;
            inserted_links_read_back_equal,
            generated_codes_insert_unchecked,
            a_taken_code_conflicts_and_keeps_the_original,
            racing_inserts_of_one_alias_admit_exactly_one,
            unknown_codes_read_as_none,
            id_leases_never_overlap,
            reserved_ids_are_skipped_by_leases,
            every_alias_id_can_be_set_aside,
            updates_apply_to_live_links_only,
            deletes_mark_links_once,
            every_change_counts_a_revision,
            expired_links_still_read_back,
            click_batches_accumulate_into_stats,
            stats_of_a_link_never_clicked_are_zero,
            settings_keep_the_first_value,
            ping_answers,
        );
    };
    (@cases $fixture:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::storage::contract::$case($fixture().await).await;
            }
        )*
    };
}

fn policy() -> UrlPolicy {
    UrlPolicy::new(2048, [])
}

/// A link with a code unique to this test run.
pub fn sample_link(tag: &str) -> Link {
    let code = format!("{tag}{:06}", rand::random::<u32>() % 1_000_000);
    Link {
        code: Code::parse(&code).expect("valid code"),
        url: TargetUrl::parse(&format!("https://example.com/{tag}?q=1#top"), &policy())
            .expect("valid URL"),
        // Whole milliseconds: what every store keeps.
        created_at: DateTime::from_timestamp_millis(Utc::now().timestamp_millis())
            .expect("valid time"),
        expires_at: None,
        redirect: RedirectStatus::TemporaryRedirect,
        forward_query: true,
        deleted_at: None,
        token: ManageToken::generate().digest(),
        revision: 0,
    }
}

pub async fn inserted_links_read_back_equal(f: Fixture) {
    let mut link = sample_link("rt");
    link.expires_at = Some(link.created_at + Duration::days(3));
    f.store
        .insert_link(&link, Uniqueness::Checked)
        .await
        .expect("insert");
    let read = f.store.get_link(&link.code).await.expect("get");
    assert_eq!(read, Some(link));
}

pub async fn generated_codes_insert_unchecked(f: Fixture) {
    let links: Vec<Link> = (0..20).map(|_| sample_link("gen")).collect();
    for link in &links {
        f.store
            .insert_link(link, Uniqueness::Generated)
            .await
            .expect("insert");
    }
    for link in links {
        let read = f.store.get_link(&link.code).await.expect("get");
        assert_eq!(read, Some(link));
    }
}

pub async fn a_taken_code_conflicts_and_keeps_the_original(f: Fixture) {
    let first = sample_link("cf");
    f.store
        .insert_link(&first, Uniqueness::Checked)
        .await
        .expect("insert");
    let mut second = first.clone();
    second.url = TargetUrl::parse("https://other.example/", &policy()).expect("valid");
    let err = f
        .store
        .insert_link(&second, Uniqueness::Checked)
        .await
        .expect_err("second insert");
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    assert_eq!(
        f.store.get_link(&first.code).await.expect("get"),
        Some(first)
    );
}

pub async fn racing_inserts_of_one_alias_admit_exactly_one(f: Fixture) {
    let base = sample_link("race");
    let mut handles = Vec::new();
    for _ in 0..32 {
        let store = f.store.clone();
        let mut link = base.clone();
        link.token = ManageToken::generate().digest();
        handles.push(tokio::spawn(async move {
            let result = store.insert_link(&link, Uniqueness::Checked).await;
            (link, result)
        }));
    }
    let mut winners = Vec::new();
    for handle in handles {
        match handle.await.expect("task") {
            (link, Ok(())) => winners.push(link),
            (_, Err(StoreError::Conflict)) => {}
            (_, Err(e)) => panic!("an insert failed otherwise: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one insert wins");
    let stored = f.store.get_link(&base.code).await.expect("get");
    assert_eq!(
        stored.as_ref(),
        winners.first(),
        "the winner is what is stored"
    );
}

pub async fn unknown_codes_read_as_none(f: Fixture) {
    let code = Code::parse("nosuchcode").expect("valid");
    assert_eq!(f.store.get_link(&code).await.expect("get"), None);
}

pub async fn id_leases_never_overlap(f: Fixture) {
    let mut handles = Vec::new();
    for _ in 0..16 {
        let store = f.store.clone();
        handles.push(tokio::spawn(async move {
            let mut ranges = Vec::new();
            for _ in 0..5 {
                ranges.push(store.lease_ids(100).await.expect("lease"));
            }
            ranges
        }));
    }
    let mut seen = HashSet::new();
    for handle in handles {
        for range in handle.await.expect("task") {
            assert_eq!(range.len(), 100);
            assert!(range.reserved.is_empty());
            for id in range.iter() {
                assert!(seen.insert(id), "id {id} leased twice");
            }
        }
    }
    assert_eq!(seen.len(), 16 * 5 * 100);
}

pub async fn reserved_ids_are_skipped_by_leases(f: Fixture) {
    let first = f.store.lease_ids(10).await.expect("lease");
    let ahead = first.ids.end + 150 * first.step;
    assert!(f.store.reserve_id(ahead).await.expect("reserve ahead"));
    assert!(
        !f.store
            .reserve_id(first.ids.start)
            .await
            .expect("reserve leased"),
        "an id already leased cannot be set aside"
    );
    let mut covering = Vec::new();
    while covering.iter().all(|b: &super::IdBlock| !b.contains(ahead)) {
        covering.push(f.store.lease_ids(100).await.expect("lease"));
    }
    let block = covering.last().expect("a block");
    assert_eq!(block.reserved, [ahead]);
    assert!(
        covering[..covering.len() - 1]
            .iter()
            .all(|b| b.reserved.is_empty())
    );
}

/// Whatever alias a user chooses, of any length, and whatever length the
/// codes start at, the id it names (if any) is one the store can set aside:
/// ids end where the stores' signed 64-bit integers do.
pub async fn every_alias_id_can_be_set_aside(f: Fixture) {
    use rand::{Rng, SeedableRng};

    use crate::codegen::{CodeGenerator, CodeKey, MAX_CODE_LEN, MAX_ID, MIN_CODE_LEN};

    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut named = 0;
    for len in MIN_CODE_LEN..=MAX_CODE_LEN {
        let generator = CodeGenerator::new(&CodeKey::generate(), len).expect("valid length");
        // The last ids, and random aliases of every length (11 characters,
        // the length that straddles 2⁶³, most often).
        let mut aliases: Vec<String> = [MAX_ID, MAX_ID - 1]
            .into_iter()
            .map(|id| generator.code(id).as_str().to_owned())
            .collect();
        for _ in 0..40 {
            let alias_len = if rng.random_bool(0.5) {
                11
            } else {
                rng.random_range(Code::MIN_LEN..=Code::MAX_LEN)
            };
            aliases.push(
                (0..alias_len)
                    .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
                    .collect(),
            );
        }
        for alias in aliases {
            let Some(id) = generator.id(&alias) else {
                continue;
            };
            assert!(id <= MAX_ID, "{alias} names {id} (seed {seed})");
            named += 1;
            let reserved = f.store.reserve_id(id).await.unwrap_or_else(|e| {
                panic!("setting aside {id} for {alias} failed: {e} (seed {seed})")
            });
            assert!(reserved, "{id} is far ahead of any lease (seed {seed})");
        }
    }
    assert!(
        named >= 14,
        "only {named} aliases named an id (seed {seed})"
    );
}

pub async fn updates_apply_to_live_links_only(f: Fixture) {
    let link = sample_link("up");
    f.store
        .insert_link(&link, Uniqueness::Checked)
        .await
        .expect("insert");
    let until = link.created_at + Duration::hours(1);
    let changes = LinkChanges {
        url: Some(TargetUrl::parse("https://changed.example/x", &policy()).expect("valid")),
        expires_at: Some(Some(until)),
        redirect: Some(RedirectStatus::PermanentRedirect),
        forward_query: Some(false),
    };
    let updated = f
        .store
        .update_link(&link.code, &changes)
        .await
        .expect("update")
        .expect("live link");
    assert_eq!(updated.url.as_str(), "https://changed.example/x");
    assert_eq!(updated.expires_at, Some(until));
    assert_eq!(updated.redirect, RedirectStatus::PermanentRedirect);
    assert!(!updated.forward_query);
    assert_eq!(updated.created_at, link.created_at);
    assert_eq!(
        f.store.get_link(&link.code).await.expect("get"),
        Some(updated)
    );

    let clear = LinkChanges {
        expires_at: Some(None),
        ..Default::default()
    };
    let cleared = f
        .store
        .update_link(&link.code, &clear)
        .await
        .expect("update");
    assert_eq!(cleared.expect("live").expires_at, None);

    let unknown = Code::parse("nosuchcode").expect("valid");
    assert_eq!(
        f.store.update_link(&unknown, &clear).await.expect("update"),
        None
    );
    f.store
        .delete_link(&link.code, Utc::now())
        .await
        .expect("delete");
    assert_eq!(
        f.store
            .update_link(&link.code, &changes)
            .await
            .expect("update"),
        None
    );
}

/// A link is made at revision 0; every change and the delete count one
/// more, and what is read back says so (caches compare revisions).
pub async fn every_change_counts_a_revision(f: Fixture) {
    let link = sample_link("rev");
    f.store
        .insert_link(&link, Uniqueness::Generated)
        .await
        .expect("insert");
    let read = |f: &Fixture| {
        let (store, code) = (f.store.clone(), link.code.clone());
        async move { store.get_link(&code).await.expect("get").expect("link") }
    };
    assert_eq!(read(&f).await.revision, 0);
    for expected in 1..=3 {
        let changes = LinkChanges {
            forward_query: Some(expected % 2 == 0),
            ..LinkChanges::default()
        };
        let updated = f
            .store
            .update_link(&link.code, &changes)
            .await
            .expect("update")
            .expect("live");
        assert_eq!(updated.revision, expected);
        assert_eq!(read(&f).await, updated);
    }
    let deleted = f
        .store
        .delete_link(&link.code, Utc::now())
        .await
        .expect("delete")
        .expect("was live");
    assert_eq!(deleted.revision, 4);
    assert_eq!(read(&f).await, deleted);
}

pub async fn deletes_mark_links_once(f: Fixture) {
    let link = sample_link("del");
    f.store
        .insert_link(&link, Uniqueness::Checked)
        .await
        .expect("insert");
    let at = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("valid");
    let deleted = f.store.delete_link(&link.code, at).await.expect("delete");
    assert_eq!(deleted.map(|l| l.deleted_at), Some(Some(at)));
    assert_eq!(
        f.store
            .delete_link(&link.code, at)
            .await
            .expect("delete again"),
        None
    );
    let read = f
        .store
        .get_link(&link.code)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(read.deleted_at, Some(at));
    // A deleted code stays taken.
    let err = f
        .store
        .insert_link(&link, Uniqueness::Checked)
        .await
        .expect_err("reuse");
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    let unknown = Code::parse("nosuchcode").expect("valid");
    assert_eq!(
        f.store
            .delete_link(&unknown, at)
            .await
            .expect("delete unknown"),
        None
    );
}

pub async fn expired_links_still_read_back(f: Fixture) {
    let mut link = sample_link("exp");
    link.expires_at = Some(link.created_at - Duration::seconds(1));
    f.store
        .insert_link(&link, Uniqueness::Checked)
        .await
        .expect("insert");
    assert_eq!(f.store.get_link(&link.code).await.expect("get"), Some(link));
}

pub async fn click_batches_accumulate_into_stats(f: Fixture) {
    let link = sample_link("st");
    f.store
        .insert_link(&link, Uniqueness::Checked)
        .await
        .expect("insert");
    let day = Utc
        .with_ymd_and_hms(2026, 4, 10, 0, 0, 0)
        .single()
        .expect("valid");
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    let bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    let click = |at: DateTime<Utc>, ua: &str, referer: Option<&str>, country: &str| {
        ClickEvent::from_request(
            link.code.clone(),
            at,
            referer.map(str::as_bytes),
            Some(ua.as_bytes()),
            Some(country.as_bytes()),
        )
    };
    let mut agg = Aggregator::new(UserAgentClassifier::shared());
    for hour in 0..3 {
        let at = day + Duration::hours(hour) + Duration::minutes(5);
        agg.record(&click(at, chrome, Some("https://t.co/a"), "DE"));
        agg.record(&click(at, chrome, None, "FR"));
    }
    agg.record(&click(day + Duration::hours(1), bot, None, "US"));
    f.store
        .record_clicks(&agg.take())
        .await
        .expect("first batch");
    agg.record(&click(
        day + Duration::days(1),
        chrome,
        Some("https://t.co/b"),
        "DE",
    ));
    f.store
        .record_clicks(&agg.take())
        .await
        .expect("second batch");

    let hourly = StatsQuery {
        from: day,
        to: day + Duration::hours(4),
        granularity: Granularity::Hour,
        top: 10,
    };
    let stats = f
        .store
        .click_stats(&link.code, &hourly)
        .await
        .expect("stats");
    assert_eq!(
        stats.totals,
        Counts {
            clicks: 7,
            bot_clicks: 1
        }
    );
    let series: Vec<(u64, u64)> = stats
        .series
        .iter()
        .map(|p| (p.counts.clicks, p.counts.bot_clicks))
        .collect();
    assert_eq!(series, [(2, 0), (2, 1), (2, 0), (0, 0)]);
    let tops = |d: Dimension| -> Vec<(String, u64)> {
        stats.tops[&d]
            .iter()
            .map(|e| (e.value.clone(), e.clicks))
            .collect()
    };
    // The day of the hourly range only: the second day's click is outside.
    assert_eq!(
        tops(Dimension::Referrer),
        [("(direct)".into(), 3), ("t.co".into(), 3)]
    );
    assert_eq!(
        tops(Dimension::Country),
        [("DE".into(), 3), ("FR".into(), 3)]
    );
    assert_eq!(tops(Dimension::Browser), [("Chrome".into(), 6)]);
    assert_eq!(tops(Dimension::Device), [("desktop".into(), 6)]);
    assert_eq!(tops(Dimension::Bot), [("Googlebot".into(), 1)]);

    let daily = StatsQuery {
        from: day,
        to: day + Duration::days(2),
        granularity: Granularity::Day,
        top: 1,
    };
    let stats = f
        .store
        .click_stats(&link.code, &daily)
        .await
        .expect("stats");
    let series: Vec<u64> = stats.series.iter().map(|p| p.counts.clicks).collect();
    assert_eq!(series, [6, 1]);
    assert_eq!(stats.tops[&Dimension::Country][0].value, "DE");
    assert_eq!(stats.tops[&Dimension::Country][0].clicks, 4);
    assert_eq!(stats.tops[&Dimension::Country].len(), 1);
}

pub async fn stats_of_a_link_never_clicked_are_zero(f: Fixture) {
    let link = sample_link("zero");
    f.store
        .insert_link(&link, Uniqueness::Checked)
        .await
        .expect("insert");
    let query = StatsQuery {
        from: Utc::now() - Duration::days(2),
        to: Utc::now(),
        granularity: Granularity::Day,
        top: 5,
    };
    let stats = f
        .store
        .click_stats(&link.code, &query)
        .await
        .expect("stats");
    assert_eq!(stats.totals, Counts::default());
    assert!(stats.series.iter().all(|p| p.counts == Counts::default()));
    assert_eq!(stats.series.len() as i64, query.buckets());
    assert!(stats.tops.values().all(Vec::is_empty));
}

pub async fn settings_keep_the_first_value(f: Fixture) {
    let name = format!("contract.{}", rand::random::<u32>());
    let mut handles = Vec::new();
    for i in 0..8 {
        let store = f.store.clone();
        let name = name.clone();
        handles.push(tokio::spawn(async move {
            store
                .get_or_init_setting(&name, &format!("value-{i}"))
                .await
        }));
    }
    let mut values = HashSet::new();
    for handle in handles {
        values.insert(handle.await.expect("task").expect("setting"));
    }
    assert_eq!(values.len(), 1, "racing writers disagree: {values:?}");
    let first = values.into_iter().next().expect("one value");
    let again = f
        .store
        .get_or_init_setting(&name, "later")
        .await
        .expect("setting");
    assert_eq!(again, first);
}

pub async fn ping_answers(f: Fixture) {
    f.store.ping().await.expect("ping");
}
