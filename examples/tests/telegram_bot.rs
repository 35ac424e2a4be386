//! The Telegram bot against a local Bot API server that speaks the Bot API's
//! wire format (`POST /bot<token>/<method>` with JSON, answers
//! `{"ok": true, "result": …}`; `getUpdates` long-polls with `offset` and
//! `timeout`; updates, messages, chats and users as the Bot API documents
//! them): two users, their replies, `/usage`, `/forget`, a reply longer than
//! a Telegram message, a job's follow-up, and a bot killed mid-conversation
//! that, restarted, loses no message and answers none twice. Webhook mode
//! takes the same updates over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bot_api;

use std::time::Duration;

use bot_api::*;
use serde_json::json;
use thinklio_core::channel::{AccountMembers, ChannelRouter};
use thinklio_core::{
    AccountId, AccountPolicy, Actor, AgentDefinition, AgentId, AgentState, DirectoryStore,
    FactOwner, JobStore, NewFact, Principal, Runtime, SessionStore,
};
use thinklio_examples::telegram::{MESSAGE_LIMIT, TelegramBot, TelegramChannel, client};
use thinklio_store_sqlite::SqliteStore;
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_commands_long_replies_follow_ups_and_a_restart() {
    let logs = capture_logs();

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bot.db");
    let (api, url) = FakeBotApi::start().await;
    let account = AccountId::new();
    // This bot's model holds any `slow …` message: it is killed while thinking.
    let bot = start_bot(&db, &url, account, false).await;

    // Two users, each answered in their own chat.
    api.say(ADA, "Ada", "hello");
    api.say(BOB, "Bob", "hi there");
    assert_eq!(api.wait_for(ADA, 1).await, ["echo: hello"]);
    assert_eq!(api.wait_for(BOB, 1).await, ["echo: hi there"]);
    {
        let s = api.state.lock().unwrap();
        for chat in [ADA, BOB] {
            assert!(
                s.actions.contains(&(chat, "typing".to_owned())),
                "no typing indicator in {chat}"
            );
        }
    }

    // A reply longer than a Telegram message arrives in parts, in order.
    api.say(ADA, "Ada", "long");
    let sent = api.wait_for(ADA, 3).await;
    assert_eq!(sent[1..].concat(), long_text());
    assert!(long_text().len() > MESSAGE_LIMIT && sent[1].encode_utf16().count() <= MESSAGE_LIMIT);

    // A job: the answer says it is under way; the result comes as a new message.
    api.say(ADA, "Ada", "count one two three four");
    let sent = api.wait_for(ADA, 5).await;
    assert_eq!(sent[3], "I'll get back to you with the count.");
    assert!(
        sent[4].starts_with("Your count is back.") && sent[4].contains(r#"{"words":4}"#),
        "{}",
        sent[4]
    );

    // /usage: each user's own spend.
    let ada_user = AccountMembers::new(account).user_id("telegram", &ADA.to_string());
    api.say(ADA, "Ada", "/usage");
    api.say(BOB, "Bob", "/usage");
    let ada_usage = api.wait_for(ADA, 6).await.pop().unwrap();
    let bob_usage = api.wait_for(BOB, 2).await.pop().unwrap();
    // Ada: hello, long, count (two calls) and the follow-up; Bob: one.
    assert!(ada_usage.starts_with("This month: 5 calls"), "{ada_usage}");
    assert!(bob_usage.starts_with("This month: 1 calls"), "{bob_usage}");

    // /forget deletes what was learned about the user, and only that user.
    let ada = Principal::new(account, ada_user);
    bot.runtime
        .knowledge()
        .add(
            &ada,
            NewFact::new(
                account,
                FactOwner::User(ada_user),
                "Ada",
                "likes",
                "green tea",
            ),
        )
        .await
        .unwrap();
    let bob_user = AccountMembers::new(account).user_id("telegram", &BOB.to_string());
    let bob_sessions = bot
        .runtime
        .sessions()
        .of_user(Actor::Account(account), bob_user)
        .await
        .unwrap();
    api.say(ADA, "Ada", "/forget");
    let forgot = api.wait_for(ADA, 7).await.pop().unwrap();
    assert!(
        forgot.starts_with("Done: I deleted everything I held about you: 1 conversation(s), 4 message(s), 1 job(s) and the 1 fact(s)"),
        "{forgot}"
    );
    let left = bot
        .runtime
        .knowledge()
        .export_user(Actor::Account(account), account, ada_user)
        .await
        .unwrap();
    assert!(!left.to_string().contains("green tea"));
    // Read the file beside the bot, as its operator would.
    let store = SqliteStore::open(&db).await.unwrap();
    assert!(
        store.sessions_of_user(ada_user).await.unwrap().is_empty(),
        "her conversations are gone"
    );
    assert_eq!(
        store.role(account, ada_user).await.unwrap(),
        None,
        "and her membership"
    );
    assert!(
        store
            .unfinished_jobs()
            .await
            .unwrap()
            .iter()
            .all(|j| j.principal.user != ada_user),
        "and her jobs"
    );
    assert_eq!(
        store.sessions_of_user(bob_user).await.unwrap(),
        bob_sessions,
        "Bob keeps everything"
    );

    // A message the runtime refuses (over its 64 KiB limit) is answered with
    // the reason and does not hold up the next one.
    api.say(BOB, "Bob", &"x".repeat(70 * 1024));
    api.say(BOB, "Bob", "still there?");
    let bob = api.wait_for(BOB, 4).await;
    assert!(
        bob[2].starts_with("I cannot take this message: the message has 71680 bytes"),
        "{}",
        bob[2]
    );
    assert_eq!(bob[3], "echo: still there?");

    // /new: the next message starts a session that has not seen the earlier ones.
    api.say(ADA, "Ada", "after forgetting");
    assert_eq!(
        api.wait_for(ADA, 8).await.pop().unwrap(),
        "echo: after forgetting",
        "a forgotten user starts afresh"
    );
    let before = bot
        .runtime
        .sessions()
        .of_user(Actor::Account(account), ada_user)
        .await
        .unwrap()
        .len();
    api.say(ADA, "Ada", "/new");
    assert_eq!(
        api.wait_for(ADA, 9).await.pop().unwrap(),
        "Started a new conversation."
    );
    api.say(ADA, "Ada", "fresh start");
    assert_eq!(
        api.wait_for(ADA, 10).await.pop().unwrap(),
        "echo: fresh start"
    );
    let sessions = bot
        .runtime
        .sessions()
        .of_user(Actor::Account(account), ada_user)
        .await
        .unwrap();
    assert_eq!(sessions.len(), before + 1);

    // The bot is killed while it thinks about Ada's message; Bob writes while it is down.
    api.say(ADA, "Ada", "slow question");
    wait_until_thinking(&bot.runtime, account, "slow question").await;
    bot.tasks.shutdown_background();
    api.say(BOB, "Bob", "are you there?");

    let second = start_bot(&db, &url, account, true).await;
    api.say(ADA, "Ada", "after restart");
    let ada = api.wait_for(ADA, 12).await;
    let bob = api.wait_for(BOB, 5).await;
    assert_eq!(&ada[10..], ["echo: slow question", "echo: after restart"]);
    assert_eq!(bob[4], "echo: are you there?");

    // Nothing was answered twice: every reply is unique in its chat, and
    // nothing more arrives (the next message is answered next).
    api.say(BOB, "Bob", "last one");
    let bob = api.wait_for(BOB, 6).await;
    assert_eq!(bob.len(), 6, "{bob:?}");
    assert_eq!(bob[5], "echo: last one");
    for chat in [ADA, BOB] {
        let sent = api.sent_to(chat);
        let mut unique = sent.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            sent.len(),
            "chat {chat} got a reply twice: {sent:?}"
        );
    }
    assert_eq!(api.sent_to(ADA).len(), 12);
    // Nothing waits in the outbox once the last reply is marked delivered.
    let mut events = second.runtime.subscribe();
    while !second
        .runtime
        .undelivered_replies()
        .await
        .unwrap()
        .is_empty()
    {
        tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("a reply stays undelivered")
            .unwrap();
    }
    second.tasks.shutdown_background();

    assert!(
        !logs.text().contains(TOKEN),
        "the bot token reached a log line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_mode_takes_updates_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hook.db");
    let (api, url) = FakeBotApi::start().await;
    let store = SqliteStore::open(&db).await.unwrap();
    let account = AccountId::new();
    store
        .put_account(account, "telegram", AccountPolicy::default())
        .await
        .unwrap();
    let bot = client(TOKEN, Some(&url)).unwrap();
    let router = ChannelRouter::new();
    router.add(TelegramChannel::new(bot.clone()));
    let (_gate, rx) = watch::channel(true);
    let runtime = Runtime::builder()
        .store(store)
        .model(bot_model(rx))
        .agent(AgentDefinition::new("assistant", "bot-model"))
        .reply_sink(router)
        .build()
        .unwrap();
    let telegram = TelegramBot::new(runtime, bot, "assistant", account);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/telegram/updates", listener.local_addr().unwrap());
    let app = telegram.webhook(&hook, "s3cret-token").await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    assert_eq!(
        api.state.lock().unwrap().webhook,
        Some((hook.clone(), "s3cret-token".to_owned())),
        "setWebhook was not called with the URL and secret"
    );
    let http = reqwest::Client::new();
    let update = api.update(ADA, "Ada", "by webhook");
    let refused = http.post(&hook).json(&update).send().await.unwrap();
    assert_eq!(
        refused.status(),
        401,
        "an update without the secret token is refused"
    );
    for _ in 0..2 {
        // Telegram may deliver an update twice; it is answered once.
        let response = http
            .post(&hook)
            .header("X-Telegram-Bot-Api-Secret-Token", "s3cret-token")
            .json(&update)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // The chat's messages are answered in order: once the next one is
    // answered, the second delivery of the first has been handled too.
    let next = api.update(ADA, "Ada", "and again");
    let response = http
        .post(&hook)
        .header("X-Telegram-Bot-Api-Secret-Token", "s3cret-token")
        .json(&next)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        api.wait_for(ADA, 2).await,
        ["echo: by webhook", "echo: and again"]
    );
}

