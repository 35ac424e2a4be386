//! Structured answers: an agent that declares its answer's JSON Schema gets
//! it checked, asks the model again with what is wrong, and hands the host a
//! typed value. Against local servers replaying OpenAI's and Anthropic's
//! documented payloads (dated model names, usage), with the request bodies
//! asserted: the schema in each provider's form, and the re-ask.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use thinklio_core::*;
use thinklio_llm::{Anthropic, ApiKey, OpenAiCompatible, ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// What the agent answers with.
#[derive(Debug, PartialEq, Deserialize, JsonSchema)]
struct Verdict {
    /// `spam` or `ham`.
    label: String,
    /// How sure, from 0 to 1.
    confidence: f64,
    /// Anything worth saying.
    note: Option<String>,
}

const INVALID: &str = r#"{"label":"spam"}"#;
const VALID: &str = r#"{"label":"spam","confidence":0.92,"note":null}"#;

async fn runtime(
    dir: &tempfile::TempDir,
    model: Arc<dyn ChatModel>,
    agent: AgentDefinition,
) -> Runtime {
    Runtime::builder()
        .store(SqliteStore::open(dir.path().join("s.db")).await.unwrap())
        .model_arc(model)
        .capability(thinklio_tests::add())
        .agent(agent)
        .build()
        .unwrap()
}

/// Mounts `bodies` as the answers to successive requests on `route`.
async fn replaying(route: &str, bodies: Vec<Value>) -> MockServer {
    let server = MockServer::start().await;
    for body in bodies {
        Mock::given(method("POST"))
            .and(path(route.to_owned()))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .up_to_n_times(1)
            .mount(&server)
            .await;
    }
    server
}

async fn bodies(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.body_json().unwrap())
        .collect()
}

fn openai_completion(content: &str) -> Value {
    json!({
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content, "refusal": null, "annotations": [] },
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": { "prompt_tokens": 96, "completion_tokens": 12, "total_tokens": 108,
                   "prompt_tokens_details": { "cached_tokens": 0 },
                   "completion_tokens_details": { "reasoning_tokens": 0 } },
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306"
    })
}

fn anthropic_message(input: Value) -> Value {
    json!({
        "id": "msg_01Aq9w938a90dw8q",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{ "type": "tool_use", "id": "toolu_01D7FLrfh4GYq7yT1ULFeyMV", "name": "Verdict", "input": input }],
        "stop_reason": "tool_use",
        "stop_sequence": null,
        "usage": { "input_tokens": 412, "output_tokens": 31 }
    })
}

#[tokio::test]
async fn openai_an_invalid_answer_is_asked_again_and_the_valid_one_is_typed() {
    let server = replaying(
        "/v1/chat/completions",
        vec![openai_completion(INVALID), openai_completion(VALID)],
    )
    .await;
    let model = OpenAiCompatible::new(format!("{}/v1", server.uri()), Some(ApiKey::new("sk-test")));
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(
        &dir,
        Arc::new(model),
        AgentDefinition::new("judge", "gpt-4o-mini").answers_as::<Verdict>(),
    )
    .await;
    let s = rt
        .open_session(Principal::local(), "judge", "t", None)
        .await
        .unwrap();
    let answer = rt
        .send_structured::<Verdict>(s.id, "WIN A FREE CRUISE, click now")
        .await
        .unwrap();
    assert_eq!(
        answer.value,
        Verdict {
            label: "spam".into(),
            confidence: 0.92,
            note: None
        }
    );

    let sent = bodies(&server).await;
    assert_eq!(sent.len(), 2, "one re-ask");
    for body in &sent {
        let format = &body["response_format"];
        assert_eq!(format["type"], "json_schema");
        assert_eq!(format["json_schema"]["name"], "Verdict");
        assert_eq!(format["json_schema"]["strict"], true);
        let schema = &format["json_schema"]["schema"];
        assert_eq!(schema["required"], json!(["confidence", "label", "note"]));
        assert_eq!(schema["additionalProperties"], false);
        assert!(schema.get("$schema").is_none());
    }
    let messages = sent[1]["messages"].as_array().unwrap();
    let n = messages.len();
    assert_eq!(
        messages[n - 2],
        json!({ "role": "assistant", "content": INVALID })
    );
    assert_eq!(messages[n - 1]["role"], "user");
    let reask = messages[n - 1]["content"].as_str().unwrap();
    assert!(
        reask.contains("does not match the required JSON Schema") && reask.contains("confidence"),
        "{reask}"
    );
    // The invalid answer stays on its step, with what was wrong.
    let steps = rt
        .sessions()
        .steps(Principal::local(), answer.reply.interaction_id)
        .await
        .unwrap();
    let thinks: Vec<step::payload::ThinkOutput> = steps
        .iter()
        .filter(|s| s.kind == StepKind::Think)
        .map(|s| s.output_as().unwrap().unwrap())
        .collect();
    assert_eq!(thinks.len(), 2);
    assert!(
        thinks[0]
            .invalid_answer
            .as_deref()
            .unwrap()
            .contains("confidence")
    );
    assert_eq!(thinks[1].invalid_answer, None);
}

