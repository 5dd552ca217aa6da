//! Pools and the workers' side of them: settings from the file or the API, tokens rotated, decisions kept,
//! the autoscaler's turn, draining and stale registrations.

use super::*;
use gantry_model::wire::{Pool, PoolSpec, Provider};
use gantry_server::store::{DECISIONS_KEPT, Standing};

fn pool(name: &str, max: u32) -> Pool {
    PoolSpec {
        name: name.into(),
        provider: Some("local".into()),
        labels: vec!["linux".into(), "big".into()],
        min: 0,
        max: Some(max),
        slots: Some(2),
        warm: 0,
        idle_timeout: Some("3s".into()),
        boot_timeout: None,
        trusted: false,
        target_wait: None,
        exec: None,
        kubernetes: None,
    }
    .check()
    .unwrap()
}

pub(super) async fn pools_are_written_rotated_and_keep_their_newest_decisions(db: Db) {
    db.bootstrap("admin-hash", "pool-hash").await.unwrap();
    db.create_pool(&pool("big", 4), "big-token").await.unwrap();
    assert!(matches!(
        db.create_pool(&pool("big", 4), "other").await,
        Err(StoreError::Conflict(_))
    ));
    db.update_pool(&pool("big", 8)).await.unwrap();
    let big = db.find_pool("big").await.unwrap().unwrap();
    assert_eq!(
        (big.pool.max, big.pool.slots, big.from_config),
        (8, 2, false)
    );
    assert_eq!(big.pool.provider, Provider::Local);
    assert_eq!(
        db.find_token("big-token").await.unwrap(),
        Some(TokenRecord::Pool("big".into()))
    );

    // The file's pools are rewritten at each start and refuse the API.
    db.apply_config_pools(&[pool("filed", 2)]).await.unwrap();
    assert!(matches!(
        db.update_pool(&pool("filed", 3)).await,
        Err(StoreError::Conflict(_))
    ));
    db.apply_config_pools(&[]).await.unwrap();
    let gone = db.find_pool("filed").await.unwrap().unwrap();
    assert_eq!(
        (gone.from_config, gone.pool.provider, gone.pool.max),
        (false, Provider::Manual, 0)
    );

    // Rotating takes the old token and the registrations made with it; the provider's workers stay.
    let mine = NewWorker {
        name: "by-hand".into(),
        pool: "big".into(),
        labels: vec![],
        capacity: 1,
        protocol_version: 1,
        managed: false,
    };
    db.register_worker(&mine, "hand-token").await.unwrap();
    db.add_provider_token("provider-token", "big")
        .await
        .unwrap();
    let managed = NewWorker {
        name: "big-1".into(),
        managed: true,
        ..mine.clone()
    };
    db.register_worker(&managed, "managed-token").await.unwrap();
    db.rotate_pool_token("big", "new-token").await.unwrap();
    assert_eq!(db.find_token("big-token").await.unwrap(), None);
    assert_eq!(db.find_token("hand-token").await.unwrap(), None);
    assert!(db.find_token("managed-token").await.unwrap().is_some());
    assert_eq!(
        db.find_token("provider-token").await.unwrap(),
        Some(TokenRecord::Provider {
            pool: "big".into(),
            worker: None
        })
    );
    assert!(matches!(
        db.rotate_pool_token("nope", "x").await,
        Err(StoreError::NotFound(_))
    ));

    for i in 0..(DECISIONS_KEPT + 5) {
        db.record_pool_decision("big", i as u32, i as u32 + 1, &format!("decision {i}"))
            .await
            .unwrap();
    }
    let kept = db.pool_decisions("big").await.unwrap();
    assert_eq!(kept.len() as i64, DECISIONS_KEPT);
    assert_eq!(
        kept[0].reason,
        format!("decision {}", DECISIONS_KEPT + 4),
        "newest first"
    );
    assert_eq!(
        db.find_pool("big").await.unwrap().unwrap().desired,
        DECISIONS_KEPT as u32 + 5
    );

    // One server's autoscaler at a time; another takes over once the turn ran out.
    assert!(db.take_pool_turn("big", "a", 1000, 6000).await.unwrap());
    assert!(!db.take_pool_turn("big", "b", 2000, 7000).await.unwrap());
    assert!(
        db.take_pool_turn("big", "a", 2000, 7000).await.unwrap(),
        "a renews"
    );
    assert!(db.take_pool_turn("big", "b", 8000, 13000).await.unwrap());
}

