//! The harness's model call: whole, or streamed with each piece of text
//! published as a [`TokenDelta`] while a host listens for tokens.

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
        if self.rt.tokens.receiver_count() == 0 {
            return self.rt.model.chat(request).await;
        }
        let mut stream = self.rt.model.chat_stream(request).await?;
        while let Some(event) = stream.next().await {
            match event? {
                StreamEvent::TextDelta(text) => {
                    // No receiver left is not an error: the text is in the outcome.
                    let _ = self.rt.tokens.send(TokenDelta {
                        session_id: self.interaction.session_id,
                        interaction_id: self.interaction.id,
                        step_id: step.id,
                        text,
                    });
                }
                StreamEvent::Done(response) => return Ok(response),
                _ => {}
            }
        }
        Err(ModelError::MalformedResponse(
            "the model's stream ended without its answer".to_owned(),
        ))
    }
}
