//! The embedded store's own cases; the shared ones are the contract suite.

use super::*;

async fn store(dir: &Path) -> Arc<SqliteStore> {
    SqliteStore::open(SqliteOptions {
        dir: dir.to_owned(),
        readers: 1,
        max_in_flight: 8,
        busy_timeout: Duration::from_secs(5),
        retention: chrono::Duration::days(30),
        background: Priority::Normal,
    })
    .await
    .expect("open")
}

#[tokio::test]
async fn a_panic_in_a_call_fails_that_call_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path()).await;
    // A panic inside a transaction that already wrote.
    let error = store
        .write(|conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO settings (name, value) VALUES ('half', 'done')",
                [],
            )?;
            panic!("a bug halfway through a write");
            #[expect(unreachable_code, reason = "the closure's type")]
            Ok(())
        })
        .await
        .expect_err("the call fails");
    assert!(
        matches!(&error, StoreError::Other(e) if e.to_string().contains("a bug halfway")),
        "{error}"
    );
    // The writer goes on, and the half-done write was rolled back.
    assert_eq!(
        store
            .get_or_init_setting("half", "fresh")
            .await
            .expect("the writer still serves"),
        "fresh"
    );
    store.ping().await.expect("still ready");
    // One not inside a `Transaction`.
    let error = store
        .write(|conn| {
            conn.execute_batch("BEGIN")?;
            panic!("a bug in a hand-made transaction");
            #[expect(unreachable_code, reason = "the closure's type")]
            Ok(())
        })
        .await
        .expect_err("the call fails");
    assert!(matches!(error, StoreError::Other(_)), "{error}");
    store
        .get_or_init_setting("after", "x")
        .await
        .expect("no transaction left open");
}

#[tokio::test]
async fn a_connection_whose_thread_is_gone_breaks_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path()).await;
    store.ping().await.expect("ready");
    store.stop_writer_thread().await;
    // The thread answers the close before it ends: give it a moment.
    let mut pinged = store.ping().await;
    for _ in 0..100 {
        if matches!(pinged, Err(StoreError::Broken(_))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        pinged = store.ping().await;
    }
    assert!(matches!(pinged, Err(StoreError::Broken(_))), "{pinged:?}");
    assert!(matches!(
        store.get_or_init_setting("x", "y").await,
        Err(StoreError::Broken(_))
    ));
}
