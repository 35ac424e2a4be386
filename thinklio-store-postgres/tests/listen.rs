//! Idle workers in other processes are woken by LISTEN/NOTIFY when work is
//! added, instead of polling.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::time::Duration;

use serde_json::json;
use thinklio_core::{NewTask, QueueStore, Timestamp};
use thinklio_store_postgres::{PostgresOptions, PostgresStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_waiting_for_work_wakes_when_another_adds_a_task() {
    let url = std::env::var("THINKLIO_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "THINKLIO_POSTGRES_URL is not set: run scripts/postgres.sh start (scripts/test.sh does)"
        )
    });
    let schema = format!("listen_{}", uuid::Uuid::now_v7().simple());
    let options = || PostgresOptions::default().schema(schema.clone());
    let adder = PostgresStore::connect_with(&url, options()).await.unwrap();
    let waiter = PostgresStore::connect_with(&url, options()).await.unwrap();
    // The waiter's listener connects in the background: wait until a
    // notification gets through, adding work until one does.
    let mut woken = false;
    for _ in 0..50 {
        let wait = waiter.wait_for_work(Duration::from_secs(3600));
        let add = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            adder
                .enqueue(NewTask::new("ping", json!({}), Timestamp::from_millis(0)).max_attempts(1))
                .await
                .unwrap();
        };
        let (_, ()) = tokio::join!(
            async {
                woken = tokio::time::timeout(Duration::from_secs(1), wait)
                    .await
                    .is_ok();
            },
            add
        );
        if woken {
            break;
        }
    }
    assert!(woken, "a task added by another store woke the waiting one");
}
