// The real @trpc/client against a live Tollbooth server, through every HTTP link: httpLink, httpBatchLink,
// httpBatchStreamLink and httpSubscriptionLink. Success calls, error codes, batching and subscriptions.
//
//   node dist/interop.js --url http://127.0.0.1:8000 --key tb_... [--name Ada] [--other-key tb_...] --admin-key tb_...
//
// (or TOLLBOOTH_URL, TOLLBOOTH_API_KEY, TOLLBOOTH_USER_NAME, TOLLBOOTH_OTHER_API_KEY, TOLLBOOTH_ADMIN_API_KEY).
// `--key` must be a user's key (not an admin's); `--admin-key` an admin's, for the admin.* procedures: without it
// the checks that need it fail. Every amount of money received is held to the wire's one spelling (a plain decimal
// string: no exponent, no trailing zeros). Prints a JSON report on stdout and exits 1 when any check fails.

import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

import {
  createTRPCClient,
  httpBatchLink,
  httpBatchStreamLink,
  httpLink,
  httpSubscriptionLink,
  isTRPCClientError,
  splitLink,
  TRPCClientError,
  type TRPCClient,
  type TRPCLink,
} from '@trpc/client';
import type { inferRouterInputs, inferRouterOutputs } from '@trpc/server';
import { EventSource } from 'eventsource';

import type {
  AppRouter,
  ClockEvent,
  ConversationSummary,
  ConversationTotals,
  SendMessageOutput,
  StreamMessageDelta,
  StreamMessageDone,
  TokenCounts,
  Tracked,
  Usage,
  UsageFigures,
  UsageRow,
} from './app-router.js';

type Inputs = inferRouterInputs<AppRouter>;
type Outputs = inferRouterOutputs<AppRouter>;

// --- configuration ---------------------------------------------------------------------------------------------

function option(name: string, env: string): string | undefined {
  const flag = `--${name}`;
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === flag) return args[i + 1];
    if (arg.startsWith(`${flag}=`)) return arg.slice(flag.length + 1);
  }
  return process.env[env] || undefined;
}

const urlOption = option('url', 'TOLLBOOTH_URL');
const keyOption = option('key', 'TOLLBOOTH_API_KEY');
if (!urlOption || !keyOption) {
  console.error(
    'usage: node dist/interop.js --url BASE_URL --key API_KEY [--name NAME] [--other-key API_KEY] --admin-key API_KEY',
  );
  process.exit(2);
}
const baseUrl: string = urlOption.replace(/\/$/, '');
const apiKey: string = keyOption;
const userName = option('name', 'TOLLBOOTH_USER_NAME');
const otherKey = option('other-key', 'TOLLBOOTH_OTHER_API_KEY');
const adminKey = option('admin-key', 'TOLLBOOTH_ADMIN_API_KEY');
const url = `${baseUrl}/trpc`;

// --- recording what goes over the wire --------------------------------------------------------------------------

type WireRequest = { method: string; url: string; trpcAccept: string | null; status: number; contentType: string };

class Wire {
  readonly requests: WireRequest[] = [];

  readonly fetch = async (input: RequestInfo | URL | string, init?: RequestInit): Promise<Response> => {
    const response = await fetch(input, init);
    const headers = new Headers(init?.headers);
    this.requests.push({
      method: init?.method ?? 'GET',
      url: String(input instanceof Request ? input.url : input),
      trpcAccept: headers.get('trpc-accept'),
      status: response.status,
      contentType: response.headers.get('content-type') ?? '',
    });
    return response;
  };

  take(): WireRequest[] {
    return this.requests.splice(0);
  }
}

function bearer(key: string | undefined): Record<string, string> {
  return key ? { authorization: `Bearer ${key}` } : {};
}

function subscriptionLink(key: string | undefined): TRPCLink<AppRouter> {
  return httpSubscriptionLink<AppRouter, typeof EventSource>({
    url,
    EventSource,
    // EventSource cannot send headers: the key travels in connectionParams.
    connectionParams: () => (key ? { apiKey: key } : {}),
  });
}

type Client = TRPCClient<AppRouter>;

function plainClient(key: string | undefined, wire?: Wire): Client {
  return createTRPCClient<AppRouter>({
    links: [httpLink({ url, headers: bearer(key), ...(wire ? { fetch: wire.fetch } : {}) })],
  });
}

function batchClient(key: string | undefined, wire: Wire): Client {
  return createTRPCClient<AppRouter>({
    links: [httpBatchLink({ url, headers: bearer(key), fetch: wire.fetch, maxItems: 10 })],
  });
}

/** The recommended setup: subscriptions over SSE, everything else in streamed batches. */
function streamClient(key: string | undefined, wire?: Wire): Client {
  return createTRPCClient<AppRouter>({
    links: [
      splitLink({
        condition: (op) => op.type === 'subscription',
        true: subscriptionLink(key),
        false: httpBatchStreamLink({ url, headers: bearer(key), ...(wire ? { fetch: wire.fetch } : {}) }),
      }),
    ],
  });
}

// --- checks -----------------------------------------------------------------------------------------------------

type CheckResult = { name: string; ok: boolean; ms: number; detail?: unknown; error?: string };
const results: CheckResult[] = [];

async function check(name: string, body: () => Promise<unknown>): Promise<void> {
  const started = performance.now();
  try {
    const detail = await withTimeout(body(), 20_000, name);
    results.push({ name, ok: true, ms: Math.round(performance.now() - started), ...(detail === undefined ? {} : { detail }) });
  } catch (error) {
    results.push({ name, ok: false, ms: Math.round(performance.now() - started), error: describe(error) });
  }
}

