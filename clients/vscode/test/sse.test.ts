/** The SSE decoder against the WHATWG rules, over every split of its input. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { SseDecoder, toStreamEvent, type SseMessage } from "../src/protocol";

const encoder = new TextEncoder();

/** Decode `bytes` read in the given pieces (cut at `cuts`), then finish. */
function decodeInPieces(bytes: Uint8Array, cuts: number[]): SseMessage[] {
  const decoder = new SseDecoder();
  const out: SseMessage[] = [];
  let start = 0;
  for (const cut of [...cuts, bytes.length]) {
    out.push(...decoder.decodeBytes(bytes.subarray(start, cut)));
    start = cut;
  }
  out.push(...decoder.finish());
  return out;
}

function decodeWhole(text: string): SseMessage[] {
  return decodeInPieces(encoder.encode(text), []);
}

describe("SseDecoder", () => {
  test("every line ending: LF, CRLF and CR, mixed in one stream", () => {
    const events = decodeWhole("data: a\n\r\ndata: b\r\n\rdata: c\r\rid: 7\nevent: final_end\ndata: {}\n\n");
    assert.deepEqual(events, [
      { event: "message", data: "a", id: "" },
      { event: "message", data: "b", id: "" },
      { event: "message", data: "c", id: "" },
      { event: "final_end", data: "{}", id: "7" },
    ]);
  });

  test("any split of the bytes gives the same events: CR|LF across reads, a character cut in half", () => {
    const text =
      "\uFEFFid: 1\r\ndata: {\"type\":\"chunk\",\"content\":\"h\u00e9llo \u4e16\u754c \ud83c\udf0a\"}\r\n\r\n" +
      ": ping\r\rid: 2\revent: error\rdata: line one\rdata: line two\r\r" +
      "id: 3\nevent: final_end\ndata: {}\n\n";
    const bytes = encoder.encode(text);
    const expected = decodeWhole(text);
    assert.equal(expected.length, 3);
    assert.equal(expected[0].data, '{"type":"chunk","content":"h\u00e9llo \u4e16\u754c \ud83c\udf0a"}');
    assert.equal(expected[1].data, "line one\nline two");
    for (let a = 0; a <= bytes.length; a++) {
      assert.deepEqual(decodeInPieces(bytes, [a]), expected, `cut at ${a}`);
    }
    for (let a = 1; a < bytes.length; a += 3) {
      for (let b = a; b < bytes.length; b += 5) {
        assert.deepEqual(decodeInPieces(bytes, [a, b]), expected, `cuts at ${a}, ${b}`);
      }
    }
    const oneByOne = Array.from({ length: bytes.length - 1 }, (_, i) => i + 1);
    assert.deepEqual(decodeInPieces(bytes, oneByOne), expected, "byte by byte");
  });

  test("field rules: one leading space dropped, no colon, comments, unknown fields, NUL in id", () => {
    const events = decodeWhole(
      "data:no space\ndata:  two spaces\ndata\n:comment\nfoo: bar\nid: a\0b\nretry: 10\n\n",
    );
    assert.deepEqual(events, [{ event: "message", data: "no space\n two spaces\n", id: "" }]);
  });

  test("a block without data dispatches nothing and resets the event type", () => {
    const events = decodeWhole("event: sources\nid: 4\n\ndata: x\n\n");
    assert.deepEqual(events, [{ event: "message", data: "x", id: "4" }]);
  });

  test("an empty data line is an event with empty data", () => {
    assert.deepEqual(decodeWhole("data:\n\n"), [{ event: "message", data: "", id: "" }]);
  });

  test("an event without its blank line at the end of the stream is discarded", () => {
    assert.deepEqual(decodeWhole("data: whole\n\ndata: cut"), [{ event: "message", data: "whole", id: "" }]);
    assert.deepEqual(decodeWhole("data: cut\n"), []);
  });

  test("U+2028 inside data is not a line break", () => {
    assert.deepEqual(decodeWhole('data: {"content":"a\u2028b"}\n\n')[0].data, '{"content":"a\u2028b"}');
  });
});

describe("toStreamEvent", () => {
  test("maps each event of the protocol", () => {
    const m = (event: string, data: object): SseMessage => ({ event, data: JSON.stringify(data), id: "9" });
    assert.deepEqual(toStreamEvent(m("message", { type: "chunk", content: "hi" })), { type: "chunk", id: "9", content: "hi" });
    assert.deepEqual(toStreamEvent(m("message", { type: "reasoning", content: "hm" })), { type: "reasoning", id: "9", content: "hm" });
    assert.deepEqual(toStreamEvent(m("sources", { type: "sources", sources: [{ id: "d", title: "t" }] })), {
      type: "sources",
      id: "9",
      sources: [{ id: "d", title: "t" }],
    });
    assert.deepEqual(toStreamEvent(m("error", { message: "idle", code: "upstream_timeout" })), {
      type: "error",
      id: "9",
      message: "idle",
      code: "upstream_timeout",
    });
    const end = toStreamEvent(m("final_end", { finish_reason: "length", usage: null, sources: [] }));
    assert.deepEqual(end, { type: "end", id: "9", finishReason: "length", usage: null, sources: [] });
  });

  test("unknown events and types are skipped; data that is not a JSON object is a protocol error", () => {
    assert.equal(toStreamEvent({ event: "message", data: '{"type":"tool"}', id: "" }), undefined);
    assert.equal(toStreamEvent({ event: "progress", data: "{}", id: "" }), undefined);
    assert.throws(() => toStreamEvent({ event: "message", data: "not json", id: "" }), { code: "protocol_error" });
    assert.throws(() => toStreamEvent({ event: "message", data: "[1]", id: "" }), { code: "protocol_error" });
  });
});
