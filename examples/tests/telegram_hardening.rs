//! The Telegram bot against a Bot API server that misbehaves as real ones
//! do: chat actions refused or never answered, `getUpdates` that returns at
//! once, a chat whose user blocked the bot, messages the bot cannot read,
//! strangers of a private bot. Nothing of it holds an answer up or makes
//! the bot poll in a tight loop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bot_api;

use std::time::Duration;

use serde_json::json;

use bot_api::*;
use thinklio_core::AccountId;
use thinklio_core::channel::AccountMembers;
use thinklio_examples::telegram::{BotOptions, MIN_POLL_INTERVAL, TelegramChannel, client};

async fn answered_with_typing_failing(how: ChatActions) {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let (api, url) = FakeBotApi::start().await;
    {
        let mut s = api.state.lock().unwrap();
        s.chat_actions = how;
        // A server that answers `getUpdates` at once, with nothing.
        s.instant_polls = true;
    }
    let started = std::time::Instant::now();
    let options = BotOptions::default().typing_timeout(Duration::from_millis(200));
    let bot = start_bot_with(
        &dir.path().join("t.db"),
        &url,
        AccountId::new(),
        true,
        options,
    )
    .await;
    for (n, text) in ["one", "two", "three"].iter().enumerate() {
        api.say(ADA, "Ada", text);
        let sent = api.wait_for(ADA, n + 1).await;
        assert_eq!(sent[n], format!("echo: {text}"));
    }
    // The failure is logged once it is known (a refusal at once, silence
    // after the typing timeout)...
    let said = || logs.count("typing indicators fail");
    tokio::time::timeout(Duration::from_secs(30), async {
        while said() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a failing typing indicator is logged");
    // ...and not again for later messages.
    api.say(BOB, "Bob", "me too");
    assert_eq!(api.wait_for(BOB, 1).await, ["echo: me too"]);
    let (actions, polls) = {
        let s = api.state.lock().unwrap();
        (s.actions.len(), s.polls.len())
    };
    let elapsed = started.elapsed();
    bot.tasks.shutdown_background();
    assert!(actions >= 2, "typing was tried ({actions} times)");
    // Polls that return at once are spaced; a tight loop would make
    // thousands in this time.
    let spaced = elapsed.as_secs_f64() / MIN_POLL_INTERVAL.as_secs_f64();
    assert!(
        (polls as f64) <= spaced + 5.0,
        "{polls} getUpdates calls in {elapsed:?}"
    );
    assert_eq!(said(), 1, "said once, not per message or poll");
}

/// Chat actions refused, then never answered: one after the other, as each
/// counts the log line the other writes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_typing_indicator_never_holds_up_an_answer() {
    answered_with_typing_failing(ChatActions::Refuse).await;
    answered_with_typing_failing(ChatActions::Hang).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_polls_back_off_as_long_as_telegram_asks() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let (api, url) = FakeBotApi::start().await;
    // What Telegram answers while another process polls the same bot, and
    // under flood control. (Not a 5xx: teloxide itself waits 10 s after
    // one before returning it, which would only slow this test down.)
    let conflict = json!({
        "ok": false,
        "error_code": 409,
        "description": "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
    });
    let flood = json!({
        "ok": false,
        "error_code": 429,
        "description": "Too Many Requests: retry after 3",
        "parameters": { "retry_after": 3 }
    });
    api.state.lock().unwrap().poll_errors =
        [conflict.clone(), flood, conflict].into_iter().collect();
    let bot = start_bot(&dir.path().join("p.db"), &url, AccountId::new(), true).await;
    api.say(ADA, "Ada", "still there?");
    assert_eq!(api.wait_for(ADA, 1).await, ["echo: still there?"]);
    let polls = api.state.lock().unwrap().polls.clone();
    bot.tasks.shutdown_background();
    // Each failure waits before the next call: 0.5 s, then the 3 s flood
    // control asked for (longer than the 1 s backoff), then 2 s. Sleeps
    // never end early, so these are lower bounds whatever the load.
    let gaps: Vec<Duration> = polls.windows(2).take(3).map(|w| w[1] - w[0]).collect();
    let least = [500, 3_000, 2_000].map(Duration::from_millis);
    assert_eq!(gaps.len(), 3, "{polls:?}");
    for (gap, least) in gaps.iter().zip(least) {
        assert!(
            *gap >= least,
            "waited {gap:?} where {least:?} was due: {gaps:?}"
        );
    }
    assert_eq!(logs.count("getUpdates failed"), 1, "once per streak");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_telegram_refuses_blocks_no_other_chat() {
    let dir = tempfile::tempdir().unwrap();
    let (api, url) = FakeBotApi::start().await;
    api.state.lock().unwrap().blocked.insert(ADA);
    let bot = start_bot(&dir.path().join("b.db"), &url, AccountId::new(), true).await;
    // Ada blocked the bot: neither a command's answer nor a reply can reach her.
    api.say(ADA, "Ada", "/start");
    api.say(ADA, "Ada", "hello?");
    api.say(BOB, "Bob", "/start");
    api.say(BOB, "Bob", "hi");
    let bob = api.wait_for(BOB, 2).await;
    assert!(bob[0].starts_with("Hello!"), "{bob:?}");
    assert_eq!(bob[1], "echo: hi");
    api.wait_confirmed().await;
    // Ada's reply is given up once Telegram says it never takes it, rather
    // than tried for ever. (Redelivery at once: no other delivery runs.)
    let _redelivery = bot.telegram.spawn_redelivery(
        TelegramChannel::new(client(TOKEN, Some(&url)).unwrap()),
        Duration::ZERO,
        Duration::from_millis(50),
    );
    let mut events = bot.runtime.subscribe();
    while !bot.runtime.undelivered_replies().await.unwrap().is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("a reply Telegram refuses stays in the outbox");
    }
    assert!(api.sent_to(ADA).is_empty());
    bot.tasks.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_messages_and_strangers_are_answered_and_chats_end_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let (api, url) = FakeBotApi::start().await;
    let account = AccountId::new();
    let options = BotOptions::default()
        .allow_only([ADA.to_string()])
        .chat_idle(Duration::from_millis(50));
    let bot = start_bot_with(&dir.path().join("u.db"), &url, account, true, options).await;
    api.sticker(ADA, "Ada");
    let sent = api.wait_for(ADA, 1).await;
    assert!(
        sent[0].contains("cannot read this kind of message"),
        "{sent:?}"
    );
    api.say(BOB, "Bob", "let me in");
    let refused = api.wait_for(BOB, 1).await;
    assert!(refused[0].starts_with("This bot is private"), "{refused:?}");
    let bob = AccountMembers::new(account).user_id("telegram", &BOB.to_string());
    assert!(
        bot.runtime
            .sessions()
            .of_user(thinklio_core::Actor::Account(account), bob)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        bot.runtime
            .directory()
            .role(thinklio_core::Actor::Account(account), bob)
            .await
            .unwrap()
            .is_none()
    );
    // Many messages in one chat: one worker, one pending wake-up, all
    // answered in order.
    for n in 0..30 {
        api.say(ADA, "Ada", &format!("m{n}"));
    }
    let sent = api.wait_for(ADA, 31).await;
    let expected: Vec<String> = (0..30).map(|n| format!("echo: m{n}")).collect();
    assert_eq!(sent[1..], expected[..]);
    // Idle, the chat's worker ends.
    tokio::time::timeout(Duration::from_secs(30), async {
        while bot.telegram.active_chats() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("an idle chat's worker ends");
    api.say(ADA, "Ada", "still here");
    assert_eq!(api.wait_for(ADA, 32).await[31], "echo: still here");
    bot.tasks.shutdown_background();
}