function describe(error: unknown): string {
  if (isTRPCClientError(error)) {
    return `TRPCClientError ${JSON.stringify({ message: error.message, data: error.data, shape: error.shape })}`;
  }
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

class Mismatch extends Error {
  override name = 'Mismatch';
}

function expect(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Mismatch(message);
}

function expectEqual<T>(actual: T, expected: T, what: string): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  expect(a === e, `${what}: expected ${e}, got ${a}`);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** Money's one spelling on the wire (`@pattern` in app-router.d.ts): no exponent, no trailing zeros, "0" for zero. */
const DECIMAL = /^(-)?(0|[1-9][0-9]*)(?:\.([0-9]*[1-9]))?$/;

const JSON_RPC_CODES = {
  BAD_REQUEST: -32600,
  UNAUTHORIZED: -32001,
  FORBIDDEN: -32003,
  NOT_FOUND: -32004,
  METHOD_NOT_SUPPORTED: -32005,
  CONFLICT: -32009,
  UNPROCESSABLE_CONTENT: -32022,
} as const;
type ExpectedCode = keyof typeof JSON_RPC_CODES;

type ErrorSummary = { code: string; httpStatus: number; path: string | undefined; message: string };

/** The call must fail with a TRPCClientError carrying this code, its HTTP status and its JSON-RPC number. */
async function expectError(
  call: Promise<unknown>,
  code: ExpectedCode,
  httpStatus: number,
  path?: string,
): Promise<ErrorSummary> {
  let outcome: unknown;
  try {
    outcome = await call;
  } catch (error) {
    return checkError(error, code, httpStatus, path);
  }
  throw new Mismatch(`expected ${code}, the call succeeded with ${JSON.stringify(outcome)}`);
}

function checkError(error: unknown, code: ExpectedCode, httpStatus: number, path?: string): ErrorSummary {
  expect(error instanceof TRPCClientError, `expected a TRPCClientError, got ${describe(error)}`);
  const clientError = error as TRPCClientError<AppRouter>;
  const data = clientError.data;
  expect(data !== null && data !== undefined, `error without data: ${describe(error)}`);
  expectEqual(data.code, code, 'err.data.code');
  expectEqual(data.httpStatus, httpStatus, 'err.data.httpStatus');
  expectEqual(clientError.shape?.code, JSON_RPC_CODES[code], 'err.shape.code (JSON-RPC)');
  expect(typeof clientError.message === 'string' && clientError.message.length > 0, 'err.message is empty');
  if (path !== undefined) expectEqual(data.path, path, 'err.data.path');
  return { code: data.code, httpStatus: data.httpStatus, path: data.path, message: clientError.message };
}

async function settled<T>(promises: Promise<T>[]): Promise<PromiseSettledResult<T>[]> {
  return Promise.allSettled(promises);
}

function fulfilled<T>(result: PromiseSettledResult<T> | undefined, what: string): T {
  expect(result !== undefined, `${what}: no result`);
  if (result.status === 'rejected') throw new Mismatch(`${what} failed: ${describe(result.reason)}`);
  return result.value;
}

function rejected(result: PromiseSettledResult<unknown> | undefined, what: string): unknown {
  expect(result !== undefined, `${what}: no result`);
  if (result.status === 'fulfilled') throw new Mismatch(`${what}: expected an error, got ${JSON.stringify(result.value)}`);
  return result.reason;
}

// --- exact decimal arithmetic on the wire's money strings --------------------------------------------------------

type Decimal = { units: bigint; exponent: number };

/** An amount as the server must spell it; anything else (`1.5E-7`, `0.10`, `-0`, `.5`) is a Mismatch. */
function decimal(text: string, what = 'amount'): Decimal {
  expect(typeof text === 'string', `${what}: money is not a string: ${JSON.stringify(text)}`);
  const match = DECIMAL.exec(text);
  expect(
    match !== null && text !== '-0',
    `${what}: not a plain decimal string (no exponent, no trailing zeros): ${JSON.stringify(text)}`,
  );
  const [, sign, whole, fraction = ''] = match;
  const units = BigInt(`${sign ?? ''}${whole}${fraction}`);
  return { units, exponent: -fraction.length };
}

/** The sum of the known amounts: a null one (a group whose calls were all unpriced) adds nothing, as on the server. */
function sumDecimals(texts: (string | null)[], what = 'amount'): Decimal {
  let sum: Decimal = { units: 0n, exponent: 0 };
  for (const text of texts) {
    if (text === null) continue;
    const [x, y, exponent] = align(sum, decimal(text, what));
    sum = { units: x + y, exponent };
  }
  return sum;
}

/**
 * Every amount in an output, wherever it is: the fields whose name says USD (`costUsd`, `totalCostUsd`, and the
 * buckets of `costsUsd` and `ratesUsdPerMillionTokens`) must each be null or a plain decimal string. Returns how many
 * amounts it checked.
 */
function expectMoney(value: unknown, what: string): number {
  if (Array.isArray(value)) return value.reduce<number>((n, item, i) => n + expectMoney(item, `${what}[${i}]`), 0);
  if (value === null || typeof value !== 'object') return 0;
  let amounts = 0;
  for (const [key, field] of Object.entries(value)) {
    const path = `${what}.${key}`;
    if (!key.includes('Usd')) {
      amounts += expectMoney(field, path);
    } else if (field !== null && typeof field === 'object') {
      for (const [bucket, amount] of Object.entries(field)) {
        decimal(amount as string, `${path}.${bucket}`);
        amounts += 1;
      }
    } else if (field !== null) {
      decimal(field as string, path);
      amounts += 1;
    }
  }
  return amounts;
}

function align(a: Decimal, b: Decimal): [bigint, bigint, number] {
  const exponent = Math.min(a.exponent, b.exponent);
  return [a.units * 10n ** BigInt(a.exponent - exponent), b.units * 10n ** BigInt(b.exponent - exponent), exponent];
}

function addDecimals(a: string, b: string): Decimal {
  const [x, y, exponent] = align(decimal(a), decimal(b));
  return { units: x + y, exponent };
}

function decimalEquals(a: Decimal, b: Decimal): boolean {
  const [x, y] = align(a, b);
  return x === y;
}

function decimalAtLeast(a: Decimal, b: Decimal): boolean {
  const [x, y] = align(a, b);
  return x >= y;
}

// --- the checks ---------------------------------------------------------------------------------------------------

type Provider = Outputs['chat']['sendMessage']['provider'];
const PROVIDERS: readonly string[] = ['openai', 'anthropic', 'gemini'] satisfies Provider[];

function expectCount(value: unknown, what: string): void {
  expect(
    typeof value === 'number' && Number.isInteger(value) && value >= 0,
    `${what} is not a count: ${JSON.stringify(value)}`,
  );
}

function expectTime(value: string, what: string): void {
  expect(
    typeof value === 'string' && !Number.isNaN(Date.parse(value)),
    `${what} is not a time: ${JSON.stringify(value)}`,
  );
}

const TOKEN_FIELDS = [
  'input',
  'cacheRead',
  'cacheWrite5m',
  'cacheWrite1h',
  'output',
  'outputImage',
  'reasoning',
  'prompt',
  'total',
] as const satisfies readonly (keyof TokenCounts)[];

/** The canonical buckets and their sums: `prompt` is every prompt bucket, `total` is `prompt + output + outputImage`. */
function checkTokenCounts(t: TokenCounts, what: string): void {
  for (const bucket of TOKEN_FIELDS) expectCount(t[bucket], `${what}.${bucket}`);
  const prompt = t.input + t.cacheRead + t.cacheWrite5m + t.cacheWrite1h;
  expectEqual(t.prompt, prompt, `${what}.prompt (the prompt buckets' sum)`);
  expectEqual(t.total, t.prompt + t.output + t.outputImage, `${what}.total (prompt + output + outputImage)`);
  expect(t.output >= t.reasoning, `${what}: reasoning exceeds output`);
}

/** A call's usage: the buckets, and the provider's own counts apart under `reported`. */
function checkUsage(u: Usage, what: string): void {
  checkTokenCounts(u, what);
  expect(u.reported !== null && typeof u.reported === 'object', `${what}.reported is missing`);
  const reportedFields = Object.keys(u.reported).sort();
  expectEqual(reportedFields, ['completionTokens', 'promptTokens', 'totalTokens'], `${what}.reported fields`);
  for (const [name, value] of Object.entries(u.reported)) expectCount(value, `${what}.reported.${name}`);
  expect(typeof u.estimated === 'boolean', `${what}.estimated is not a boolean`);
}

function checkTotals(t: ConversationTotals, what: string): void {
  const counts = ['totalPromptTokens', 'totalOutputTokens', 'totalTokensUsed', 'llmCalls', 'unpricedCalls'] as const;
  for (const name of counts) expectCount(t[name], `${what}.${name}`);
  expectEqual(t.totalTokensUsed, t.totalPromptTokens + t.totalOutputTokens, `${what}.totalTokensUsed`);
  expect(t.unpricedCalls <= t.llmCalls, `${what}: more unpricedCalls than llmCalls`);
  checkGroupCost(t.totalCostUsd, t.llmCalls, t.unpricedCalls, `${what}.totalCostUsd`);
}

/** The admin aggregates: every call counted in `llmCalls`, the tokens as TokenCounts, the priced calls' cost. */
function checkFigures(f: UsageFigures, what: string): void {
  for (const name of ['llmCalls', 'errorCalls', 'cancelledCalls', 'unpricedCalls'] as const) {
    expectCount(f[name], `${what}.${name}`);
  }
  expect(f.errorCalls + f.cancelledCalls <= f.llmCalls, `${what}: more failed and cancelled calls than llmCalls`);
  expect(f.unpricedCalls <= f.llmCalls, `${what}: more unpricedCalls than llmCalls`);
  checkTokenCounts(f.tokens, `${what}.tokens`);
  checkGroupCost(f.costUsd, f.llmCalls, f.unpricedCalls, `${what}.costUsd`);
}

/** A recorded call: priced, its bucket costs add up to `costUsd`; unpriced, no cost at all (never zero). */
function checkUsageRow(row: UsageRow, what: string): void {
  expect(UUID.test(row.callId), `${what}.callId is not a UUID: ${row.callId}`);
  expect(!('id' in row), `${what} still has \`id\` (now callId)`);
  expect(PROVIDERS.includes(row.provider), `${what}.provider: ${row.provider}`);
  expectTime(row.createdAt, `${what}.createdAt`);
  expectCount(row.latencyMs, `${what}.latencyMs`);
  checkUsage(row.usage, `${what}.usage`);
  if (row.pricingStatus === 'priced') {
    // A call priced per image (priceSource says so) has a cost but no per-token rates.
    expect(row.costUsd !== null && row.costsUsd !== null, `${what}: priced, without a cost`);
    const buckets = Object.values(row.costsUsd);
    expectEqual(buckets.length, 6, `${what}.costsUsd buckets`);
    expect(
      decimalEquals(sumDecimals(buckets, `${what}.costsUsd`), decimal(row.costUsd, `${what}.costUsd`)),
      `${what}: costsUsd ${JSON.stringify(row.costsUsd)} do not add up to costUsd ${row.costUsd}`,
    );
    for (const rate of Object.values(row.ratesUsdPerMillionTokens ?? {})) {
      if (rate !== null) decimal(rate, `${what}.ratesUsdPerMillionTokens`);
    }
  } else {
    expectEqual(
      [row.costUsd, row.costsUsd, row.ratesUsdPerMillionTokens],
      [null, null, null],
      `${what}: an unpriced call's costUsd, costsUsd, ratesUsdPerMillionTokens`,
    );
  }
}

function checkSummary(c: ConversationSummary, what: string): void {
  expect(UUID.test(c.conversationId), `${what}.conversationId is not a UUID: ${c.conversationId}`);
  expect(!('id' in c), `${what} still has \`id\` (now conversationId)`);
  expect(typeof c.title === 'string', `${what}.title`);
  expectTime(c.createdAt, `${what}.createdAt`);
  expectTime(c.lastActivityAt, `${what}.lastActivityAt`);
  checkTotals(c.totals, `${what}.totals`);
}

function checkConversationList(list: Outputs['chat']['listConversations'], what: string): void {
  expect(Array.isArray(list.conversations), `${what}.conversations is not an array: ${JSON.stringify(list)}`);
  expect(list.conversations.length <= 20, `${what}: more conversations than the default limit (20)`);
  list.conversations.forEach((c, i) => checkSummary(c, `${what}.conversations[${i}]`));
  expect(list.nextCursor === null || typeof list.nextCursor === 'string', `${what}.nextCursor`);
}

/** Most expensive first: each amount at least the next one. */
/** Most expensive first, and the unknown costs (null: every call unpriced) after all known ones. */
function expectDescending(amounts: (string | null)[], what: string): void {
  for (let i = 1; i < amounts.length; i++) {
    const [before, after] = [amounts[i - 1]!, amounts[i]!];
    expect(
      after === null || (before !== null && decimalAtLeast(decimal(before), decimal(after))),
      `${what} not most expensive first: ${amounts.join(', ')}`,
    );
  }
}

/** An amount that must be known: the calls behind it were priced. */
function knownCost(amount: string | null, what: string): string {
  expect(amount !== null, `${what}: null, as if every call were unpriced`);
  return amount;
}

/** A group's cost: null exactly when it has calls and every one of them was unpriced. */
function checkGroupCost(amount: string | null, llmCalls: number, unpricedCalls: number, what: string): void {
  const allUnpriced = llmCalls > 0 && unpricedCalls === llmCalls;
  expectEqual(amount === null, allUnpriced, `${what} is null exactly when every call was unpriced`);
  if (amount !== null) decimal(amount, what);
}

/** TokenCounts added up bucket by bucket. */
function sumTokens(counts: TokenCounts[]): TokenCounts {
  const sum = Object.fromEntries(TOKEN_FIELDS.map((bucket) => [bucket, 0])) as TokenCounts;
  for (const t of counts) for (const bucket of TOKEN_FIELDS) sum[bucket] += t[bucket];
  return sum;
}

function checkSendMessage(result: SendMessageOutput, what: string): { costUsd: string; conversationId: string } {
  // Typed access: these assignments are compile-time checks of the generated types.
  const cacheRead: number = result.usage.cacheRead;
  const reportedPrompt: number = result.usage.reported.promptTokens;
  const costUsd: string | null = result.costUsd;
  const reply: string = result.reply;
  expect(typeof cacheRead === 'number' && Number.isInteger(cacheRead), `${what}: usage.cacheRead is not an integer`);
  expect(Number.isInteger(reportedPrompt), `${what}: usage.reported.promptTokens is not an integer`);
  expect(typeof costUsd === 'string', `${what}: costUsd is not a string: ${JSON.stringify(costUsd)}`);
  expectMoney(result, what);
  expectEqual(result.pricingStatus, 'priced', `${what}: pricingStatus`);
  expect(reply.length > 0, `${what}: empty reply`);
  expect(UUID.test(result.messageId), `${what}: messageId is not a UUID: ${result.messageId}`);
  const conversationId = result.conversationId;
  expect(conversationId !== null && UUID.test(conversationId), `${what}: conversationId is not a UUID`);
  checkUsage(result.usage, `${what}: usage`);
  expectEqual(result.usage.estimated, false, `${what}: usage.estimated`);
  expect(!('totalTokens' in result.usage), `${what}: usage.totalTokens (now usage.reported.totalTokens)`);
  expect(result.conversation !== null, `${what}: no conversation totals`);
  checkTotals(result.conversation, `${what}: conversation`);
  return { costUsd, conversationId };
}

// --- queries whose input fields are all optional: called with no input at all -------------------------------------

type NoInputAnswers = {
  top: Outputs['admin']['topConversationsByCost'];
  unpriced: Outputs['admin']['unpricedCalls'];
  byModel: Outputs['admin']['usageByModel'];
  byProcedure: Outputs['admin']['usageByProcedure'];
  list: Outputs['chat']['listConversations'];
};

/** Every query the types let call with `.query()` and nothing else, at once (a single batch on a batching link). */
async function noInputQueries(client: Client): Promise<NoInputAnswers> {
  const [top, unpriced, byModel, byProcedure, list] = await Promise.all([
    client.admin.topConversationsByCost.query(),
    client.admin.unpricedCalls.query(),
    client.admin.usageByModel.query(),
    client.admin.usageByProcedure.query(),
    client.chat.listConversations.query(),
  ]);
  return { top, unpriced, byModel, byProcedure, list };
}

const NO_INPUT_PATHS = [
  'admin.topConversationsByCost',
  'admin.unpricedCalls',
  'admin.usageByModel',
  'admin.usageByProcedure',
  'chat.listConversations',
] as const;

/** The answers without input are the defaults': no window, the default limits, all of it consistent. */
function checkNoInputAnswers(a: NoInputAnswers, what: string) {
  const { top, unpriced, byModel, byProcedure, list } = a;

  expectEqual([top.start, top.end], [null, null], `${what} topConversationsByCost window`);
  expect(top.conversations.length <= 10, `${what} topConversationsByCost: more than the default limit (10)`);
  top.conversations.forEach((c, i) => {
    const at = `${what} topConversationsByCost.conversations[${i}]`;
    expect(UUID.test(c.conversationId) && UUID.test(c.ownerId), `${at}: conversationId, ownerId`);
    expect(typeof c.title === 'string' && typeof c.ownerName === 'string', `${at}: title, ownerName`);
    expectTime(c.createdAt, `${at}.createdAt`);
    expectTime(c.lastActivityAt, `${at}.lastActivityAt`);
    checkTotals(c.totals, `${at}.totals`);
  });
  expectDescending(top.conversations.map((c) => c.totals.totalCostUsd), `${what} topConversationsByCost`);

  expectEqual([unpriced.start, unpriced.end], [null, null], `${what} unpricedCalls window`);
  expectCount(unpriced.unpricedCalls, `${what} unpricedCalls.unpricedCalls`);
  unpriced.models.forEach((m, i) => {
    const at = `${what} unpricedCalls.models[${i}]`;
    expect(PROVIDERS.includes(m.provider) && typeof m.model === 'string', `${at}: model, provider`);
    expect(Number.isInteger(m.llmCalls) && m.llmCalls >= 1, `${at}.llmCalls: ${m.llmCalls}`);
    checkTokenCounts(m.tokens, `${at}.tokens`);
    expectTime(m.firstAt, `${at}.firstAt`);
    expectTime(m.lastAt, `${at}.lastAt`);
    expect(Date.parse(m.firstAt) <= Date.parse(m.lastAt), `${at}: firstAt after lastAt`);
  });
  expectEqual(
    unpriced.models.reduce((n, m) => n + m.llmCalls, 0),
    unpriced.unpricedCalls,
    `${what} unpricedCalls: the models' llmCalls add up to unpricedCalls`,
  );
  expect(unpriced.rows.length <= 50, `${what} unpricedCalls: more rows than the default limit (50)`);
  unpriced.rows.forEach((row, i) => {
    checkUsageRow(row, `${what} unpricedCalls.rows[${i}]`);
    expectEqual(row.pricingStatus, 'unpriced', `${what} unpricedCalls.rows[${i}].pricingStatus`);
  });

  expectEqual([byModel.start, byModel.end], [null, null], `${what} usageByModel window`);
  byModel.models.forEach((m, i) => {
    checkFigures(m, `${what} usageByModel.models[${i}]`);
    expect(
      PROVIDERS.includes(m.provider) && typeof m.model === 'string',
      `${what} usageByModel.models[${i}]: model, provider`,
    );
  });
  expectDescending(byModel.models.map((m) => m.costUsd), `${what} usageByModel`);

  expectEqual([byProcedure.start, byProcedure.end], [null, null], `${what} usageByProcedure window`);
  byProcedure.procedures.forEach((p, i) => {
    checkFigures(p, `${what} usageByProcedure.procedures[${i}]`);
    expect(
      /^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$/.test(p.procedure),
      `${what} usageByProcedure.procedures[${i}].procedure: ${p.procedure}`,
    );
  });
  expectDescending(byProcedure.procedures.map((p) => p.costUsd), `${what} usageByProcedure`);

  // The same calls, split two ways: by model and by procedure, they add up to the same figures.
  const split = (figures: UsageFigures[]) => ({
    llmCalls: figures.reduce((n, f) => n + f.llmCalls, 0),
    unpricedCalls: figures.reduce((n, f) => n + f.unpricedCalls, 0),
    tokens: sumTokens(figures.map((f) => f.tokens)),
  });
  const models = split(byModel.models);
  expectEqual(split(byProcedure.procedures), models, `${what}: usageByProcedure's sums against usageByModel's`);
  expect(
    decimalEquals(
      sumDecimals(byModel.models.map((m) => m.costUsd)),
      sumDecimals(byProcedure.procedures.map((p) => p.costUsd)),
    ),
    `${what}: the cost by model and by procedure differ`,
  );
  expectEqual(
    models.unpricedCalls,
    unpriced.unpricedCalls,
    `${what}: usageByModel's unpricedCalls against unpricedCalls`,
  );

  checkConversationList(list, `${what} listConversations`);

  return {
    amounts: expectMoney(a, what),
    topConversations: top.conversations.length,
    unpricedCalls: unpriced.unpricedCalls,
    models: byModel.models.map((m) => m.model).sort(),
    procedures: byProcedure.procedures.map((p) => p.procedure).sort(),
    llmCalls: models.llmCalls,
    conversations: list.conversations.length,
  };
}

function needAdminKey(): string {
  expect(
    adminKey !== undefined,
    'no --admin-key (TOLLBOOTH_ADMIN_API_KEY): the admin queries were not checked; pass an admin user\'s key',
  );
  return adminKey;
}

/** What the program learned of the conversation it built over httpLink, for the checks that read it back. */
type Built = {
  conversationId: string;
  totals: ConversationTotals;
  usages: Usage[];
  costs: string[];
  messageIds: string[];
};

async function run(): Promise<void> {
  const plain = plainClient(apiKey);

  // httpLink ------------------------------------------------------------------------------------------------------
  await check('httpLink: system.health query', async () => {
    const health: Outputs['system']['health'] = await plain.system.health.query();
    expectEqual(health.status, 'ok', 'status');
    expectEqual(health.database, 'ok', 'database');
    expect(typeof health.version === 'string' && health.version.length > 0, 'version');
    return health;
  });

  await check('httpLink: system.whoami query', async () => {
    const me = await plain.system.whoami.query();
    expect(UUID.test(me.userId), `userId is not a UUID: ${me.userId}`);
    expect(!('id' in me), 'whoami still has `id` (now userId)');
    expectEqual(me.isAdmin, false, 'isAdmin');
    if (userName !== undefined) expectEqual(me.name, userName, 'name');
    return me;
  });

  let conversationId: string | undefined;
  let built: Built | undefined;
  await check('httpLink: chat.sendMessage twice in one conversation, money exact', async () => {
    const first = await plain.chat.sendMessage.mutate({ message: 'Hello from @trpc/client', maxTokens: 64 });
    const one = checkSendMessage(first, 'first');
    expectEqual(first.conversation?.llmCalls, 1, 'first: conversation.llmCalls');
    const firstTotal = knownCost(first.conversation!.totalCostUsd, 'first: totalCostUsd');
    expect(decimalEquals(decimal(firstTotal), decimal(one.costUsd)), 'first: total != cost');
    const second = await plain.chat.sendMessage.mutate({
      conversationId: one.conversationId,
      message: 'And a second message, to another provider',
      model: 'claude-haiku-4-5',
      systemPrompt: 'Be brief.',
      temperature: 0.2,
    });
    const two = checkSendMessage(second, 'second');
    expectEqual(two.conversationId, one.conversationId, 'second: conversationId');
    expectEqual(second.conversation?.llmCalls, 2, 'second: conversation.llmCalls');
    const expectedTotal = addDecimals(one.costUsd, two.costUsd);
    expect(
      decimalEquals(decimal(knownCost(second.conversation!.totalCostUsd, 'second: totalCostUsd')), expectedTotal),
      `second: totalCostUsd ${second.conversation!.totalCostUsd} != ${one.costUsd} + ${two.costUsd}`,
    );
    expectEqual(
      second.conversation!.totalTokensUsed,
      first.usage.total + second.usage.total,
      'second: totalTokensUsed',
    );
    expectEqual(
      second.conversation!.totalPromptTokens,
      first.usage.prompt + second.usage.prompt,
      'second: totalPromptTokens',
    );
    expectEqual(
      second.conversation!.totalOutputTokens,
      first.usage.output + second.usage.output,
      'second: totalOutputTokens',
    );
    conversationId = one.conversationId;
    built = {
      conversationId,
      totals: second.conversation!,
      usages: [first.usage, second.usage],
      costs: [one.costUsd, two.costUsd],
      messageIds: [first.messageId, second.messageId],
    };
    return {
      conversationId,
      costs: [one.costUsd, two.costUsd],
      totalCostUsd: second.conversation!.totalCostUsd,
      usage: second.usage,
    };
  });

  await check('httpLink: chat.executeAction, narrowing on result.type', async () => {
    const seen: Record<string, unknown> = {};
    for (const action of ['draft_reply', 'extract_tasks', 'classify_intent'] as const) {
      const output = await plain.chat.executeAction.mutate({
        action,
        text: 'Hi Sam, can you send me the Q3 report by Friday? Thanks, Alex',
      });
      expectEqual(output.result.type, action, 'result.type');
      expect(!('action' in output.result), `${action}: result still has \`action\` (now type)`);
      expect(typeof output.costUsd === 'string', `${action}: costUsd is not a string`);
      expectMoney(output, action);
      checkUsage(output.usage, `${action}: usage`);
      const result = output.result;
      switch (result.type) {
        case 'draft_reply':
          expect(typeof result.body === 'string', 'draft_reply: body');
          expect(['formal', 'neutral', 'friendly'].includes(result.tone), 'draft_reply: tone');
          expect(result.subject === null || typeof result.subject === 'string', 'draft_reply: subject');
          seen[action] = { tone: result.tone };
          break;
        case 'extract_tasks':
          expect(Array.isArray(result.tasks), 'extract_tasks: tasks');
          for (const task of result.tasks) {
            expect(['low', 'medium', 'high'].includes(task.priority), 'extract_tasks: priority');
          }
          seen[action] = { tasks: result.tasks.length };
          break;
        case 'classify_intent':
          expect(result.confidence >= 0 && result.confidence <= 1, 'classify_intent: confidence');
          seen[action] = { intent: result.intent, confidence: result.confidence };
          break;
        default: {
          const never: never = result;
          throw new Mismatch(`unknown action ${JSON.stringify(never)}`);
        }
      }
    }
    return seen;
  });

  await check('httpLink: chat.summarizeEmail', async () => {
    const input: Inputs['chat']['summarizeEmail'] = {
      email: { subject: 'Q3 report', from: 'alex@example.com', body: 'Please send the Q3 report by Friday.' },
      maxWords: 50,
    };
    const output = await plain.chat.summarizeEmail.mutate(input);
    expect(typeof output.summary === 'string', 'summary');
    expect(Array.isArray(output.keyPoints) && output.keyPoints.every((p) => typeof p === 'string'), 'keyPoints');
    expect(Array.isArray(output.actionItems) && output.actionItems.every((p) => typeof p === 'string'), 'actionItems');
    expect(typeof output.costUsd === 'string', 'costUsd is not a string');
    expectMoney(output, 'summarizeEmail');
    checkUsage(output.usage, 'usage');
    expectEqual(output.conversation, null, 'conversation (none was given)');
    return { keyPoints: output.keyPoints.length, actionItems: output.actionItems.length, costUsd: output.costUsd };
  });

  await check('httpLink: chat.getConversation, ids named conversationId and messageId', async () => {
    expect(built !== undefined, 'no conversation: chat.sendMessage failed');
    const detail = await plain.chat.getConversation.query({ conversationId: built.conversationId });
    expectEqual(detail.conversationId, built.conversationId, 'conversationId');
    expect(!('id' in detail), 'the conversation still has `id` (now conversationId)');
    expectEqual(detail.totals, built.totals, 'totals (as chat.sendMessage last returned them)');
    expect(detail.messages.length >= 4, `messages: ${detail.messages.length}`);
    for (const message of detail.messages) {
      expect(UUID.test(message.messageId), `messageId is not a UUID: ${message.messageId}`);
      expect(!('id' in message), 'a message still has `id` (now messageId)');
    }
    const ids = detail.messages.map((m) => m.messageId);
    for (const id of built.messageIds) {
      expect(ids.includes(id), `chat.sendMessage's messageId ${id} is not among the messages`);
    }
    const shares = detail.modelDistribution;
    expectEqual(shares.reduce((n, m) => n + m.llmCalls, 0), built.totals.llmCalls, 'modelDistribution: llmCalls');
    expectEqual(
      shares.reduce((n, m) => n + m.totalTokensUsed, 0),
      built.totals.totalTokensUsed,
      'modelDistribution: totalTokensUsed',
    );
    expect(
      decimalEquals(
        sumDecimals(shares.map((m) => m.totalCostUsd)),
        decimal(knownCost(built.totals.totalCostUsd, 'built: totalCostUsd')),
      ),
      `modelDistribution: totalCostUsd ${JSON.stringify(shares)}`,
    );
    return { messages: detail.messages.length, amounts: expectMoney(detail, 'getConversation'), shares };
  });

  // Queries whose input fields are all optional take no input: `.query()`, and @trpc/client sends no `input` at all.
  await check('httpLink: every query whose input fields are all optional, called with no input', async () => {
    const wire = new Wire();
    const mine = plainClient(apiKey, wire);
    const list = await mine.chat.listConversations.query();
    checkConversationList(list, "the user's listConversations");
    if (built !== undefined) {
      const summary = list.conversations.find((c) => c.conversationId === built!.conversationId);
      expect(summary !== undefined, `the conversation ${built.conversationId} is not listed`);
      expectEqual(summary.totals, built.totals, 'the listed totals');
    }
    const forbidden = await expectError(mine.admin.usageByModel.query(), 'FORBIDDEN', 403, 'admin.usageByModel');
    const userRequests = wire.take();
    const admin = plainClient(needAdminKey(), wire);
    const answers = await noInputQueries(admin);
    const summary = checkNoInputAnswers(answers, 'httpLink');
    if (built !== undefined) {
      expect(
        !answers.list.conversations.some((c) => c.conversationId === built!.conversationId),
        "the admin's chat.listConversations lists another user's conversation",
      );
      expect(summary.llmCalls >= built.totals.llmCalls, 'usageByModel counts fewer calls than the conversation');
    }
    const requests = [...userRequests, ...wire.take()];
    expectEqual(requests.length, 2 + NO_INPUT_PATHS.length, 'requests (one per call)');
    for (const request of requests) {
      expectEqual(request.method, 'GET', `method of ${request.url}`);
      expect(!new URL(request.url).searchParams.has('input'), `an input was sent: ${request.url}`);
    }
    expectEqual(
      requests.map((r) => new URL(r.url).pathname.replace(/^.*\//, '')).sort(),
      ['admin.usageByModel', 'chat.listConversations', ...NO_INPUT_PATHS].sort(),
      'paths',
    );
    return { ...summary, forbidden };
  });

  await check('httpLink: admin.getConversationCost, the rows behind the totals', async () => {
    expect(built !== undefined, 'no conversation: chat.sendMessage failed');
    const admin = plainClient(needAdminKey());
    const cost = await admin.admin.getConversationCost.query({ conversationId: built.conversationId });
    expectEqual(cost.conversationId, built.conversationId, 'conversationId');
    expectEqual(cost.totals, built.totals, 'totals');
    expectEqual(cost.rows.length, built.totals.llmCalls, 'rows (one per call)');
    expect(!('usage' in cost), 'the rows are still called `usage` (now rows)');
    cost.rows.forEach((row, i) => {
      checkUsageRow(row, `rows[${i}]`);
      expectEqual(row.conversationId, built!.conversationId, `rows[${i}].conversationId`);
      expectEqual(row.pricingStatus, 'priced', `rows[${i}].pricingStatus`);
    });
    // Newest first: the second message's call, then the first's; exactly what chat.sendMessage returned.
    expectEqual(
      cost.rows.map((row) => row.usage),
      [...built.usages].reverse(),
      "the rows' usage against chat.sendMessage's",
    );
    expectEqual(
      cost.rows.map((row) => row.costUsd),
      [...built.costs].reverse(),
      "the rows' costUsd against chat.sendMessage's",
    );
    expectEqual(
      cost.byProcedure.map((p) => [p.procedure, p.llmCalls]),
      [['chat.sendMessage', built.totals.llmCalls]],
      'byProcedure',
    );
    const tokens = sumTokens(cost.rows.map((row) => row.usage));
    expectEqual(cost.byProcedure[0]?.tokens, tokens, "byProcedure's tokens against the rows'");
    expectEqual(tokens.prompt, built.totals.totalPromptTokens, "the rows' prompt tokens against totalPromptTokens");
    expectEqual(tokens.output, built.totals.totalOutputTokens, "the rows' output tokens against totalOutputTokens");
    expectEqual(cost.modelDistribution.reduce((n, m) => n + m.llmCalls, 0), built.totals.llmCalls, 'modelDistribution');
    return { rows: cost.rows.length, amounts: expectMoney(cost, 'getConversationCost') };
  });

  // errors over httpLink -----------------------------------------------------------------------------------------
  await check('httpLink: UNAUTHORIZED without a key', async () => {
    const anonymous = plainClient(undefined);
    const health = await anonymous.system.health.query(); // public
    expectEqual(health.status, 'ok', 'public health without a key');
    return [
      await expectError(anonymous.system.whoami.query(), 'UNAUTHORIZED', 401, 'system.whoami'),
      await expectError(anonymous.chat.sendMessage.mutate({ message: 'hi' }), 'UNAUTHORIZED', 401, 'chat.sendMessage'),
      await expectError(plainClient('tb_not-a-key').system.whoami.query(), 'UNAUTHORIZED', 401, 'system.whoami'),
    ];
  });

  await check('httpLink: BAD_REQUEST on invalid input (sent by casting)', async () => {
    const wrongType = { message: 42 } as unknown as Inputs['chat']['sendMessage'];
    const unknownField = { message: 'hi', colour: 'red' } as unknown as Inputs['chat']['sendMessage'];
    const missing = {} as unknown as Inputs['chat']['sendMessage'];
    const badEnum = { action: 'translate', text: 'x' } as unknown as Inputs['chat']['executeAction'];
    // The old spelling of the text is an unknown field now.
    const oldInput = { action: 'classify_intent', input: 'x' } as unknown as Inputs['chat']['executeAction'];
    const cases: [string, () => Promise<unknown>][] = [
      ['message', () => plain.chat.sendMessage.mutate(wrongType)],
      ['colour', () => plain.chat.sendMessage.mutate(unknownField)],
      ['message', () => plain.chat.sendMessage.mutate(missing)],
      ['action', () => plain.chat.executeAction.mutate(badEnum)],
      ['`input`', () => plain.chat.executeAction.mutate(oldInput)],
      ['message', () => plain.chat.sendMessage.mutate({ message: '' })],
    ];
    const errors = [];
    for (const [field, call] of cases) {
      const error = await expectError(call(), 'BAD_REQUEST', 400);
      expect(error.message.includes(field), `the message does not name ${field}: ${error.message}`);
      errors.push(error);
    }
    return errors;
  });

  await check("httpLink: NOT_FOUND for a conversation that isn't the caller's", async () => {
    const errors = [
      await expectError(
        plain.chat.sendMessage.mutate({ conversationId: randomUUID(), message: 'hello?' }),
        'NOT_FOUND',
        404,
        'chat.sendMessage',
      ),
    ];
    if (otherKey !== undefined) {
      const other = plainClient(otherKey);
      const theirs = await other.chat.sendMessage.mutate({ message: 'my own conversation' });
      expect(theirs.conversationId !== null, 'the other user got no conversation');
      errors.push(
        await expectError(
          plain.chat.sendMessage.mutate({ conversationId: theirs.conversationId, message: 'let me in' }),
          'NOT_FOUND',
          404,
          'chat.sendMessage',
        ),
        await expectError(
          plain.chat.executeAction.mutate({
            conversationId: theirs.conversationId,
            action: 'classify_intent',
            text: 'x',
          }),
          'NOT_FOUND',
          404,
          'chat.executeAction',
        ),
      );
      // The owner still sees it, unchanged by the attempts.
      const again = await other.chat.sendMessage.mutate({ conversationId: theirs.conversationId, message: 'still mine' });
      expectEqual(again.conversation?.llmCalls, 2, "owner's conversation.llmCalls");
    }
    return errors;
  });

  await check('httpLink: NOT_FOUND for an unknown procedure, METHOD_NOT_SUPPORTED for a query on a mutation', async () => {
    // Both are impossible in typed code: reach past the types on purpose.
    const untyped = plain as unknown as {
      system: { nope: { query: () => Promise<unknown> } };
      chat: { sendMessage: { query: (input: unknown) => Promise<unknown> } };
    };
    const notFound = await expectError(untyped.system.nope.query(), 'NOT_FOUND', 404, 'system.nope');
    expect(notFound.message.includes('system.nope'), `message: ${notFound.message}`);
    const wrongMethod = await expectError(
      untyped.chat.sendMessage.query({ message: 'hi' }),
      'METHOD_NOT_SUPPORTED',
      405,
      'chat.sendMessage',
    );
    return [notFound, wrongMethod];
  });

  // httpBatchLink ------------------------------------------------------------------------------------------------
  const batchWire = new Wire();
  const batch = batchClient(apiKey, batchWire);

  await check('httpBatchLink: three queries in one GET', async () => {
    batchWire.take();
    const [health, me, again] = await Promise.all([
      batch.system.health.query(),
      batch.system.whoami.query(),
      batch.system.health.query(),
    ]);
    expectEqual(health.status, 'ok', 'health.status');
    expect(UUID.test(me.userId), 'whoami.userId');
    expectEqual(again.database, 'ok', 'second health.database');
    const requests = batchWire.take();
    expectEqual(requests.length, 1, 'requests');
    const request = requests[0]!;
    expectEqual(request.method, 'GET', 'method');
    expect(request.url.includes('/trpc/system.health,system.whoami,system.health?batch=1'), `url: ${request.url}`);
    expectEqual(request.status, 200, 'HTTP status');
    return request;
  });

  await check('httpBatchLink: three mutations in one POST', async () => {
    batchWire.take();
    const [sent, action, summary] = await Promise.all([
      batch.chat.sendMessage.mutate({ message: 'batched hello' }),
      batch.chat.executeAction.mutate({ action: 'classify_intent', text: 'Where is my parcel?' }),
      batch.chat.summarizeEmail.mutate({ email: { body: 'The meeting moves to 3pm.' } }),
    ]);
    checkSendMessage(sent, 'batched sendMessage');
    expectEqual(action.result.type, 'classify_intent', 'executeAction result.type');
    expectMoney([sent, action, summary], 'batched mutations');
    expect(typeof summary.summary === 'string', 'summarizeEmail summary');
    const requests = batchWire.take();
    expectEqual(requests.length, 1, 'requests');
    expectEqual(requests[0]!.method, 'POST', 'method');
    expect(requests[0]!.url.includes('chat.sendMessage,chat.executeAction,chat.summarizeEmail?batch=1'), 'url');
    return requests[0];
  });

  await check('httpBatchLink: an idempotencyKey per mutation, a repeat replayed without running again', async () => {
    const keys = [`interop-${Date.now()}-0`, `interop-${Date.now()}-1`] as const;
    const both = () =>
      Promise.all([
        batch.chat.sendMessage.mutate({ message: 'idempotent hello', idempotencyKey: keys[0] }),
        batch.chat.executeAction.mutate({ action: 'classify_intent', text: 'Run me once', idempotencyKey: keys[1] }),
      ]);
    const [sent, action] = await both();
    const [sentAgain, actionAgain] = await both();
    expectEqual([sent.fromIdempotentCache, action.fromIdempotentCache], [false, false], 'first run');
    expectEqual(sentAgain, { ...sent, fromIdempotentCache: true }, 'sendMessage replayed');
    expectEqual(actionAgain, { ...action, fromIdempotentCache: true }, 'executeAction replayed');
    const other = batch.chat.sendMessage.mutate({ message: 'another message', idempotencyKey: keys[0] });
    return expectError(other, 'UNPROCESSABLE_CONTENT', 422, 'chat.sendMessage');
  });

  await check('httpBatchLink: mixed results in one batch (207), each call settles on its own', async () => {
    batchWire.take();
    const untyped = batch as unknown as { system: { nope: { query: () => Promise<unknown> } } };
    const queries = await settled<unknown>([batch.system.whoami.query(), untyped.system.nope.query()]);
    fulfilled(queries[0], 'whoami');
    const notFound = checkError(rejected(queries[1], 'system.nope'), 'NOT_FOUND', 404, 'system.nope');
    const mutations = await settled<unknown>([
      batch.chat.sendMessage.mutate({ message: 'valid' }),
      batch.chat.sendMessage.mutate({ message: 42 } as unknown as Inputs['chat']['sendMessage']),
      batch.chat.sendMessage.mutate({ conversationId: randomUUID(), message: 'nobody' }),
    ]);
    checkSendMessage(fulfilled(mutations[0], 'valid sendMessage') as SendMessageOutput, 'valid sendMessage');
    const badRequest = checkError(rejected(mutations[1], 'invalid sendMessage'), 'BAD_REQUEST', 400, 'chat.sendMessage');
    const missing = checkError(rejected(mutations[2], 'foreign sendMessage'), 'NOT_FOUND', 404, 'chat.sendMessage');
    const requests = batchWire.take();
    expectEqual(
      requests.map((r) => [r.method, r.status]),
      [
        ['GET', 207],
        ['POST', 207],
      ],
      'requests (method, status)',
    );
    return { notFound, badRequest, missing };
  });

  await check('httpBatchLink: every query whose input fields are all optional, with no input, in one GET', async () => {
    const wire = new Wire();
    const admin = batchClient(needAdminKey(), wire);
    const answers = await noInputQueries(admin);
    const summary = checkNoInputAnswers(answers, 'httpBatchLink');
    const requests = wire.take();
    expectEqual(requests.length, 1, 'requests');
    const request = requests[0]!;
    expectEqual(request.method, 'GET', 'method');
    expectEqual(request.status, 200, 'HTTP status');
    // No call has an input: @trpc/client sends the batch's inputs as `{}`, no entry for any call.
    const expected = `/trpc/${NO_INPUT_PATHS.join(',')}?batch=1&input=${encodeURIComponent('{}')}`;
    expect(request.url.endsWith(expected), `url: ${request.url}, expected it to end with ${expected}`);
    return { ...summary, url: request.url };
  });

  await check('httpBatchLink: calls without input next to calls with input in one GET', async () => {
    batchWire.take();
    const [bare, limited, detail] = await Promise.all([
      batch.chat.listConversations.query(),
      batch.chat.listConversations.query({ limit: 1 }),
      conversationId === undefined
        ? Promise.resolve(null)
        : batch.chat.getConversation.query({ conversationId, limit: 2 }),
    ]);
    checkConversationList(bare, 'without input');
    checkConversationList(limited, 'with limit 1');
    expect(bare.conversations.length >= 1, 'without input: no conversation');
    expectEqual(limited.conversations.length, 1, 'with limit 1: conversations');
    expectEqual(limited.conversations[0], bare.conversations[0], 'the first conversation, either way');
    if (detail !== null) {
      expectEqual(detail.conversationId, conversationId, 'getConversation: conversationId');
      expectEqual(detail.messages.length, 2, 'getConversation: messages (limit 2)');
    }
    const requests = batchWire.take();
    expectEqual(requests.length, 1, 'requests');
    const request = requests[0]!;
    expectEqual([request.method, request.status], ['GET', 200], 'method, HTTP status');
    // The first call's input is absent from the batch's inputs: {"1": {...}, "2": {...}}.
    const inputs = JSON.parse(new URL(request.url).searchParams.get('input') ?? 'null') as Record<string, unknown>;
    expect(inputs !== null && !('0' in inputs) && '1' in inputs, `the batch's inputs: ${JSON.stringify(inputs)}`);
    return { inputs, amounts: expectMoney([bare, limited, detail], 'batch') };
  });

  await check('httpBatchLink: a batch without a key authorises each call', async () => {
    const wire = new Wire();
    const anonymous = batchClient(undefined, wire);
    const [health, me] = await settled<unknown>([anonymous.system.health.query(), anonymous.system.whoami.query()]);
    fulfilled(health, 'public health');
    const error = checkError(rejected(me, 'whoami'), 'UNAUTHORIZED', 401, 'system.whoami');
    expectEqual(wire.take().length, 1, 'requests');
    return error;
  });

  // httpBatchStreamLink ------------------------------------------------------------------------------------------
  const streamWire = new Wire();
  const streamed = streamClient(apiKey, streamWire);

  await check('httpBatchStreamLink: queries streamed in one response (jsonl)', async () => {
    streamWire.take();
    const untyped = streamed as unknown as { system: { nope: { query: () => Promise<unknown> } } };
    const [health, me, nope] = await settled<unknown>([
      streamed.system.health.query(),
      streamed.system.whoami.query(),
      untyped.system.nope.query(),
    ]);
    expectEqual((fulfilled(health, 'health') as Outputs['system']['health']).status, 'ok', 'health.status');
    expect(UUID.test((fulfilled(me, 'whoami') as Outputs['system']['whoami']).userId), 'whoami.userId');
    const notFound = checkError(rejected(nope, 'system.nope'), 'NOT_FOUND', 404, 'system.nope');
    const requests = streamWire.take();
    expectEqual(requests.length, 1, 'requests');
    const request = requests[0]!;
    expectEqual(request.trpcAccept, 'application/jsonl', 'trpc-accept request header');
    expectEqual(request.status, 200, 'HTTP status of a streamed batch');
    return { request, notFound };
  });

  await check('httpBatchStreamLink: mutations streamed, each settles when it finishes', async () => {
    streamWire.take();
    const [sent, tasks, summary, foreign] = await settled<unknown>([
      streamed.chat.sendMessage.mutate({ message: 'streamed hello', ...(conversationId ? { conversationId } : {}) }),
      streamed.chat.executeAction.mutate({ action: 'extract_tasks', text: 'Alex: send the report by Friday.' }),
      streamed.chat.summarizeEmail.mutate({ email: { body: 'Lunch is at noon.', subject: null, from: null } }),
      streamed.chat.sendMessage.mutate({ conversationId: randomUUID(), message: 'nobody' }),
    ]);
    const message = fulfilled(sent, 'sendMessage') as SendMessageOutput;
    checkSendMessage(message, 'streamed sendMessage');
    if (conversationId) expectEqual(message.conversation?.llmCalls, 3, 'conversation.llmCalls after three messages');
    const action = fulfilled(tasks, 'executeAction') as Outputs['chat']['executeAction'];
    expectEqual(action.result.type, 'extract_tasks', 'result.type');
    expectMoney([action, fulfilled(summary, 'summarizeEmail')], 'streamed mutations');
    const notFound = checkError(rejected(foreign, 'foreign sendMessage'), 'NOT_FOUND', 404, 'chat.sendMessage');
    const requests = streamWire.take();
    expectEqual(requests.length, 1, 'requests');
    expectEqual(requests[0]!.method, 'POST', 'method');
    expectEqual(requests[0]!.trpcAccept, 'application/jsonl', 'trpc-accept');
    return { notFound };
  });

  // httpSubscriptionLink -----------------------------------------------------------------------------------------
  await check('httpSubscriptionLink: system.clock, tracked events, then return', async () => {
    const events = await collect(streamed, { count: 3, intervalMs: 20 });
    expectEqual(events.ids, ['1', '2', '3'], 'event ids');
    expectEqual(
      events.data.map((e) => e.seq),
      [1, 2, 3],
      'seq',
    );
    for (const event of events.data) expect(!Number.isNaN(Date.parse(event.at)), `at is not a time: ${event.at}`);
    expect(events.started, 'onStarted was not called');
    expect(events.completed, 'onComplete was not called (no `return` event?)');
    return events;
  });

  await check('httpSubscriptionLink: resume after lastEventId', async () => {
    const events = await collect(streamed, { count: 6, intervalMs: 20, lastEventId: '3' });
    expectEqual(events.ids, ['4', '5', '6'], 'event ids after lastEventId 3');
    expectEqual(
      events.data.map((e) => e.seq),
      [4, 5, 6],
      'seq',
    );
    expect(events.completed, 'onComplete');
    return events.ids;
  });

  await check('httpSubscriptionLink: a dropped connection reconnects and resumes after the last event', async () => {
    const proxy = await cuttingProxy(baseUrl, (_, dataEvents) => dataEvents === 2);
    try {
      const client = createTRPCClient<AppRouter>({
        links: [httpSubscriptionLink({ url: `${proxy.url}/trpc`, EventSource, connectionParams: { apiKey } })],
      });
      const events = await collect(client, { count: 5, intervalMs: 30 });
      expectEqual(events.ids, ['1', '2', '3', '4', '5'], 'event ids, each once');
      expectEqual(proxy.connections.length, 2, 'connections (the first one cut after two events)');
      const resumed = proxy.connections[1]!;
      const resumedInput = new URL(resumed.url, proxy.url).searchParams.get('input') ?? '';
      expect(
        resumed.lastEventId === '2' || resumedInput.includes('"lastEventId":"2"'),
        `the reconnect did not resume after event 2: ${JSON.stringify({ ...resumed, url: resumedInput })}`,
      );
      expect(events.completed, 'onComplete');
      const urls = proxy.connections.map((c) => ({ ...c, url: c.url.replace(/connectionParams=[^&]*/, 'connectionParams=…') }));
      return { ids: events.ids, connections: urls };
    } finally {
      await proxy.close();
    }
  });

  await check('httpSubscriptionLink: system.clock with no input at all (its defaults)', async () => {
    const first = await new Promise<Tracked<ClockEvent>>((resolve, reject) => {
      const subscription = streamed.system.clock.subscribe(undefined, {
        onData(event) {
          resolve(event); // first: unsubscribing completes the subscription, which would reject
          subscription.unsubscribe();
        },
        onError(error) {
          reject(error);
          subscription.unsubscribe();
        },
        onComplete() {
          reject(new Mismatch('completed before its first event'));
        },
      });
    });
    expectEqual([first.id, first.data.seq], ['1', 1], 'first event (id, seq)');
    expectTime(first.data.at, 'at');
    return first;
  });

  await check('httpSubscriptionLink: async iteration', async () => {
    const seen: string[] = [];
    for await (const event of streamed.system.clock.subscribe({ count: 2, intervalMs: 10 })) {
      const tracked: Tracked<ClockEvent> = event;
      seen.push(`${tracked.id}:${tracked.data.seq}`);
    }
    expectEqual(seen, ['1:1', '2:2'], 'events');
    return seen;
  });

  await check('httpSubscriptionLink: chat.streamMessage, untracked deltas, then done, then return', async () => {
    const streamedReply = await collectMessage(streamed, {
      requestId: crypto.randomUUID(), // a new one for each message: the server runs a requestId once
      message: 'Stream a reply to me, word by word',
      maxTokens: 64,
    });
    expect(streamedReply.error === undefined, `the stream failed: ${describe(streamedReply.error)}`);
    const done = streamedReply.done;
    expect(done !== undefined, 'no done event');
    expect(streamedReply.deltas.length >= 2, `deltas: ${JSON.stringify(streamedReply.deltas)}`);
    expectEqual(streamedReply.deltas.join(''), done.reply, 'the deltas joined');
    checkSendMessage(done, 'streamMessage done');
    expect(streamedReply.completed, 'onComplete was not called (no `return` event?)');
    return { deltas: streamedReply.deltas.length, costUsd: done.costUsd };
  });

  // A connection cut right after an event, even in the middle of what the server wrote at once, as a flaky network
  // would. The EventSource then reconnects to the same URL, hence the same requestId, with no Last-Event-ID (the
  // events carry no id): the server refuses it with CONFLICT and never calls the model again (the Python test counts
  // the provider's requests).
  await check('httpSubscriptionLink: chat.streamMessage cut by a proxy is refused on reconnect, not sent again', async () => {
    const proxy = await cuttingProxy(baseUrl, (_, dataEvents) => dataEvents === 2);
    try {
      const client = createTRPCClient<AppRouter>({
        links: [httpSubscriptionLink({ url: `${proxy.url}/trpc`, EventSource, connectionParams: { apiKey } })],
      });
      const input = { requestId: crypto.randomUUID(), message: 'A long answer, please', model: 'gemini-2.5-flash' };
      const cut = await collectMessage(client, input);
      expect(cut.done === undefined, 'the stream completed through a proxy that cuts it');
      expectEqual(cut.deltas.length, 2, 'deltas received before the cut');
      const refused = checkError(cut.error, 'CONFLICT', 409, 'chat.streamMessage');
      expect(refused.message.includes(input.requestId), `the refusal does not name the requestId: ${refused.message}`);
      expectReconnectedToTheSameUrl(proxy.connections);
      return { deltas: cut.deltas.length, refused };
    } finally {
      await proxy.close();
    }
  });

  await check('httpSubscriptionLink: chat.streamMessage cut after done replays the stored reply on reconnect, no new call', async () => {
    const proxy = await cuttingProxy(baseUrl, (block) => block.includes('"type":"done"'));
    try {
      const client = createTRPCClient<AppRouter>({
        links: [httpSubscriptionLink({ url: `${proxy.url}/trpc`, EventSource, connectionParams: { apiKey } })],
      });
      const input = { requestId: crypto.randomUUID(), message: 'Cut me after done', model: 'gemini-2.5-flash' };
      const cut = await collectMessage(client, input);
      // The stream finished; the reconnect that the missing `return` caused replays its stored reply (one delta and
      // the done event, marked fromIdempotentCache) and completes, without calling the model again.
      expect(cut.done !== undefined, 'no done event');
      expectEqual(cut.deltas[cut.deltas.length - 1], cut.done.reply, 'the replayed delta (the whole reply)');
      expectEqual(cut.deltas.slice(0, -1).join(''), cut.done.reply, 'the streamed deltas joined');
      expect(cut.done.fromIdempotentCache, 'the replayed done is not marked fromIdempotentCache');
      expect(cut.completed && cut.error === undefined, 'the replay should complete the subscription');
      expectReconnectedToTheSameUrl(proxy.connections);
      return { deltas: cut.deltas.length, replayed: cut.done.fromIdempotentCache };
    } finally {
      await proxy.close();
    }
  });

  await check('httpSubscriptionLink: UNAUTHORIZED without a key, BAD_REQUEST on invalid input', async () => {
    const anonymous = streamClient(undefined);
    const unauthorized = checkError(await subscriptionError(anonymous, { count: 2 }), 'UNAUTHORIZED', 401, 'system.clock');
    const badInput = { count: 0 } as Inputs['system']['clock'];
    const badRequest = checkError(await subscriptionError(streamed, badInput), 'BAD_REQUEST', 400, 'system.clock');
    expect(badRequest.message.includes('count'), `message does not name count: ${badRequest.message}`);
    return { unauthorized, badRequest };
  });
}

type Collected = { ids: string[]; data: ClockEvent[]; started: boolean; completed: boolean };

function collect(client: Client, input: Inputs['system']['clock']): Promise<Collected> {
  return new Promise((resolve, reject) => {
    const collected: Collected = { ids: [], data: [], started: false, completed: false };
    const subscription = client.system.clock.subscribe(input, {
      onStarted() {
        collected.started = true;
      },
      onData(event) {
        // A resumable subscription delivers {id, data}: the generated Tracked<ClockEvent>.
        const tracked: Tracked<ClockEvent> = event;
        collected.ids.push(tracked.id);
        collected.data.push(tracked.data);
      },
      onError(error) {
        subscription.unsubscribe();
        reject(error);
      },
      onComplete() {
        collected.completed = true;
        resolve(collected);
      },
    });
  });
}

type StreamedMessage = { deltas: string[]; done?: StreamMessageDone; completed: boolean; error?: unknown };

/** A chat.streamMessage subscription to its end: completed, or failed (the error is kept, not thrown). */
function collectMessage(client: Client, input: Inputs['chat']['streamMessage']): Promise<StreamedMessage> {
  return new Promise((resolve) => {
    const collected: StreamedMessage = { deltas: [], completed: false };
    const subscription = client.chat.streamMessage.subscribe(input, {
      onData(event: StreamMessageDelta | StreamMessageDone) {
        // Untracked events arrive as they are, narrowed by their tag.
        if (event.type === 'delta') collected.deltas.push(event.text);
        else collected.done = event;
      },
      onError(error) {
        subscription.unsubscribe();
        resolve({ ...collected, error });
      },
      onComplete() {
        collected.completed = true;
        resolve(collected);
      },
    });
  });
}

function subscriptionError(client: Client, input: Inputs['system']['clock']): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const subscription = client.system.clock.subscribe(input, {
      onData(event) {
        subscription.unsubscribe();
        reject(new Mismatch(`expected an error, got an event ${JSON.stringify(event)}`));
      },
      onError(error) {
        subscription.unsubscribe();
        resolve(error);
      },
      onComplete() {
        reject(new Mismatch('expected an error, the subscription completed'));
      },
    });
  });
}

