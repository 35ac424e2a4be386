//! Every step is a `tracing` span carrying OpenTelemetry GenAI attribute names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

type Fields = BTreeMap<String, String>;

/// Collects the fields of every `thinklio.step` span, as set at creation and recorded later.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<(Id, Fields)>>>);

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Collect {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        if attrs.metadata().name() == "thinklio.step" {
            let mut fields = Fields::new();
            attrs.record(&mut Visitor(&mut fields));
            self.0.lock().unwrap().push((id.clone(), fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some((_, fields)) = spans.iter_mut().find(|(i, _)| i == id) {
            values.record(&mut Visitor(fields));
        }
    }
}

#[tokio::test]
async fn each_step_is_a_span_with_gen_ai_attributes() {
    let collect = Collect::default();
    let subscriber = tracing_subscriber::registry().with(collect.clone());
    let _default = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let model = ScriptedModel::new([
        ScriptedReply::tool_call("call_9", "add", r#"{"a": 1, "b": 2}"#),
        ScriptedReply::text("3"),
    ])
    .named("gpt-4o-mini");
    let runtime = Runtime::builder()
        .store(SqliteStore::open(dir.path().join("s.db")).await.unwrap())
        .model(model)
        .capability(thinklio_tests::add())
        .agent(AgentDefinition::new("assistant", "gpt-4o-mini").capabilities(["add"]))
        .build()
        .unwrap();
    let session = runtime
        .open_session(Principal::local(), "assistant", "t", None)
        .await
        .unwrap();
    runtime.send(session.id, "1+2?").await.unwrap();

    let spans: Vec<Fields> = collect
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(_, f)| f.clone())
        .collect();
    let kinds: Vec<&str> = spans
        .iter()
        .map(|f| f["thinklio.step.kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        vec!["context", "think", "act", "observe", "think", "respond"]
    );
    let think = &spans[1];
    assert_eq!(think["gen_ai.operation.name"], "chat");
    assert_eq!(think["gen_ai.request.model"], "gpt-4o-mini");
    assert_eq!(think["gen_ai.response.model"], "gpt-4o-mini");
    assert!(think["gen_ai.usage.input_tokens"].parse::<u64>().unwrap() > 0);
    assert!(think.contains_key("gen_ai.usage.output_tokens"));
    assert!(think.contains_key("thinklio.cost.usd"));
    assert_eq!(think["gen_ai.agent.name"], "assistant");
    assert_eq!(think["gen_ai.conversation.id"], session.id.to_string());
    let act = &spans[2];
    assert_eq!(act["gen_ai.operation.name"], "execute_tool");
    assert_eq!(act["gen_ai.tool.name"], "add");
    assert_eq!(act["gen_ai.tool.call.id"], "call_9");
    for span in &spans {
        assert_eq!(span["thinklio.step.state"], "succeeded", "{span:?}");
        assert!(span.contains_key("thinklio.interaction.id"));
    }
}
