//! The embeddings provider against a local server answering in the shape of
//! the OpenAI embeddings API reference.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use serde_json::{Value, json};
use thinklio_core::{Embedder, ModelError};
use thinklio_llm::{ApiKey, OpenAiEmbeddings};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn embeds_a_batch_in_input_order_and_sends_the_documented_body() {
    let server = MockServer::start().await;
    // Answers out of order, as the API allows: `index` says which input.
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .and(header("authorization", "Bearer sk-test"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list",
            "data": [
                { "object": "embedding", "index": 1, "embedding": [0.0, 1.0, 0.0] },
                { "object": "embedding", "index": 0, "embedding": [1.0, 0.0, 0.0] }
            ],
            "model": "text-embedding-3-small",
            "usage": { "prompt_tokens": 8, "total_tokens": 8 }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let e = OpenAiEmbeddings::new(
        format!("{}/v1", server.uri()),
        Some(ApiKey::new("sk-test")),
        "text-embedding-3-small",
        3,
    );
    let v = e.embed(&["first".into(), "second".into()]).await.unwrap();
    assert_eq!(v, vec![vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0]]);
    let body: Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(
        body,
        json!({
            "model": "text-embedding-3-small",
            "input": ["first", "second"],
            "encoding_format": "float",
            "dimensions": 3
        })
    );
}

#[tokio::test]
async fn a_wrong_length_or_a_missing_vector_is_a_malformed_response() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list",
            "data": [ { "object": "embedding", "index": 0, "embedding": [1.0, 0.0] } ],
            "model": "nomic-embed-text"
        })))
        .mount(&server)
        .await;
    let fixed = OpenAiEmbeddings::new(format!("{}/v1", server.uri()), None, "nomic-embed-text", 2)
        .fixed_dimensions();
    let err = fixed.embed(&["a".into(), "b".into()]).await.unwrap_err();
    assert!(
        matches!(err, ModelError::MalformedResponse(ref m) if m.contains("input 1")),
        "{err}"
    );
    let body: Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert!(body.get("dimensions").is_none());
    let wrong = OpenAiEmbeddings::new(format!("{}/v1", server.uri()), None, "nomic-embed-text", 3);
    let err = wrong.embed(&["a".into()]).await.unwrap_err();
    assert!(
        matches!(err, ModelError::MalformedResponse(ref m) if m.contains("2 dimensions")),
        "{err}"
    );
}