type Connection = { url: string; lastEventId: string | null };

/** Two connections with the same URL (input and requestId included), the second without Last-Event-ID. */
function expectReconnectedToTheSameUrl(connections: Connection[]): void {
  expectEqual(connections.length, 2, 'connections (the first one cut, then the EventSource reconnect)');
  const [first, second] = connections as [Connection, Connection];
  expectEqual(second.url, first.url, 'the URL of the reconnect');
  expectEqual(second.lastEventId, null, 'Last-Event-ID of the reconnect');
}

/**
 * An HTTP proxy to the server that cuts the first event stream right after the first event for which `cutAfter`
 * holds (given the event's text and how many data events have come so far, this one included), as a flaky network
 * would: the end of that event's blank line is the last byte the client gets, even when the server wrote more in the
 * same chunk. It also sends `retry: 50` first, so that EventSource reconnects at once instead of after its default 3 s.
 */
async function cuttingProxy(
  target: string,
  cutAfter: (event: string, dataEvents: number) => boolean,
): Promise<{ url: string; connections: Connection[]; close: () => Promise<void> }> {
  const upstream = new URL(target);
  const connections: Connection[] = [];
  const server = createServer((req, res) => {
    const headers: IncomingHttpHeaders = { ...req.headers, host: upstream.host };
    const lastEventId = req.headers['last-event-id'];
    const first = connections.length === 0;
    connections.push({ url: req.url ?? '', lastEventId: typeof lastEventId === 'string' ? lastEventId : null });
    const forward = httpRequest(
      { host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        res.write('retry: 50\n\n');
        if (!first) {
          answer.pipe(res);
          return;
        }
        answer.setEncoding('utf8'); // decodes across chunk boundaries
        let dataEvents = 0;
        let pending = ''; // received, not yet forwarded: the start of an event whose blank line has not come yet
        let cut = false;
        answer.on('data', (chunk: string) => {
          if (cut) return;
          pending += chunk;
          // Forward event by event: each ends at its blank line (`\n\n`). A data event has a `data:` line and no
          // `event:` line (connected, ping, serialized-error... have one).
          for (let end = pending.indexOf('\n\n'); end !== -1; end = pending.indexOf('\n\n')) {
            const event = pending.slice(0, end + 2);
            pending = pending.slice(end + 2);
            if (/^data: /m.test(event) && !/^event: /m.test(event)) dataEvents += 1;
            if (cutAfter(event, dataEvents)) {
              cut = true;
              res.write(event, () => {
                answer.destroy();
                res.destroy();
              });
              return;
            }
            res.write(event);
          }
        });
        answer.on('end', () => res.end(pending));
        answer.on('error', () => res.destroy());
      },
    );
    forward.on('error', () => res.destroy());
    req.pipe(forward);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    connections,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function packageVersion(name: string): string {
  try {
    const path = new URL(`../node_modules/${name}/package.json`, import.meta.url);
    return (JSON.parse(readFileSync(path, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

// A promise rejected with nobody waiting for it is a bug in this program, but must still end in a report.
process.on('unhandledRejection', (reason) => {
  results.push({ name: 'unhandled promise rejection', ok: false, ms: 0, error: describe(reason) });
});

const started = performance.now();
await run();
const failed = results.filter((r) => !r.ok);
const report = {
  ok: failed.length === 0,
  passed: results.length - failed.length,
  failed: failed.map((r) => r.name),
  ms: Math.round(performance.now() - started),
  versions: {
    node: process.versions.node,
    '@trpc/client': packageVersion('@trpc/client'),
    '@trpc/server': packageVersion('@trpc/server'),
    eventsource: packageVersion('eventsource'),
  },
  checks: results,
};
process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
process.exit(report.ok ? 0 : 1);
