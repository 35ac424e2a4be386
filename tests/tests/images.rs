//! Images in messages: checked when sent, stored once per user and
//! content, shown to the model with their message (and only noted in later
//! turns), shown again to a run resumed in another process, refused with a
//! typed error that records nothing, and deleted with the user.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests speak through panics

use std::sync::Arc;

use serde_json::json;
use thinklio_core::approval::{ApprovalMode, Decision};
use thinklio_core::step::payload::ContextOutput;
use thinklio_core::*;
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;

/// A 4 × 3 PNG.
const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAQAAAADCAIAAAA7ljmRAAAAEElEQVR4nGM4kWIERww4OQBHKhBpqqu7qgAAAABJRU5ErkJggg==";

fn png() -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(PNG_BASE64)
        .unwrap()
}

/// Says how many images the message it answers carries; `note X` calls
/// `note`.
fn looker() -> ScriptedModel {
    ScriptedModel::responder(|r| {
        let last = r.messages.last().unwrap();
        if last.role == Role::Tool {
            return ScriptedReply::text("Noted.");
        }
        if let Some(what) = last.content.strip_prefix("note ") {
            return ScriptedReply::tool_call("n1", "note", json!({ "text": what }).to_string());
        }
        ScriptedReply::text(format!("I see {} image(s).", last.images.len()))
    })
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Note {
    /// What to note.
    text: String,
}

async fn runtime(path: &std::path::Path, model: Arc<ScriptedModel>) -> Runtime {
    Runtime::builder()
        .store(SqliteStore::open(path).await.unwrap())
        .model_arc(model)
        .capability(
            FunctionCapability::builder("note", "Notes something down.")
                .handler(|n: Note| async move { Ok::<_, String>(json!({ "noted": n.text })) }),
        )
        .agent(
            AgentDefinition::new("assistant", "gpt-4o-mini")
                .capabilities(["note"])
                .approval_mode(ApprovalMode::Draft),
        )
        .build()
        .unwrap()
}

async fn interaction(rt: &Runtime, id: InteractionId) -> Interaction {
    rt.sessions()
        .interaction(Principal::local(), id)
        .await
        .unwrap()
}

async fn context_of(rt: &Runtime, id: InteractionId) -> ContextOutput {
    rt.sessions()
        .steps(Principal::local(), id)
        .await
        .unwrap()
        .iter()
        .find(|s| s.kind == StepKind::Context)
        .and_then(|s| s.output_as::<ContextOutput>().unwrap())
        .unwrap()
}

#[tokio::test]
async fn an_image_reaches_the_model_with_its_message_and_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.db");
    let model = Arc::new(looker());
    let rt = runtime(&path, Arc::clone(&model)).await;
    let s = rt
        .open_session(Principal::local(), "assistant", "chat", None)
        .await
        .unwrap();

    let first = rt
        .send(
            s.id,
            Inbound::from("What is this?")
                .image(ImageInput::bytes_of_type(png(), "image/png"))
                .image(ImageInput::url("https://example.com/ant.jpg")),
        )
        .await
        .unwrap();
    assert_eq!(first.text, "I see 2 image(s).");
    let sent = model.requests()[0].messages.last().unwrap().clone();
    assert_eq!(sent.content, "What is this?");
    assert_eq!(sent.images.len(), 2);
    assert_eq!(sent.images[0].source, ImageSource::Bytes(png().into()));
    assert_eq!(sent.images[0].media_type.as_deref(), Some("image/png"));
    assert_eq!(sent.images[0].size, Some((4, 3)));
    assert_eq!(
        sent.images[1].source,
        ImageSource::Url("https://example.com/ant.jpg".into())
    );
    assert_eq!(context_of(&rt, first.interaction_id).await.images, 2);

    // A photo without a caption is a message; the same bytes again are the
    // same stored image.
    let second = rt
        .send(s.id, Inbound::from("").image(ImageInput::bytes(png())))
        .await
        .unwrap();
    assert_eq!(second.text, "I see 1 image(s).");
    let (one, two) = (
        interaction(&rt, first.interaction_id).await,
        interaction(&rt, second.interaction_id).await,
    );
    assert_eq!(one.images.len(), 2);
    assert_eq!(
        two.images,
        vec![one.images[0]],
        "stored once, referenced twice"
    );

    // Later turns note the images without sending them again.
    rt.send(s.id, "And now?").await.unwrap();
    let third = model.requests().last().unwrap().clone();
    assert!(third.messages.iter().all(|m| m.images.is_empty()));
    let users: Vec<&str> = third
        .messages
        .iter()
        .filter(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(
        users,
        [
            "What is this?\n[2 images were attached here; they are not shown again]",
            "[1 image was attached here; it is not shown again]",
            "And now?",
        ]
    );
    // The steps hold ids, never the bytes.
    for step in rt
        .sessions()
        .steps(Principal::local(), first.interaction_id)
        .await
        .unwrap()
    {
        let text = format!("{:?}{:?}", step.input, step.output);
        assert!(!text.contains(&PNG_BASE64[..20]), "{text}");
    }
}

#[tokio::test]
async fn refused_images_are_typed_errors_and_record_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(looker());
    let rt = runtime(&dir.path().join("r.db"), Arc::clone(&model)).await;
    let s = rt
        .open_session(Principal::local(), "assistant", "chat", None)
        .await
        .unwrap();
    let refused = |e: RuntimeError| match e {
        RuntimeError::Image(e) => {
            assert_eq!(e.code(), ErrorCode::RuntimeImageInvalid);
            e
        }
        other => panic!("not an image error: {other:?}"),
    };
    let mut cut = png();
    cut.truncate(14);
    let cases = [
        (ImageInput::bytes(cut), "not a PNG, JPEG"),
        (
            ImageInput::bytes(b"just some text".to_vec()),
            "not a PNG, JPEG",
        ),
        (
            ImageInput::bytes_of_type(png(), "image/jpeg"),
            "declared as image/jpeg but is image/png",
        ),
        (ImageInput::url("file:///etc/passwd"), "only https and http"),
        (
            ImageInput::bytes(vec![0x89; 6 * 1024 * 1024]),
            "at most 5242880",
        ),
    ];
    for (image, says) in cases {
        let e = refused(
            rt.send(s.id, Inbound::from("look").image(image))
                .await
                .unwrap_err(),
        );
        assert!(e.to_string().contains(says), "{e}");
    }
    let mut many = Inbound::from("look");
    for _ in 0..9 {
        many = many.image(ImageInput::bytes(png()));
    }
    assert!(matches!(
        refused(rt.send(s.id, many).await.unwrap_err()),
        ImageError::TooMany { count: 9, limit: 8 }
    ));
    assert!(matches!(
        rt.send(s.id, Inbound::from("  ")).await,
        Err(RuntimeError::EmptyMessage)
    ));
    assert_eq!(model.calls(), 0, "nothing reached the model");
    assert!(
        rt.sessions()
            .history(Principal::local(), s.id, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_run_resumed_in_another_process_shows_the_same_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resume.db");
    let model = Arc::new(looker());
    let rt = runtime(&path, Arc::clone(&model)).await;
    let s = rt
        .open_session(Principal::local(), "assistant", "chat", None)
        .await
        .unwrap();
    let reply = rt
        .send(
            s.id,
            Inbound::from("note the receipt").image(ImageInput::bytes(png())),
        )
        .await
        .unwrap();
    assert_eq!(reply.waiting.len(), 1, "the note waits for a decision");
    drop(rt);

    let model2 = Arc::new(looker());
    let rt = runtime(&path, Arc::clone(&model2)).await;
    rt.approvals()
        .decide(
            Principal::local(),
            reply.waiting[0],
            Decision::Approve,
            "test",
        )
        .await
        .unwrap();
    let resumed = model2.requests()[0].clone();
    let message = resumed
        .messages
        .iter()
        .find(|m| m.role == Role::User)
        .unwrap();
    assert_eq!(message.content, "note the receipt");
    assert_eq!(message.images.len(), 1);
    assert_eq!(message.images[0].source, ImageSource::Bytes(png().into()));
}

#[tokio::test]
async fn forgetting_a_user_deletes_their_images() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("f.db")).await.unwrap());
    let rt = Runtime::builder()
        .store_arc(Arc::clone(&store) as Arc<dyn Store>)
        .model(looker())
        .agent(AgentDefinition::new("assistant", "gpt-4o-mini"))
        .build()
        .unwrap();
    let user = Principal::new(AccountId::new(), UserId::new());
    let s = rt
        .open_session(user, "assistant", "chat", None)
        .await
        .unwrap();
    let reply = rt
        .send(s.id, Inbound::from("hi").image(ImageInput::bytes(png())))
        .await
        .unwrap();
    let id = store
        .interaction(reply.interaction_id)
        .await
        .unwrap()
        .images[0];
    assert!(store.image(id).await.is_ok());
    let report = rt
        .directory()
        .forget_user(user, user.account, user.user)
        .await
        .unwrap();
    assert_eq!(report.images, 1);
    assert!(matches!(
        store.image(id).await,
        Err(StoreError::NotFound { .. })
    ));
}
