//! TLS to the server as the connection string asks: against the test
//! cluster, which `scripts/postgres.sh` starts with a certificate of a
//! throw-away CA (`THINKLIO_POSTGRES_CA`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use thinklio_store_postgres::{OpenError, PostgresOptions, PostgresStore};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run scripts/postgres.sh start and ca (scripts/test.sh does)")
    })
}

/// The test cluster's URL with `params` added.
fn url(params: &str) -> String {
    let url = env("THINKLIO_POSTGRES_URL");
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

async fn connect(url: &str) -> Result<PostgresStore, OpenError> {
    let schema = format!("tls_{}", uuid::Uuid::now_v7().simple());
    PostgresStore::connect_with(
        url,
        PostgresOptions::default().schema(schema).max_connections(2),
    )
    .await
}

#[tokio::test]
async fn a_connection_string_that_asks_for_tls_gets_it() {
    let ca = env("THINKLIO_POSTGRES_CA");
    let required = connect(&url("sslmode=require")).await.unwrap();
    assert!(required.encrypted().await.unwrap(), "sslmode=require");
    let verified = connect(&url(&format!("sslmode=verify-full&sslrootcert={ca}")))
        .await
        .unwrap();
    assert!(verified.encrypted().await.unwrap(), "sslmode=verify-full");
    let plain = connect(&url("sslmode=disable")).await.unwrap();
    assert!(!plain.encrypted().await.unwrap(), "sslmode=disable");
}

#[tokio::test]
async fn a_certificate_that_does_not_verify_is_refused() {
    // The throw-away CA is in no trust store: verify-full without it fails.
    let err = connect(&url("sslmode=verify-full")).await.unwrap_err();
    assert!(matches!(err, OpenError::Connect(_)), "{err}");
    // Reached under another name: verify-full refuses, verify-ca (chain
    // only) accepts.
    let ca = env("THINKLIO_POSTGRES_CA");
    let base = env("THINKLIO_POSTGRES_URL");
    let port = base
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let renamed = |mode: &str| {
        format!(
            "host=db.thinklio.invalid hostaddr=127.0.0.1 port={port} user=thinklio dbname=thinklio sslmode={mode} sslrootcert={ca}"
        )
    };
    assert!(
        connect(&renamed("verify-full")).await.is_err(),
        "a certificate not for this name"
    );
    let chained = connect(&renamed("verify-ca")).await.unwrap();
    assert!(chained.encrypted().await.unwrap());
    let unknown = connect(&url("sslmode=verify-everything"))
        .await
        .unwrap_err();
    assert!(matches!(unknown, OpenError::Tls(_)), "{unknown}");
}