#[test]
fn any_update_a_bot_api_server_sends_is_handled_without_panic() {
    use proptest::prelude::*;
    use thinklio_core::fuzz;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (api, telegram) = rt.block_on(async {
        let (api, url) = FakeBotApi::start().await;
        let store = SqliteStore::open(dir.path().join("fuzz.db")).await.unwrap();
        let account = AccountId::new();
        store
            .put_account(account, "telegram", AccountPolicy::default())
            .await
            .unwrap();
        let (_gate, rx) = watch::channel(true);
        let runtime = Runtime::builder()
            .store(store)
            .model(bot_model(rx))
            .agent(AgentDefinition::new("assistant", "bot-model"))
            .build()
            .unwrap();
        let bot = client(TOKEN, Some(&url)).unwrap();
        (api, TelegramBot::new(runtime, bot, "assistant", account))
    });
    let mut photo = api.update(ADA, "Ada", "caption");
    photo["message"]["photo"] = json!([{ "file_id": "AgAC", "file_unique_id": "AQAD", "width": 90, "height": 51, "file_size": 1234 }]);
    let mut document = api.update(BOB, "Bob", "");
    document["message"]["document"] = json!({ "file_id": "BQAC", "file_unique_id": "AgAD", "file_name": "a.pdf", "mime_type": "application/pdf", "file_size": 5 });
    let real = vec![
        api.update(ADA, "Ada", "hello"),
        api.update(ADA, "Ada", "/usage"),
        api.update(BOB, "Bob", "/new@thinklio_bot"),
        photo,
        document,
    ];
    let updates = prop_oneof![
        prop::sample::select(real).prop_flat_map(fuzz::mutated),
        fuzz::json(),
    ];
    proptest!(fuzz::config(), |(update in updates)| {
        // What fails to read as an update is refused before the bot sees
        // it (`422` on the webhook, an error of `getUpdates`); what reads
        // is handled: an answer or an error, never a panic.
        if let Ok(update) = serde_json::from_value::<teloxide_core::types::Update>(update) {
            let _ = rt.block_on(telegram.handle(update));
        }
    });
}

