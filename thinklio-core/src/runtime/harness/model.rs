//! The harness's model call: whole, or streamed with each piece of text
//! published as a [`TokenDelta`] while a host listens for tokens.
//!
//! With content rules, no piece is published before the rules have passed
//! the whole text of the answer: a rule may judge what only the whole text
//! shows, so pieces are held until the answer is complete and checked, and
//! an answer the rules block is never published at all. Listeners then see
//! the text in one burst, after the model finished, rather than as it is
//! written.

use futures::StreamExt;

use super::Run;
use crate::event::TokenDelta;
use crate::model::{ChatRequest, ChatResponse, ModelError, StreamEvent};
use crate::step::Step;

impl Run {
    /// One model call: streamed, with each piece of text published, while a
    /// host listens for tokens; whole otherwise.
    pub(super) async fn call_model(
        &self,
        request: &ChatRequest,
        step: &Step,
    ) -> Result<ChatResponse, ModelError> {
        if !self.rt.streams_tokens(self.interaction.session_id) {
            return self.rt.model.chat(request).await;
        }
        let publish = |text: String| {
            self.rt.publish_token(TokenDelta {
                session_id: self.interaction.session_id,
                interaction_id: self.interaction.id,
                step_id: step.id,
                text,
            });
        };
        let mut held = Vec::new();
        let mut stream = self.rt.model.chat_stream(request).await?;
        while let Some(event) = stream.next().await {
            match event? {
                StreamEvent::TextDelta(text) if self.rt.content.is_some() => held.push(text),
                StreamEvent::TextDelta(text) => publish(text),
                StreamEvent::Done(response) => {
                    if !held.is_empty()
                        && self.passes_content_rules(&response.message.content).await
                    {
                        held.into_iter().for_each(publish);
                    }
                    return Ok(response);
                }
                _ => {}
            }
        }
        Err(ModelError::MalformedResponse(
            "the model's stream ended without its answer".to_owned(),
        ))
    }

    /// Whether the host's content rules let `text` reach the user (the
    /// `respond` step checks the final reply again and records why).
    async fn passes_content_rules(&self, text: &str) -> bool {
        match &self.rt.content {
            Some(rules) => rules
                .check_reply(&self.interaction.principal, text)
                .await
                .is_ok(),
            None => true,
        }
    }
}
