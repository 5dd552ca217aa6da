//! Repositories: unique names, sealed credentials and secrets.

use super::*;

/// A write abandoned at any point (an HTTP handler whose client went away is dropped mid-await) leaves the
/// store writable: never a connection inside a transaction for the next writer to trip on.
pub(super) async fn writes_abandoned_at_any_point_leave_the_store_writable(db: Db) {
    for i in 0..400 {
        let write = db.expire_leases(0, 0);
        tokio::pin!(write);
        // Dropped after a number of scheduler turns that sweeps through every await of the write.
        let soon = async {
            for _ in 0..i % 80 {
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            biased;
            _ = &mut write => {}
            () = soon => {}
        }
    }
    db.expire_leases(0, 0).await.unwrap();
    repo(&db, "after-abandoned-writes").await;
}

pub(super) async fn repositories_have_unique_names(db: Db) {
    repo(&db, "b-repo").await;
    repo(&db, "a-repo").await;
    let again = NewRepoRecord {
        name: "a-repo".into(),
        url: "/x".into(),
        forge: "git".into(),
        forge_full_name: None,
        secret: "s".repeat(10),
    };
    assert!(matches!(
        db.create_repo(&again).await,
        Err(StoreError::Conflict(_))
    ));
    let names: Vec<String> = db
        .list_repos()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["a-repo", "b-repo"]);
    let a = db.get_repo("a-repo").await.unwrap().unwrap();
    assert_eq!(a.url, "/srv/a-repo.git");
    assert_eq!(a.secret, "s3cretsecret");
    assert!(db.get_repo("nope").await.unwrap().is_none());
}

pub(super) async fn repository_credentials_are_stored_sealed_and_removed(db: Db) {
    let w = worker(&db, "cred-worker").await;
    let r = repo(&db, "cred").await;
    for which in [RepoCredential::Clone, RepoCredential::Status] {
        assert_eq!(db.repo_credential(r, which).await.unwrap(), None);
    }
    db.set_repo_credential(r, RepoCredential::Clone, Some(b"sealed-clone"))
        .await
        .unwrap();
    db.set_repo_credential(r, RepoCredential::Status, Some(b"sealed-status"))
        .await
        .unwrap();
    assert_eq!(
        db.repo_credential(r, RepoCredential::Clone)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"sealed-clone"[..])
    );
    assert_eq!(
        db.repo_credential(r, RepoCredential::Status)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"sealed-status"[..])
    );
    // A lease carries the clone credential (still sealed) to the worker.
    pipeline(&db, r, "cred-1", "jobs:\n  a:\n    steps: [x]\n").await;
    let claimed = db.claim_job(&claim(w)).await.unwrap().expect("ready");
    assert_eq!(
        claimed.clone_credential.as_deref(),
        Some(&b"sealed-clone"[..])
    );
    db.set_repo_credential(r, RepoCredential::Clone, None)
        .await
        .unwrap();
    assert_eq!(
        db.repo_credential(r, RepoCredential::Clone).await.unwrap(),
        None
    );
    assert!(matches!(
        db.set_repo_credential(r + 1000, RepoCredential::Status, None)
            .await,
        Err(StoreError::NotFound(_))
    ));
}

pub(super) async fn repository_secrets_are_set_listed_without_values_and_removed(db: Db) {
    let r = repo(&db, "secrets").await;
    let other = repo(&db, "secrets-other").await;
    assert!(db.list_repo_secrets(r).await.unwrap().is_empty());
    db.set_repo_secret(r, "TOKEN", b"sealed-1").await.unwrap();
    db.set_repo_secret(r, "API_KEY", b"sealed-2").await.unwrap();
    db.set_repo_secret(other, "TOKEN", b"other-sealed")
        .await
        .unwrap();
    let listed = db.list_repo_secrets(r).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["API_KEY", "TOKEN"],
        "by name, this repository's only"
    );
    let first_set = listed[1].updated_at;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    db.set_repo_secret(r, "TOKEN", b"sealed-3").await.unwrap();
    let listed = db.list_repo_secrets(r).await.unwrap();
    assert_eq!(listed.len(), 2, "setting again replaces");
    assert!(listed[1].updated_at > first_set, "and says when");
    assert_eq!(
        db.sealed_repo_secrets(r).await.unwrap(),
        [sealed("API_KEY", b"sealed-2"), sealed("TOKEN", b"sealed-3")]
    );
    assert!(db.delete_repo_secret(r, "TOKEN").await.unwrap());
    assert!(!db.delete_repo_secret(r, "TOKEN").await.unwrap(), "gone");
    assert_eq!(db.list_repo_secrets(r).await.unwrap().len(), 1);
    assert_eq!(
        db.sealed_repo_secrets(other).await.unwrap(),
        [sealed("TOKEN", b"other-sealed")],
        "another repository's secret of the same name is untouched"
    );
}