#[tokio::test]
async fn anthropic_an_invalid_answer_is_asked_again_and_the_valid_one_is_typed() {
    let server = replaying(
        "/v1/messages",
        vec![
            anthropic_message(json!({ "label": "spam" })),
            anthropic_message(json!({ "label": "spam", "confidence": 0.92, "note": null })),
        ],
    )
    .await;
    let model = Anthropic::new(server.uri(), ApiKey::new("sk-ant-test"));
    let dir = tempfile::tempdir().unwrap();
    // With a tool of its own, the model may call it or answer.
    let rt = runtime(
        &dir,
        Arc::new(model),
        AgentDefinition::new("judge", "claude-sonnet-4-5")
            .capabilities(["add"])
            .answers_as::<Verdict>(),
    )
    .await;
    let s = rt
        .open_session(Principal::local(), "judge", "t", None)
        .await
        .unwrap();
    let answer = rt
        .send_structured::<Verdict>(s.id, "WIN A FREE CRUISE, click now")
        .await
        .unwrap();
    assert_eq!(answer.value.label, "spam");
    assert_eq!(answer.value.confidence, 0.92);

    let sent = bodies(&server).await;
    assert_eq!(sent.len(), 2, "one re-ask");
    for body in &sent {
        assert_eq!(body["tool_choice"], json!({ "type": "any" }));
        let names: Vec<&str> = body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["add", "Verdict"]);
        assert_eq!(
            body["tools"][1]["input_schema"]["required"],
            json!(["confidence", "label", "note"])
        );
    }
    // The re-ask follows the invalid answer, as the user's turn.
    let messages = sent[1]["messages"].as_array().unwrap();
    let last = messages.last().unwrap();
    assert_eq!(last["role"], "user");
    assert!(
        last.to_string()
            .contains("does not match the required JSON Schema"),
        "{last}"
    );
    let before = &messages[messages.len() - 2];
    assert_eq!(before["role"], "assistant");
    assert!(before.to_string().contains("spam"), "{before}");
}

#[tokio::test]
async fn an_answer_that_never_matches_fails_with_a_typed_error_after_its_attempts() {
    let model = ScriptedModel::responder(|_| ScriptedReply::text("not JSON at all"));
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(
        &dir,
        Arc::new(model),
        AgentDefinition::new("judge", "m")
            .answers_as::<Verdict>()
            .answer_attempts(2),
    )
    .await;
    let s = rt
        .open_session(Principal::local(), "judge", "t", None)
        .await
        .unwrap();
    let refused = rt
        .send_structured::<Verdict>(s.id, "judge this")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::AnswerInvalid, "{refused}");
    let RuntimeError::InteractionFailed { interaction, .. } = refused else {
        panic!("{refused:?}")
    };
    let steps = rt
        .sessions()
        .steps(Principal::local(), interaction)
        .await
        .unwrap();
    assert_eq!(
        steps.iter().filter(|s| s.kind == StepKind::Think).count(),
        2,
        "asked twice, no more"
    );

    // A reply that is not the type asked for is a typed error too.
    let rt = runtime(
        &tempfile::tempdir().unwrap(),
        Arc::new(ScriptedModel::responder(|_| {
            ScriptedReply::text(r#"{"other": 1}"#)
        })),
        AgentDefinition::new("judge", "m"),
    )
    .await;
    let s = rt
        .open_session(Principal::local(), "judge", "t", None)
        .await
        .unwrap();
    let wrong = rt
        .send_structured::<Verdict>(s.id, "judge this")
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), ErrorCode::AnswerInvalid);
    // A schema that does not compile is refused when the agent is registered.
    let bad = AgentDefinition::new("judge", "m").answer_schema(OutputSchema {
        name: "bad".into(),
        schema: json!({ "type": "no-such-type" }),
    });
    assert_eq!(
        rt.directory().register_agent(bad).unwrap_err().code(),
        ErrorCode::RuntimeConfig
    );
}
