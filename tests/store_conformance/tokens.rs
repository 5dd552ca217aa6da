//! Tokens and workers: the first start's tokens, named API tokens, worker registration.

use super::*;

pub(super) async fn api_tokens_have_a_unique_name_a_scope_and_are_revoked_at_once(db: Db) {
    use gantry_model::wire::Scope;
    let made = db
        .create_api_token("deploy-bot", Scope::Write, "hash-of-deploy-bot")
        .await
        .unwrap();
    assert_eq!(
        (made.name.as_str(), made.scope),
        ("deploy-bot", Scope::Write)
    );
    db.create_api_token("auditor", Scope::Read, "hash-of-auditor")
        .await
        .unwrap();
    let taken = db
        .create_api_token("auditor", Scope::Admin, "another-hash")
        .await
        .unwrap_err();
    assert!(
        matches!(taken, StoreError::Conflict(_)),
        "a name is taken once: {taken}"
    );
    assert_eq!(
        db.find_token("hash-of-deploy-bot").await.unwrap(),
        Some(TokenRecord::Api {
            name: "deploy-bot".into(),
            scope: Scope::Write
        })
    );
    assert_eq!(db.find_token("another-hash").await.unwrap(), None);
    let listed: Vec<_> = db
        .list_api_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.scope))
        .collect();
    assert_eq!(
        listed,
        [
            ("auditor".into(), Scope::Read),
            ("deploy-bot".into(), Scope::Write)
        ]
    );
    assert!(db.revoke_api_token("auditor").await.unwrap());
    assert!(!db.revoke_api_token("auditor").await.unwrap());
    assert_eq!(db.find_token("hash-of-auditor").await.unwrap(), None);
    // The admin token is not an API token: it is neither listed nor revoked by name.
    db.set_admin_token("the-admin").await.unwrap();
    assert_eq!(db.list_api_tokens().await.unwrap().len(), 1);
    assert!(!db.revoke_api_token("admin").await.unwrap());
}

pub(super) async fn first_start_tokens_are_made_once(db: Db) {
    assert!(db.bootstrap("admin1", "pool1").await.unwrap());
    assert!(
        !db.bootstrap("admin2", "pool2").await.unwrap(),
        "a second start must not make new tokens"
    );
    assert_eq!(
        db.find_token("admin1").await.unwrap(),
        Some(TokenRecord::Admin)
    );
    assert_eq!(
        db.find_token("pool1").await.unwrap(),
        Some(TokenRecord::Pool("default".into()))
    );
    assert_eq!(db.find_token("admin2").await.unwrap(), None);
    db.set_admin_token("configured").await.unwrap();
    db.set_admin_token("configured").await.unwrap();
    assert_eq!(
        db.find_token("configured").await.unwrap(),
        Some(TokenRecord::Admin)
    );
    assert_eq!(
        db.find_token("admin1").await.unwrap(),
        None,
        "a configured admin token revokes the others"
    );
    db.add_pool_token("pool3", "default").await.unwrap();
    assert_eq!(
        db.find_token("pool3").await.unwrap(),
        Some(TokenRecord::Pool("default".into()))
    );
}

pub(super) async fn workers_register_by_name_and_get_a_token(db: Db) {
    let first = worker(&db, "host-a").await;
    let again = worker(&db, "host-a").await;
    assert_eq!(first, again, "re-registering keeps the worker's id");
    worker(&db, "host-b").await;
    let workers = db.list_workers().await.unwrap();
    assert_eq!(
        workers.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(),
        ["host-a", "host-b"]
    );
    assert_eq!(workers[0].labels, ["linux"]);
    assert_eq!(
        db.find_token("token-of-host-a").await.unwrap(),
        Some(TokenRecord::Worker {
            id: first,
            name: "host-a".into()
        })
    );
}
