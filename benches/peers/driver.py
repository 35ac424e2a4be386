"""The peers of Thinklio's benchmark suite, on the suite's scenarios.

Run by `cargo run --release -p thinklio-benches -- all` in the virtual
environment `benches/peers/setup.sh` makes (pinned in requirements.txt):

    python driver.py SYSTEM SCENARIO --n N --db PATH [--delay-ms MS] [--synchronous normal|full]

SYSTEM is `langgraph` (a StateGraph with a ToolNode, checkpointed by
SqliteSaver / AsyncSqliteSaver, durability "sync") or `openai-agents` (an
Agent with a function tool, its conversation in an SQLiteSession). Both are
driven by the same fake model as Thinklio: the first call asks for the tool
`add(2, 3)`, the second answers "5"; `--delay-ms` makes each call take that
long (an asyncio sleep, as waiting on a provider would).

--synchronous sets SQLite's `synchronous` on every connection the system
uses (WAL either way): `full` (the default of both peers) syncs each commit
to disk, `normal` survives a process kill but not a power cut.

SCENARIO:
  harness      N interactions one after another, instant model
  concurrency  N interactions in flight at once, the model taking --delay-ms
  recovery     N interactions stopped before their tool call, then resumed
  coldstart    one interaction, for the time from process start to its reply

Prints one JSON object. A scenario a system has no equivalent of prints
{"offered": false, "why": ...}.
"""

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import sys
import time
import uuid
from importlib.metadata import version


def rss_kb() -> int:
    """The process's resident memory now, in KiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_rss_kb() -> int:
    """The process's peak resident memory, in KiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return 0.0
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


# --- LangGraph ---------------------------------------------------------------


def langgraph_graph(checkpointer, delay_s, stop_before_tools=False):
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.tools import tool
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    @tool
    def add(a: int, b: int) -> int:
        """Adds two integers."""
        return a + b

    def answer(messages):
        if isinstance(messages[-1], ToolMessage):
            return AIMessage(content=str(messages[-1].content))
        return AIMessage(
            content="",
            tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}, "id": "call_" + uuid.uuid4().hex[:8]}],
        )

    def think(state: MessagesState):
        return {"messages": [answer(state["messages"])]}

    async def athink(state: MessagesState):
        if delay_s:
            await asyncio.sleep(delay_s)
        return {"messages": [answer(state["messages"])]}

    def route(state: MessagesState):
        return "tools" if state["messages"][-1].tool_calls else END

    g = StateGraph(MessagesState)
    g.add_node("think", athink if delay_s else think)
    g.add_node("tools", ToolNode([add]))
    g.add_edge(START, "think")
    g.add_conditional_edges("think", route, ["tools", END])
    g.add_edge("tools", "think")
    return g.compile(
        checkpointer=checkpointer,
        interrupt_before=["tools"] if stop_before_tools else None,
    )


SYNCHRONOUS = "FULL"


def langgraph_sync(db):
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(db, check_same_thread=False)
    conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
    return SqliteSaver(conn)


def run_langgraph(scenario, n, db, delay_s):
    config = lambda t: {"configurable": {"thread_id": t}}  # noqa: E731
    inputs = {"messages": [("user", "what is 2 + 3?")]}
    if scenario == "coldstart":
        graph = langgraph_graph(langgraph_sync(db), 0)
        out = graph.invoke(inputs, config("cold"), durability="sync")
        return {"reply": out["messages"][-1].content}
    if scenario == "harness":
        graph = langgraph_graph(langgraph_sync(db), 0)
        graph.invoke(inputs, config("warm-up"), durability="sync")
        base = rss_kb()
        latencies = []
        start = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            out = graph.invoke(inputs, config(f"t{i}"), durability="sync")
            latencies.append(time.perf_counter() - t)
            assert out["messages"][-1].content == "5"
        seconds = time.perf_counter() - start
        return summary(n, seconds, latencies, base)
    if scenario == "recovery":
        graph = langgraph_graph(langgraph_sync(db), 0, stop_before_tools=True)
        for i in range(n):
            graph.invoke(inputs, config(f"r{i}"), durability="sync")
        # A new graph on the same checkpoints resumes every stopped thread.
        resumed = langgraph_graph(langgraph_sync(db), 0)
        start = time.perf_counter()
        for i in range(n):
            out = resumed.invoke(None, config(f"r{i}"), durability="sync")
            assert out["messages"][-1].content == "5", out["messages"][-1]
        seconds = time.perf_counter() - start
        return {"n": n, "seconds": seconds, "per_second": n / seconds}
    if scenario == "concurrency":
        return asyncio.run(langgraph_concurrency(n, db, delay_s))
    raise SystemExit(f"unknown scenario {scenario}")


async def langgraph_concurrency(n, db, delay_s):
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    import aiosqlite

    async with aiosqlite.connect(db) as conn:
        await conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
        saver = AsyncSqliteSaver(conn)
        graph = langgraph_graph(saver, delay_s)
        inputs = {"messages": [("user", "what is 2 + 3?")]}
        await graph.ainvoke(inputs, {"configurable": {"thread_id": "warm-up"}}, durability="sync")
        base = rss_kb()
        latencies = []

        async def one(i):
            t = time.perf_counter()
            out = await graph.ainvoke(inputs, {"configurable": {"thread_id": f"c{i}"}}, durability="sync")
            latencies.append(time.perf_counter() - t)
            assert out["messages"][-1].content == "5"

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        seconds = time.perf_counter() - start
        return summary(n, seconds, latencies, base)


