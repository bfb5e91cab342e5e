/** Durations as kubectl writes them: parsing, refusing, and printing back. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DurationError, formatAge, formatDuration, parseDuration, parseSeconds } from "../../src/cli/duration";

describe("parseDuration", () => {
  const cases: [string, number][] = [
    ["30s", 30_000],
    ["5m", 300_000],
    ["1h", 3_600_000],
    ["1h30m", 5_400_000],
    ["1h30m15s", 5_415_000],
    ["2m3s", 123_000],
    ["1.5s", 1500],
    ["0.5h", 1_800_000],
    ["500ms", 500],
    ["1s500ms", 1500],
    ["0s", 0],
    [" 10s ", 10_000],
  ];
  for (const [text, ms] of cases) {
    test(`${JSON.stringify(text)} is ${ms} ms`, () => assert.equal(parseDuration(text), ms));
  }

  const refused: [string, RegExp][] = [
    ["30", /"30" has no unit: use a number with a unit, like 30s, 5m, 1h or 1h30m/],
    ["", /is not a duration/],
    ["5x", /"5x" is not a duration/],
    ["1d", /is not a duration/],
    ["s", /is not a duration/],
    ["1h 30m", /is not a duration/],
    ["-5s", /is negative/],
    ["1h30", /is not a duration/],
    ["abc", /is not a duration/],
  ];
  for (const [text, message] of refused) {
    test(`${JSON.stringify(text)} is refused with a clear message`, () => {
      assert.throws(() => parseDuration(text), (err: Error) => err instanceof DurationError && message.test(err.message));
    });
  }

  test("the flag name is part of the message", () => {
    assert.throws(() => parseDuration("soon", "--timeout"), /^Error: --timeout "soon" is not a duration/);
  });
});

describe("parseSeconds", () => {
  test("whole seconds", () => {
    assert.equal(parseSeconds("15s"), 15);
    assert.equal(parseSeconds("2m"), 120);
  });
  test("less than a second, or a fraction, is refused", () => {
    assert.throws(() => parseSeconds("500ms", "--lease-duration"), /--lease-duration "500ms" must be a whole number of seconds, at least 1s/);
    assert.throws(() => parseSeconds("1.5s"), /whole number of seconds/);
    assert.throws(() => parseSeconds("0s"), /at least 1s/);
  });
});

describe("formatDuration", () => {
  const cases: [number, string][] = [
    [30_000, "30s"], [90_000, "1m30s"], [3_600_000, "1h"], [5_400_000, "1h30m"], [1500, "1.5s"], [250, "250ms"], [0, "0s"],
  ];
  for (const [ms, text] of cases) test(`${ms} ms is ${text}`, () => assert.equal(formatDuration(ms), text));

  test("round-trips through parseDuration", () => {
    for (const text of ["30s", "1m30s", "2h", "1h1m1s", "1.25s", "750ms"]) assert.equal(formatDuration(parseDuration(text)), text);
  });
});

describe("formatAge", () => {
  const cases: [number, string][] = [
    [45_000, "45s"], [119_000, "119s"], [200_000, "3m20s"], [720_000, "12m"], [7_500_000, "125m"], [14_700_000, "4h5m"], [72_000_000, "20h"], [273_600_000, "3d4h"], [864_000_000 * 4, "40d"],
  ];
  for (const [ms, text] of cases) test(`${ms} ms is ${text}`, () => assert.equal(formatAge(ms), text));
});
