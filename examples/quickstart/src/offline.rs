//! The offline stand-ins the examples answer with when no model is
//! configured: a calculator capability and a scripted model that uses it
//! (and the clock) and otherwise says plainly what it is.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use thinklio_core::{
    ChatModel, ChatRequest, ChatResponse, ChatStream, FunctionCapability, ModelError, Role,
    SideEffect, ToolDefinition, TrustLevel,
};
use thinklio_llm::{ScriptedModel, ScriptedReply};

/// The model `THINKLIO_MODEL` names, with the id to put in agent
/// definitions; the offline model (id `offline`) when it is not set. Says
/// which on standard error.
pub fn model_from_env() -> Result<(Arc<dyn ChatModel>, String), String> {
    match thinklio_llm::config::from_env().map_err(|e| e.to_string())? {
        Some(choice) => {
            eprintln!("model: {}", choice.description);
            Ok((choice.chat, choice.model))
        }
        None => {
            eprintln!("THINKLIO_MODEL is not set: answering with the offline scripted model.");
            Ok((Arc::new(offline_model()), "offline".to_owned()))
        }
    }
}

/// The prices the example hosts use: the providers' published list prices,
/// and the offline model priced like a small hosted one, so usage, `/usage`
/// and cost budgets show what a conversation would cost.
pub fn prices() -> thinklio_core::PriceTable {
    thinklio_llm::prices::published().with(
        "offline",
        thinklio_core::ModelPrice::usd_per_million(0.15, 0.60),
    )
}

/// Sends the requests of one model id to a scripted model (a host's own
/// agent, such as a console making exactly the call asked for) and all
/// others to the host's model.
pub struct ByModel {
    id: String,
    scripted: ScriptedModel,
    main: Arc<dyn ChatModel>,
}

impl ByModel {
    /// Requests for model `id` go to `scripted`, the rest to `main`.
    pub fn new(id: impl Into<String>, scripted: ScriptedModel, main: Arc<dyn ChatModel>) -> Self {
        Self {
            id: id.into(),
            scripted,
            main,
        }
    }
}

#[async_trait::async_trait]
impl ChatModel for ByModel {
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        if request.model == self.id {
            self.scripted.chat(request).await
        } else {
            self.main.chat(request).await
        }
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ModelError> {
        if request.model == self.id {
            self.scripted.chat_stream(request).await
        } else {
            self.main.chat_stream(request).await
        }
    }
}

/// The calculator's input.
#[derive(Deserialize, JsonSchema)]
struct CalculatorArgs {
    /// An arithmetic expression, such as `17*23` or `(2+3)/4`.
    expression: String,
}

/// `calculator`: evaluates an arithmetic expression.
pub fn calculator() -> FunctionCapability {
    FunctionCapability::builder(
        "calculator",
        "Evaluates an arithmetic expression (+ - * / ^ and parentheses).",
    )
    .side_effect(SideEffect::ReadOnly)
    .trust_level(TrustLevel::Basic)
    .handler(|args: CalculatorArgs| async move { evaluate(&args.expression).map(number) })
}