pub(super) async fn a_draining_worker_gets_no_job_and_stale_ones_are_removed(db: Db) {
    let w = worker(&db, "drained").await;
    let r = repo(&db, "drain").await;
    pipeline(&db, r, "drain-1", "jobs:\n  a:\n    steps: [x]\n").await;
    assert_eq!(db.touch_worker(w).await.unwrap(), Standing::Serving);
    assert!(db.drain_worker(w).await.unwrap());
    assert!(!db.drain_worker(w).await.unwrap(), "already draining");
    assert_eq!(db.touch_worker(w).await.unwrap(), Standing::Draining);
    assert!(
        db.claim_job(&claim(w)).await.unwrap().is_none(),
        "no job for a draining worker"
    );
    let listed = db.list_workers().await.unwrap();
    assert_eq!(listed[0].state, "draining");
    let ready = db.ready_jobs().await.unwrap();
    assert_eq!(
        (ready.len(), ready[0].repo.as_str(), ready[0].name.as_str()),
        (1, "drain", "a")
    );

    let other = worker(&db, "busy-one").await;
    let job = db.claim_job(&claim(other)).await.unwrap().unwrap();
    let later = Utc::now() + chrono::TimeDelta::hours(1);
    let removed = db.remove_stale_workers(later).await.unwrap();
    assert_eq!(
        removed,
        vec!["drained".to_owned()],
        "a worker running a job stays"
    );
    assert_eq!(db.touch_worker(w).await.unwrap(), Standing::Gone);
    let workers = db.list_workers().await.unwrap();
    assert_eq!((workers.len(), workers[0].running), (1, 1));
    db.deregister_worker(other).await.unwrap();
    assert_eq!(db.find_token("token-of-busy-one").await.unwrap(), None);
    assert_eq!(job.job.attempt, 1);
}

pub(super) async fn an_exec_pool_keeps_its_commands_and_its_instances_with_their_own_tokens(
    db: Db,
) {
    db.bootstrap("admin-hash", "pool-hash").await.unwrap();
    let mut spec = pool("vms", 4).spec();
    spec.provider = Some("exec".into());
    spec.exec = Some(gantry_model::wire::ExecSpec {
        create: "cloud create".into(),
        destroy: "cloud destroy".into(),
        list: "cloud list".into(),
        timeout: Some("30s".into()),
    });
    let vms = spec.check().unwrap();
    db.apply_config_pools(std::slice::from_ref(&vms))
        .await
        .unwrap();
    let stored = db.find_pool("vms").await.unwrap().unwrap();
    assert_eq!(stored.pool, vms, "the commands round-trip");

    db.add_instance_token("vms", "vms-1", "vms-1-token")
        .await
        .unwrap();
    assert_eq!(
        db.find_token("vms-1-token").await.unwrap(),
        Some(TokenRecord::Provider {
            pool: "vms".into(),
            worker: Some("vms-1".into())
        })
    );
    let made = gantry_server::store::PoolInstance {
        name: "vms-1".into(),
        instance: "i-0abc".into(),
        created_ms: 1_700_000_000_000,
    };
    db.record_instance("vms", &made).await.unwrap();
    db.add_instance_token("vms", "vms-2", "vms-2-token")
        .await
        .unwrap();
    db.record_instance(
        "vms",
        &gantry_server::store::PoolInstance {
            name: "vms-2".into(),
            instance: "i-0def".into(),
            created_ms: 1_700_000_000_500,
        },
    )
    .await
    .unwrap();
    let listed = db.pool_instances("vms").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0], made);
    // Used by its worker's registration, a token is gone; the instance stays.
    db.remove_instance_token("vms", "vms-2").await.unwrap();
    assert_eq!(db.find_token("vms-2-token").await.unwrap(), None);
    db.add_instance_token("vms", "vms-2", "vms-2-token")
        .await
        .unwrap();
    // A name made again gets a new token; the old one stops working.
    db.add_instance_token("vms", "vms-1", "vms-1-again")
        .await
        .unwrap();
    assert_eq!(db.find_token("vms-1-token").await.unwrap(), None);
    db.forget_instance("vms", "vms-1").await.unwrap();
    assert_eq!(db.find_token("vms-1-again").await.unwrap(), None);
    assert!(db.find_token("vms-2-token").await.unwrap().is_some());
    let names: Vec<_> = db
        .pool_instances("vms")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["vms-2"]);

    // Dropped from the file, the pool is manual and keeps no commands.
    db.apply_config_pools(&[]).await.unwrap();
    let dropped = db.find_pool("vms").await.unwrap().unwrap();
    assert_eq!(
        (dropped.pool.provider, dropped.pool.exec),
        (Provider::Manual, None)
    );
}
