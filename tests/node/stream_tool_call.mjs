// One streaming tool call with the official `openai` Node package: the deltas reassemble into
// a call to the forced function whose arguments are JSON, and the stream ends with
// finish_reason "tool_calls". Usage: node stream_tool_call.mjs BASE_URL API_KEY MODEL
import assert from "node:assert/strict";
import OpenAI from "openai";

const [baseURL, apiKey, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const weather = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" }, unit: { type: "string", enum: ["celsius", "fahrenheit"] } }, required: ["city"] },
  },
};

const stream = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "What's the weather in Lisbon?" }],
  tools: [weather],
  tool_choice: { type: "function", function: { name: "get_weather" } },
  temperature: 0,
  max_tokens: 100,
  stream: true,
});

const calls = [];
let content = "";
let finish = null;
for await (const chunk of stream) {
  const choice = chunk.choices[0];
  content += choice.delta.content ?? "";
  for (const d of choice.delta.tool_calls ?? []) {
    if (d.id) calls[d.index] = { id: d.id, name: d.function.name, arguments: d.function.arguments ?? "" };
    else calls[d.index].arguments += d.function.arguments;
  }
  finish = choice.finish_reason ?? finish;
}

assert.equal(finish, "tool_calls");
assert.equal(content, "");
assert.equal(calls.length, 1);
assert.equal(calls[0].name, "get_weather");
assert.match(calls[0].id, /^call_/);
const args = JSON.parse(calls[0].arguments);
assert.equal(typeof args.city, "string");
console.log(JSON.stringify(calls[0]));