/// Evaluates in floating point: integer literals are widened first, so that
/// `7/2` is 3.5 rather than integer division.
fn evaluate(expression: &str) -> Result<f64, String> {
    let mut widened = String::with_capacity(expression.len() + 8);
    let mut chars = expression.chars().peekable();
    while let Some(c) = chars.next() {
        widened.push(c);
        if c.is_ascii_digit() {
            let mut number_has_dot = false;
            while let Some(&n) = chars.peek() {
                if n.is_ascii_digit() || n == '.' {
                    number_has_dot |= n == '.';
                    widened.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            if !number_has_dot {
                widened.push_str(".0");
            }
        }
    }
    evalexpr::eval_number(&widened).map_err(|e| format!("cannot evaluate `{expression}`: {e}"))
}

/// A whole number prints without a fraction (`391`, not `391.0`).
fn number(x: f64) -> serde_json::Value {
    if x.fract() == 0.0 && x.abs() < 9e15 {
        serde_json::Value::from(x as i64)
    } else {
        serde_json::Value::from(x)
    }
}

/// The longest run of arithmetic characters holding a digit and an operator.
/// The item of a request like "add milk to my list" (lower case), if it is one.
fn todo_item(text: &str) -> Option<String> {
    let rest = text.trim().strip_prefix("add ")?;
    let (item, _) = rest
        .split_once(" to my list")
        .or_else(|| rest.split_once(" to my todo"))
        .or_else(|| rest.split_once(" to the list"))?;
    let item = item.trim().trim_matches(['"', '\'']);
    (!item.is_empty()).then(|| item.to_owned())
}

fn find_expression(text: &str) -> Option<String> {
    let is_arith = |c: char| c.is_ascii_digit() || "+-*/^().% ".contains(c) || c == 'x' || c == '×';
    text.split(|c: char| !is_arith(c))
        .map(|s| s.trim().replace(['x', '×'], "*"))
        .filter(|s| s.chars().any(|c| c.is_ascii_digit()) && s.chars().any(|c| "+-*/^".contains(c)))
        .max_by_key(String::len)
}

/// The delegate a message asks for, and what for: an offered tool that
/// takes a `task` (as an agent's delegates do) named in the message, as
/// `ask_researcher` or `ask researcher`; the task is what follows the name.
fn delegate_asked<'a>(tools: &'a [ToolDefinition], text: &str) -> Option<(&'a str, String)> {
    tools
        .iter()
        .filter(|t| t.parameters["properties"].get("task").is_some())
        .find_map(|t| {
            let spoken = t.name.replace('_', " ");
            [t.name.as_str(), spoken.as_str()].iter().find_map(|name| {
                let needle = name.to_lowercase();
                let at = text.find(&needle)?;
                let task = text[at + needle.len()..]
                    .trim_start_matches([' ', ':', ','])
                    .trim();
                Some((
                    t.name.as_str(),
                    if task.is_empty() {
                        text.to_owned()
                    } else {
                        task.to_owned()
                    },
                ))
            })
        })
}

/// An offline stand-in for a model: it calls the calculator for arithmetic,
/// the clock for the time, the todo list for "add … to my list" and a
/// delegate named in the message ("ask researcher what is 2+2"), and says
/// plainly what it is otherwise.
pub fn offline_model() -> ScriptedModel {
    ScriptedModel::responder(|request| {
        let Some(last) = request.messages.last() else {
            return ScriptedReply::text("Hello.");
        };
        if last.role == Role::Tool {
            let asked = request.messages.iter().rev().find(|m| m.role == Role::User);
            if let Some((name, _)) =
                asked.and_then(|m| delegate_asked(&request.tools, &m.content.to_lowercase()))
            {
                return ScriptedReply::text(format!("{name} says: {}", last.content));
            }
            return match (asked.and_then(|m| find_expression(&m.content)), last.content.as_str()) {
                (_, result) if result.starts_with("Error") => ScriptedReply::text(format!("That failed: {result}")),
                (Some(expression), result) => ScriptedReply::text(format!("{expression} = {result}")),
                (None, result) if asked.is_some_and(|m| todo_item(&m.content.to_lowercase()).is_some()) => {
                    ScriptedReply::text(format!("Added to your todo list: {result}"))
                }
                (None, result) => ScriptedReply::text(format!("It is {result} (UTC).")),
            };
        }
        let text = last.content.to_lowercase();
        if let Some((name, task)) = delegate_asked(&request.tools, &text) {
            let args = serde_json::json!({ "task": task }).to_string();
            return ScriptedReply::tool_call("call_delegate", name, args);
        }
        if let Some(expression) = find_expression(&text) {
            let args = serde_json::json!({ "expression": expression }).to_string();
            return ScriptedReply::tool_call("call_calc", "calculator", args);
        }
        if let Some(item) = todo_item(&text) {
            let args = serde_json::json!({ "text": item }).to_string();
            return ScriptedReply::tool_call("call_todo", "todo_add", args);
        }
        if ["time", "date", "clock", "day"].iter().any(|w| text.contains(w)) {
            return ScriptedReply::tool_call("call_clock", "clock", "{}");
        }
        let earlier = request.messages.iter().filter(|m| m.role == Role::User).count() - 1;
        ScriptedReply::text(format!(
            "I am the offline model: I can do arithmetic, tell the time and add to your todo list (\"add milk to my list\"). This session has {earlier} earlier \
             message(s). Set THINKLIO_MODEL to talk to a real model."
        ))
    })
    .named("offline")
    // A host serves it for as long as it runs: kept requests would grow
    // its memory with every message (the load test saw 490 MiB in 5 min).
    .without_recording()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_offline_model_keeps_no_request_it_answered() {
        use thinklio_core::ChatModel as _;
        let model = offline_model();
        let request = thinklio_core::ChatRequest::new(
            "offline",
            vec![thinklio_core::ChatMessage::user("what is 2 + 3?")],
        );
        for _ in 0..3 {
            model.chat(&request).await.unwrap();
        }
        assert_eq!(model.calls(), 3);
        assert!(model.requests().is_empty());
    }

    #[test]
    fn todo_requests_are_found() {
        assert_eq!(todo_item("add milk to my list").as_deref(), Some("milk"));
        assert_eq!(
            todo_item("add \"oat milk\" to my todo list").as_deref(),
            Some("oat milk")
        );
        assert_eq!(todo_item("what is on my list"), None);
        assert_eq!(todo_item("add  to my list"), None);
    }

    #[test]
    fn a_delegate_named_in_a_message_is_asked() {
        let tools = [
            ToolDefinition {
                name: "calculator".to_owned(),
                description: String::new(),
                parameters: serde_json::json!({ "properties": { "expression": {} } }),
            },
            ToolDefinition {
                name: "ask_researcher".to_owned(),
                description: String::new(),
                parameters: serde_json::json!({ "properties": { "task": {} } }),
            },
        ];
        assert_eq!(
            delegate_asked(&tools, "please ask researcher: what is 2+2?"),
            Some(("ask_researcher", "what is 2+2?".to_owned()))
        );
        assert_eq!(
            delegate_asked(&tools, "ask_researcher"),
            Some(("ask_researcher", "ask_researcher".to_owned()))
        );
        assert_eq!(delegate_asked(&tools, "what is the calculator for"), None);
    }

    #[test]
    fn arithmetic_is_found_and_evaluated() {
        assert_eq!(find_expression("what is 17*23?").as_deref(), Some("17*23"));
        assert_eq!(evaluate("17*23"), Ok(391.0));
        assert_eq!(evaluate("7/2"), Ok(3.5));
        assert_eq!(find_expression("hello there"), None);
        assert!(evaluate("1/").is_err());
    }
}