# --- OpenAI Agents SDK -------------------------------------------------------


def agents_model(delay_s):
    from agents.items import ModelResponse
    from agents.models.interface import Model
    from agents.usage import Usage
    from openai.types.responses import (
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    )

    class FakeModel(Model):
        """The suite's fake model in the Responses format the SDK reads."""

        async def get_response(self, system_instructions, input, model_settings, tools, output_schema,
                               handoffs, tracing, *, previous_response_id=None, conversation_id=None,
                               prompt=None):
            if delay_s:
                await asyncio.sleep(delay_s)
            items = input if isinstance(input, list) else []
            last = items[-1] if items else {}
            last_type = last.get("type") if isinstance(last, dict) else getattr(last, "type", None)
            usage = Usage(requests=1, input_tokens=10, output_tokens=5, total_tokens=15)
            if last_type == "function_call_output":
                output = last.get("output") if isinstance(last, dict) else last.output
                text = ResponseOutputText(text=str(output), type="output_text", annotations=[])
                msg = ResponseOutputMessage(id="msg_1", type="message", role="assistant",
                                            content=[text], status="completed")
                return ModelResponse(output=[msg], usage=usage, response_id=None)
            call = ResponseFunctionToolCall(id="fc_1", call_id="call_" + uuid.uuid4().hex[:8],
                                            type="function_call", name="add",
                                            arguments='{"a": 2, "b": 3}', status="completed")
            return ModelResponse(output=[call], usage=usage, response_id=None)

        def stream_response(self, *args, **kwargs):
            raise NotImplementedError("the benchmark does not stream")

    return FakeModel()


def agents_agent(delay_s):
    from agents import Agent, function_tool

    @function_tool
    def add(a: int, b: int) -> int:
        """Adds two integers."""
        return a + b

    return Agent(name="assistant", instructions="Use add for sums.", model=agents_model(delay_s), tools=[add])


def agents_session_class():
    from agents import SQLiteSession

    class Session(SQLiteSession):
        """SQLiteSession with the suite's `synchronous` setting on each of
        its connections (it opens one per thread)."""

        _tuned = set()

        def _get_connection(self):
            conn = super()._get_connection()
            if id(conn) not in self._tuned:
                conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
                self._tuned.add(id(conn))
            return conn

    return Session


def run_agents(scenario, n, db, delay_s):
    from agents import Runner, set_tracing_disabled

    SQLiteSession = agents_session_class()

    set_tracing_disabled(True)
    if scenario == "recovery":
        return {"offered": False, "why": "a run lives in memory; an interrupted run cannot be resumed from the session"}
    agent = agents_agent(delay_s)
    if scenario == "coldstart":
        out = Runner.run_sync(agent, "what is 2 + 3?", session=SQLiteSession("cold", db))
        return {"reply": str(out.final_output)}

    async def body():
        await Runner.run(agent, "what is 2 + 3?", session=SQLiteSession("warm-up", db))
        base = rss_kb()
        latencies = []

        async def one(i):
            t = time.perf_counter()
            session = SQLiteSession(f"s{i}", db)
            try:
                out = await Runner.run(agent, "what is 2 + 3?", session=session)
            finally:
                # Its connections (one per worker thread that touched it) go now.
                session.close()
            latencies.append(time.perf_counter() - t)
            assert str(out.final_output) == "5", out.final_output

        start = time.perf_counter()
        if scenario == "harness":
            for i in range(n):
                await one(i)
        else:
            await asyncio.gather(*(one(i) for i in range(n)))
        seconds = time.perf_counter() - start
        return summary(n, seconds, latencies, base)

    return asyncio.run(body())


def summary(n, seconds, latencies, base_kb):
    peak = peak_rss_kb()
    return {
        "n": n,
        "seconds": seconds,
        "per_second": n / seconds,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "rss_base_kb": base_kb,
        "rss_peak_kb": peak,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("system", choices=["langgraph", "openai-agents"])
    p.add_argument("scenario", choices=["harness", "concurrency", "recovery", "coldstart"])
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--db", required=True)
    p.add_argument("--delay-ms", type=float, default=0)
    p.add_argument("--synchronous", choices=["normal", "full"], default="full")
    a = p.parse_args()
    global SYNCHRONOUS
    SYNCHRONOUS = a.synchronous.upper()
    delay_s = a.delay_ms / 1000
    if a.system == "langgraph":
        out = run_langgraph(a.scenario, a.n, a.db, delay_s)
        out["version"] = "langgraph " + version("langgraph") + ", langgraph-checkpoint-sqlite " + version(
            "langgraph-checkpoint-sqlite")
    else:
        out = run_agents(a.scenario, a.n, a.db, delay_s)
        out["version"] = "openai-agents " + version("openai-agents")
    out.setdefault("offered", True)
    out["python"] = sys.version.split()[0]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
