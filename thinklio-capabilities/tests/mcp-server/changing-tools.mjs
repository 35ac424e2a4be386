// A small MCP server whose tool list changes: calling `add-tool` with a
// name registers a new tool of that name, and the server tells its client
// that the list changed. Thinklio's tests use it to check that attached
// tools follow such changes.
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { z } from "zod";

const server = new McpServer({ name: "changing-tools", version: "1.0.0" });

server.registerTool(
  "add-tool",
  {
    description: "Adds a tool that answers with its own name.",
    inputSchema: { name: z.string() },
  },
  async ({ name }) => {
    server.registerTool(
      name,
      { description: `The tool ${name}.`, inputSchema: {} },
      async () => ({ content: [{ type: "text", text: `I am ${name}` }] }),
    );
    return { content: [{ type: "text", text: `added ${name}` }] };
  },
);

await server.connect(new StdioServerTransport());
