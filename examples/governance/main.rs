//! Governance in Thinklio: two accounts with teams and users, an assignment
//! that narrows an agent for one team, an account deny-list, a user from
//! another account turned away, and a budget that stops an agent — all on an
//! offline scripted model.
//!
//! ```text
//! cargo run --example governance
//! ```

use std::collections::BTreeSet;
use std::process::ExitCode;

use schemars::JsonSchema;
use serde::Deserialize;
use thinklio_capabilities::builtin;
use thinklio_core::{
    AccountId, AccountPolicy, AccountRole, AgentDefinition, Assignment, BudgetLimit, Cost,
    DirectoryStore, FunctionCapability, ModelPrice, PriceTable, Principal, Role, Runtime,
    RuntimeConfig, Scope, TeamId, UserId,
};
use thinklio_llm::{ScriptedModel, ScriptedReply};
use thinklio_store_sqlite::SqliteStore;

#[derive(Deserialize, JsonSchema)]
struct Add {
    a: i64,
    b: i64,
}

/// Calls the calculator when it has it, then answers with the tools it saw.
fn offline_model() -> ScriptedModel {
    ScriptedModel::responder(|request| {
        let mut tools: Vec<&str> = request.tools.iter().map(|t| t.name.as_str()).collect();
        tools.sort_unstable();
        match request.messages.last().map(|m| m.role) {
            Some(Role::User) if tools.contains(&"calculator") => {
                ScriptedReply::tool_call("c1", "calculator", r#"{"a": 2, "b": 3}"#)
            }
            _ => ScriptedReply::text(format!("I could use: {}", tools.join(", "))),
        }
    })
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!("thinklio-governance-{}.db", std::process::id()));
    let store = SqliteStore::open(&path).await?;
    let mut config = RuntimeConfig::default();
    config.enforce_directory = true;
    let calculator = FunctionCapability::builder("calculator", "Adds two integers.")
        .handler(|x: Add| async move { Ok::<_, String>(x.a + x.b) });
    // The host keeps its store: it sets its directory up through it.
    let runtime = Runtime::builder()
        .store(store.clone())
        .model(offline_model())
        .config(config)
        // Illustrative prices for the offline model, so that budgets have something to count.
        .prices(PriceTable::new().with("offline", ModelPrice::usd_per_million(500.0, 500.0)))
        .capability(calculator)
        .capability(builtin::clock())
        .capability(builtin::web_fetch())
        .build()?;
    let dir = &store;

    // Two accounts.
    let (acme, globex) = (AccountId::new(), AccountId::new());
    dir.put_account(acme, "Acme", AccountPolicy::default())
        .await?;
    dir.put_account(globex, "Globex", AccountPolicy::default())
        .await?;
    let interns = TeamId::new();
    dir.put_team(acme, interns, "interns").await?;
    let (ada, ian, gus) = (UserId::new(), UserId::new(), UserId::new());
    dir.set_member(acme, ada, AccountRole::Admin).await?;
    dir.set_member(acme, ian, AccountRole::Viewer).await?;
    dir.add_to_team(interns, ian).await?;
    dir.set_member(globex, gus, AccountRole::Owner).await?;

    // Ada (an admin) defines Acme's assistant and assigns it account-wide;
    // for interns it is narrowed to the calculator.
    let ada_p = Principal::new(acme, ada);
    let assistant = AgentDefinition::new("assistant", "offline").capabilities([
        "calculator",
        "clock",
        "web_fetch",
    ]);
    runtime.directory().put_agent(&ada_p, assistant).await?;
    // Then Acme denies web access to all its agents: hidden at run time, and
    // no agent may be given it again.
    let deny: BTreeSet<String> = ["web_fetch".to_string()].into();
    dir.put_account(
        acme,
        "Acme",
        AccountPolicy {
            deny,
            ..Default::default()
        },
    )
    .await?;
    dir.assign(Assignment {
        agent_id: "assistant".into(),
        scope: Scope::Account(acme),
        capabilities: None,
        approval_mode: None,
    })
    .await?;
    let only_calculator: BTreeSet<String> = ["calculator".to_string()].into();
    dir.assign(Assignment {
        agent_id: "assistant".into(),
        scope: Scope::Team(interns),
        capabilities: Some(only_calculator),
        approval_mode: None,
    })
    .await?;

    let ask = |principal: Principal, text: &'static str| {
        let runtime = runtime.clone();
        async move {
            let session = runtime
                .open_session(principal, "assistant", "cli", None)
                .await?;
            let reply = runtime.send(session.id, text).await?;
            Ok::<_, Box<dyn std::error::Error>>(reply)
        }
    };
    println!("ada (admin):          {}", ask(ada_p, "hello").await?.text);
    let ian_p = Principal::new(acme, ian).with_team(interns);
    println!("ian (intern):         {}", ask(ian_p, "hello").await?.text);
    match runtime
        .open_session(Principal::new(globex, gus), "assistant", "cli", None)
        .await
    {
        Ok(_) => println!("gus (Globex):         got in — this must not happen"),
        Err(e) => println!("gus (Globex):         refused [{}] {e}", e.code()),
    }
    match runtime
        .directory()
        .put_agent(
            &Principal::new(globex, gus),
            AgentDefinition::new("assistant", "offline").capabilities(["web_fetch"]),
        )
        .await
    {
        Ok(_) => println!("gus takes over Acme's assistant: allowed — this must not happen"),
        Err(e) => println!(
            "gus takes over Acme's assistant: refused [{}] {e}",
            e.code()
        ),
    }
    match runtime
        .directory()
        .put_agent(
            &Principal::new(acme, ian),
            AgentDefinition::new("rogue", "offline"),
        )
        .await
    {
        Ok(_) => println!("ian defines an agent: allowed — this must not happen"),
        Err(e) => println!("ian defines an agent: refused [{}] {e}", e.code()),
    }

    // A monthly budget for Ian, already spent by what he asked above.
    let spent = runtime
        .usage()
        .totals(&ada_p, &thinklio_core::UsageFilter::all().user(ian))
        .await?
        .cost;
    runtime
        .usage()
        .set_budget(
            &ada_p,
            BudgetLimit::monthly(Scope::User(ian), spent.max(Cost::from_nanos(1))),
        )
        .await?;
    println!("ian, over budget:     {}", ask(ian_p, "again").await?.text);
    println!("ada, unaffected:      {}", ask(ada_p, "again").await?.text);
    for row in runtime
        .usage()
        .report(
            &ada_p,
            thinklio_core::UsageGroup::User,
            &thinklio_core::UsageFilter::all(),
        )
        .await?
    {
        let who = if row.key == ada.to_string() {
            "ada"
        } else if row.key == ian.to_string() {
            "ian"
        } else {
            "?"
        };
        println!(
            "usage {who}: {} calls, {} tokens, {}",
            row.totals.calls,
            row.totals.tokens.total(),
            row.totals.cost
        );
    }
    drop(runtime);
    thinklio_examples::remove_database(&path);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
