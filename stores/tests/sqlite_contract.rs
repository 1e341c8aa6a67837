//! The storage contract, against the embedded SQLite adapter.

use links::storage::contract::Fixture;
use stores::fixtures::sqlite_fixture;

async fn fresh_store() -> Fixture {
    sqlite_fixture().await
}

links::link_store_contract!(fresh_store);

/// Beyond the contract: SQLite checks generated codes too, so a code an
/// alias took before aliases set their ids aside (an older store) is
/// reported, and the allocator moves on to the next code, a few times at
/// most.
#[tokio::test]
async fn generated_codes_move_past_codes_older_aliases_took() {
    use links::{
        Alias,
        codegen::{CodeAllocator, CodeGenerator, CodeKey, InsertError},
        storage::{StoreError, Uniqueness, contract::sample_link},
    };

    let allocator = |store| {
        let generator = CodeGenerator::new(&CodeKey::generate(), 7).expect("generator");
        CodeAllocator::new(generator, store, 10)
    };
    let relabel = |code: links::Code| {
        let mut link = sample_link("alloc");
        link.code = code;
        link
    };

    // Ids are leased from 0: the codes of ids 0 to 3 are taken already.
    let fixture = sqlite_fixture().await;
    let codes = allocator(fixture.store.clone());
    let generator = codes.generator();
    let taken: Vec<_> = (0..4).map(|id| generator.code(id)).collect();
    for code in &taken {
        let link = relabel(code.clone());
        fixture
            .store
            .insert_link(&link, Uniqueness::Checked)
            .await
            .expect("an older alias");
    }
    let link = codes.insert(None, relabel).await.expect("created");
    assert_eq!(link.code, generator.code(4), "the first free code");
    let stored = fixture.store.get_link(&link.code).await.expect("read");
    assert_eq!(stored, Some(link));

    // An alias is checked: the second create of it is refused.
    let alias = Alias::parse("my-alias").expect("valid alias");
    codes
        .insert(Some(alias.clone()), relabel)
        .await
        .expect("first");
    let again = codes.insert(Some(alias), relabel).await;
    assert!(matches!(again, Err(InsertError::AliasTaken(code)) if code.as_str() == "my-alias"));

    // Past eight taken codes in a row the store's conflict is the answer.
    let fixture = sqlite_fixture().await;
    let codes = allocator(fixture.store.clone());
    let generator = codes.generator();
    for id in 0..10 {
        let link = relabel(generator.code(id));
        fixture
            .store
            .insert_link(&link, Uniqueness::Checked)
            .await
            .expect("an older alias");
    }
    let refused = codes.insert(None, relabel).await;
    assert!(
        matches!(refused, Err(InsertError::Store(StoreError::Conflict))),
        "{refused:?}"
    );
}