/// A call that waits for a decision is shown with Approve and Reject
/// buttons; a press by the user approves it and the reply follows; another
/// user's press does not count, and a rejected call never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_button_decides_a_proposed_call() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bot.db");
    let (api, url) = FakeBotApi::start().await;
    let account = AccountId::new();
    let bot = start_bot(&db, &url, account, true).await;

    api.say(ADA, "Ada", "remember the milk");
    let sent = api.wait_for(ADA, 1).await;
    assert_eq!(sent, [r#"Run remember with {"text":"the milk"}?"#]);
    let keyboard = api.state.lock().unwrap().keyboards[0].1.clone();
    let labels: Vec<&str> = keyboard["inline_keyboard"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["text"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["Approve", "Reject"]);

    // Bob presses a button of Ada's chat: it does not count.
    let pressed = api.press(BOB, "Bob", "approve:");
    api.wait_confirmed().await;
    wait_answered(&api, &pressed).await;
    let said = answer_of(&api, &pressed);
    assert!(said.starts_with("That did not count"), "{said}");

    let pressed = api.press(ADA, "Ada", "approve:");
    let sent = api.wait_for(ADA, 2).await;
    assert!(
        sent[1].starts_with("Noted:") && sent[1].contains("the milk"),
        "{sent:?}"
    );
    assert_eq!(answer_of(&api, &pressed), "Approved.");

    api.say(ADA, "Ada", "remember the eggs");
    api.wait_for(ADA, 3).await;
    api.press(ADA, "Ada", "reject:");
    let sent = api.wait_for(ADA, 4).await;
    bot.tasks.shutdown_background();
    assert!(sent[3].contains("approval.rejected"), "{sent:?}");
}

/// `/mode`: a chat makes its conversation more careful (observe: the call
/// is only proposed, no button), says its mode, refuses a word it does not
/// know, and goes back to the agent's (draft: the button again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_chooses_its_approval_mode() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bot.db");
    let (api, url) = FakeBotApi::start().await;
    let bot = start_bot(&db, &url, AccountId::new(), true).await;

    api.say(ADA, "Ada", "/mode observe");
    let sent = api.wait_for(ADA, 1).await;
    assert!(sent[0].contains("now runs in observe mode"), "{sent:?}");
    api.say(ADA, "Ada", "remember the milk");
    let sent = api.wait_for(ADA, 2).await;
    assert!(sent[1].contains("approval.observe_only"), "{sent:?}");
    assert!(
        api.state.lock().unwrap().keyboards.is_empty(),
        "nothing to decide"
    );
    api.say(ADA, "Ada", "/mode");
    let sent = api.wait_for(ADA, 3).await;
    assert_eq!(sent[2], "This conversation runs in observe mode.");
    api.say(ADA, "Ada", "/mode reckless");
    let sent = api.wait_for(ADA, 4).await;
    assert!(sent[3].starts_with("Say /mode observe"), "{sent:?}");
    api.say(ADA, "Ada", "/mode agent");
    api.wait_for(ADA, 5).await;
    api.say(ADA, "Ada", "remember the eggs");
    let sent = api.wait_for(ADA, 6).await;
    bot.tasks.shutdown_background();
    assert_eq!(sent[5], r#"Run remember with {"text":"the eggs"}?"#);
    assert_eq!(api.state.lock().unwrap().keyboards.len(), 1);
}

/// `/agent NAME`: a chat talks to another agent of the bot's account,
/// keeps it across a restart, and goes back; an agent it may not use
/// (unknown, another account's, paused) is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_picks_its_agent_and_keeps_it_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bot.db");
    let (api, url) = FakeBotApi::start().await;
    let account = AccountId::new();
    let bot = start_bot(&db, &url, account, true).await;
    let directory = bot.runtime.directory();
    let host = Actor::Account(account);
    directory
        .put_agent(
            host,
            AgentDefinition::new("poet", "bot-model").system_prompt("You rhyme."),
        )
        .await
        .unwrap();
    directory
        .put_agent(host, AgentDefinition::new("resting", "bot-model"))
        .await
        .unwrap();
    directory
        .set_agent_state(host, &AgentId::new("resting"), AgentState::Paused)
        .await
        .unwrap();
    let elsewhere = AccountId::new();
    SqliteStore::open(&db)
        .await
        .unwrap()
        .put_account(elsewhere, "elsewhere", AccountPolicy::default())
        .await
        .unwrap();
    directory
        .put_agent(
            Actor::Account(elsewhere),
            AgentDefinition::new("theirs", "bot-model"),
        )
        .await
        .unwrap();

    api.say(ADA, "Ada", "/agent");
    let sent = api.wait_for(ADA, 1).await;
    assert_eq!(
        sent[0],
        "This chat talks to assistant. Say /agent NAME to choose another: assistant, poet."
    );
    api.say(ADA, "Ada", "/agent poet");
    let sent = api.wait_for(ADA, 2).await;
    assert_eq!(sent[1], "Now talking to poet in a new conversation.");
    api.say(ADA, "Ada", "hello");
    let sent = api.wait_for(ADA, 3).await;
    assert_eq!(sent[2], "in rhyme: hello");
    // Bob's chat still talks to the bot's own agent.
    api.say(BOB, "Bob", "hello");
    assert_eq!(api.wait_for(BOB, 1).await, ["echo: hello"]);

    for (name, why) in [
        ("nobody", "is not registered"),
        ("theirs", "does not belong to account"),
        ("resting", "is paused"),
    ] {
        let n = api.sent_to(ADA).len();
        api.say(ADA, "Ada", &format!("/agent {name}"));
        let sent = api.wait_for(ADA, n + 1).await;
        assert!(
            sent[n].starts_with(&format!("I cannot switch to {name}:")),
            "{sent:?}"
        );
        assert!(sent[n].contains(why), "{}", sent[n]);
    }

    // A restart keeps the choice (every update confirmed first, so that
    // none is taken again).
    api.wait_confirmed().await;
    bot.tasks.shutdown_background();
    let bot = start_bot(&db, &url, account, true).await;
    let n = api.sent_to(ADA).len();
    api.say(ADA, "Ada", "still there?");
    let sent = api.wait_for(ADA, n + 1).await;
    assert_eq!(sent[n], "in rhyme: still there?");
    api.say(ADA, "Ada", "/agent assistant");
    api.say(ADA, "Ada", "back");
    let sent = api.wait_for(ADA, n + 3).await;
    bot.tasks.shutdown_background();
    assert_eq!(
        sent[n + 1..],
        [
            "Now talking to assistant in a new conversation.",
            "echo: back"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_reaches_the_model_in_its_largest_size_that_fits() {
    let dir = tempfile::tempdir().unwrap();
    let (api, url) = FakeBotApi::start().await;
    let bot = start_bot(&dir.path().join("bot.db"), &url, AccountId::new(), true).await;

    // A photo with a caption: the largest size is fetched (getFile, then
    // the file) and shown to the model with the caption.
    let photo = api.photo(ADA, "Ada", Some("what is this?"));
    api.push(photo);
    let sent = api.wait_for(ADA, 1).await;
    assert_eq!(
        sent[0],
        format!(
            "I see 320x180 image/jpeg of {} bytes; you said: what is this?",
            LARGE_PHOTO.len()
        )
    );
    // Without a caption, the photo alone is the message.
    let photo = api.photo(BOB, "Bob", None);
    api.push(photo);
    let sent = api.wait_for(BOB, 1).await;
    assert!(sent[0].starts_with("I see 320x180 image/jpeg"), "{sent:?}");
    assert!(sent[0].ends_with("you said: "), "{sent:?}");
    bot.tasks.shutdown_background();

    // With a limit under the large size, the small one is fetched; under
    // both, the photo is described and the model is told it was not read.
    for (limit, says) in [
        (LARGE_PHOTO.len() - 1, "I see 90x51 image/jpeg".to_owned()),
        (
            SMALL_PHOTO.len() - 1,
            "echo: [attached photo (not shown: it could not be read)".to_owned(),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (api, url) = FakeBotApi::start().await;
        let options = thinklio_examples::telegram::BotOptions::default().max_image_bytes(limit);
        let bot = start_bot_with(
            &dir.path().join("bot.db"),
            &url,
            AccountId::new(),
            true,
            options,
        )
        .await;
        let photo = api.photo(ADA, "Ada", None);
        api.push(photo);
        let sent = api.wait_for(ADA, 1).await;
        bot.tasks.shutdown_background();
        assert!(sent[0].starts_with(&says), "{limit}: {sent:?}");
        let downloads = api.state.lock().unwrap().downloads.len();
        assert_eq!(downloads, usize::from(limit >= SMALL_PHOTO.len()));
    }
}

async fn wait_answered(api: &FakeBotApi, query: &str) {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let notified = api.news.notified();
            if api
                .state
                .lock()
                .unwrap()
                .answered
                .iter()
                .any(|(q, _)| q == query)
            {
                return;
            }
            notified.await;
        }
    })
    .await
    .expect("the button press was answered");
}

fn answer_of(api: &FakeBotApi, query: &str) -> String {
    api.state
        .lock()
        .unwrap()
        .answered
        .iter()
        .find(|(q, _)| q == query)
        .map(|(_, t)| t.clone())
        .unwrap_or_default()
}
