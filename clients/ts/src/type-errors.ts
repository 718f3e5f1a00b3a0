// Lines that must NOT compile against the generated AppRouter. Each is marked `@ts-expect-error`, so `tsc` fails
// when one of them starts compiling: that is, when the generated types become too loose (an `any`, a missing
// procedure type, an optional field that should be required...), or when an old spelling of the wire vocabulary
// comes back (`result.action`, `usage.cacheWrite5M`, `id` for `conversationId`...). The few unmarked calls must
// compile. Never run; only type-checked.

import type { TRPCClient } from '@trpc/client';
import type { inferRouterInputs, inferRouterOutputs } from '@trpc/server';

import type { AppRouter } from './app-router.js';

type Inputs = inferRouterInputs<AppRouter>;
type Outputs = inferRouterOutputs<AppRouter>;

export async function mistypedCalls(client: TRPCClient<AppRouter>): Promise<void> {
  // @ts-expect-error wrong input field type: message is a string
  await client.chat.sendMessage.mutate({ message: 42 });

  // @ts-expect-error missing required input: message
  await client.chat.sendMessage.mutate({ model: 'gpt-4o-mini' });

  // @ts-expect-error unknown input field
  await client.chat.sendMessage.mutate({ message: 'hi', colour: 'red' });

  // @ts-expect-error an id is a string, not a number
  await client.chat.sendMessage.mutate({ message: 'hi', conversationId: 7 });

  // @ts-expect-error unknown procedure
  await client.chat.sendMesage.mutate({ message: 'hi' });

  // @ts-expect-error unknown namespace
  await client.billing.invoice.query();

  // @ts-expect-error a mutation has no .query()
  await client.chat.sendMessage.query({ message: 'hi' });

  // @ts-expect-error a query has no .mutate()
  await client.system.health.mutate();

  // @ts-expect-error a procedure without input takes none
  await client.system.health.query({ verbose: true });

  // @ts-expect-error action must be one the registry knows
  await client.chat.executeAction.mutate({ action: 'translate', text: 'x' });

  // @ts-expect-error the text to act on is `text` (it was `input`)
  await client.chat.executeAction.mutate({ action: 'classify_intent', input: 'x' });

  // @ts-expect-error a query with a required input field refuses to be called without input
  await client.chat.getConversation.query();

  // @ts-expect-error admin.usageByDateRange needs its window and buckets (start, end, granularity; timeZone is UTC)
  await client.admin.usageByDateRange.query();

  // Queries whose input fields are all optional may be called with no input at all.
  await client.chat.listConversations.query();
  await client.admin.usageByModel.query();
  await client.admin.usageByModel.query(undefined);

  // @ts-expect-error ...but what input they get is still checked
  await client.chat.listConversations.query({ limit: '5' });

  // @ts-expect-error missing required nested input: email.body
  await client.chat.summarizeEmail.mutate({ email: { subject: 'no body' } });

  const sent = await client.chat.sendMessage.mutate({ message: 'hi' });

  // @ts-expect-error misspelled output field
  void sent.usage.cacheReads;

  // @ts-expect-error misspelled output field (snake_case is not the wire's spelling)
  void sent.cost_usd;

  // @ts-expect-error money is a decimal string, never a number
  const cost: number = sent.costUsd;
  void cost;

  // @ts-expect-error costUsd may be null (an unpriced model)
  void sent.costUsd.length;

  // @ts-expect-error conversation may be null
  void sent.conversation.totalCostUsd;

  // @ts-expect-error the provider's own counts moved under usage.reported
  void sent.usage.totalTokens;
  // @ts-expect-error the provider's own counts moved under usage.reported
  void sent.usage.completionTokens;
  const reported: number = sent.usage.reported.completionTokens + sent.usage.total + sent.usage.prompt;
  void reported;

  // @ts-expect-error the bucket is cacheWrite5m, lower-case m, everywhere
  void sent.usage.cacheWrite5M;

  // @ts-expect-error conversation totals count output tokens (totalCompletionTokens is gone)
  void sent.conversation?.totalCompletionTokens;

  const action = await client.chat.executeAction.mutate({ action: 'classify_intent', text: 'x' });

  // @ts-expect-error `intent` exists only once the union is narrowed to classify_intent
  void action.result.intent;

  // @ts-expect-error the result union is tagged by `type` (it was `action`)
  void action.result.action;

  if (action.result.type === 'draft_reply') {
    // @ts-expect-error `tasks` belongs to extract_tasks results
    void action.result.tasks;
  }

  const me = await client.system.whoami.query();
  // @ts-expect-error whoami has no email
  void me.email;
  // @ts-expect-error the user's id is userId
  void me.id;

  const list = await client.chat.listConversations.query();
  // @ts-expect-error the page's conversations are `conversations` (they were `items`)
  void list.items;
  // @ts-expect-error a conversation's id is conversationId
  void list.conversations[0]?.id;

  const detail = await client.chat.getConversation.query({ conversationId: 'c0ffee00-0000-4000-8000-000000000000' });
  // @ts-expect-error a message's id is messageId
  void detail.messages[0]?.id;
  // @ts-expect-error ModelShare: llmCalls, totalTokensUsed, totalCostUsd (calls, tokens, costUsd are gone)
  void detail.modelDistribution[0]?.calls;
  // @ts-expect-error ModelShare's cost is totalCostUsd
  void detail.modelDistribution[0]?.costUsd;

  const conversationCost = await client.admin.getConversationCost.query({ conversationId: detail.conversationId });
  // @ts-expect-error the usage rows are `rows` (they were `usage`)
  void conversationCost.usage;
  const row = conversationCost.rows[0]!;
  // @ts-expect-error a row's id is callId
  void row.id;
  // @ts-expect-error a row's tokens are its `usage` (a Usage, with `estimated`)
  void row.tokens;
  // @ts-expect-error usageEstimated is now usage.estimated
  void row.usageEstimated;
  // @ts-expect-error the bucket costs are costsUsd, the rates ratesUsdPerMillionTokens
  void row.costs;
  // @ts-expect-error the rates are ratesUsdPerMillionTokens
  void row.rates;
  // @ts-expect-error the rates' buckets are spelt like the usage's: cacheWrite1h
  void row.ratesUsdPerMillionTokens?.cacheWrite1H;
  // @ts-expect-error provider is one of the providers, not any string
  row.provider = 'mistral';

  const byDate = await client.admin.usageByDateRange.query({
    start: '2026-01-01T00:00:00Z',
    end: '2026-02-01T00:00:00Z',
    granularity: 'week',
    timeZone: 'Europe/Berlin',
  });
  // @ts-expect-error the window's sums are `overall` (they were `total`)
  void byDate.total;
  // @ts-expect-error calls are llmCalls
  void byDate.overall.calls;
  // @ts-expect-error admin buckets are spelt like the usage's: cacheWrite5m
  void byDate.overall.tokens.cacheWrite5M;
  // @ts-expect-error a cost is null when every call behind it was unpriced (unknown, not free): check first
  const knownCostUsd: string = byDate.overall.costUsd;
  void knownCostUsd;
  // A date alone is that day's midnight in timeZone (default UTC); hours are buckets too.
  await client.admin.usageByDateRange.query({ start: '2026-01-01', end: '2026-01-02', granularity: 'hour' });
  // @ts-expect-error granularity is one of hour, day, week, month
  await client.admin.usageByDateRange.query({ start: '2026-01-01', end: '2026-01-02', granularity: 'year' });

  const unpriced = await client.admin.unpricedCalls.query();
  // @ts-expect-error the count of unpriced calls is unpricedCalls
  void unpriced.calls;
  // @ts-expect-error an unpriced model's calls are llmCalls
  void unpriced.models[0]?.calls;

  // @ts-expect-error count is a number
  client.system.clock.subscribe({ count: '3' }, { onData: () => undefined });

  // @ts-expect-error missing required input: requestId (what makes the stream run once)
  client.chat.streamMessage.subscribe({ message: 'hi' }, { onData: () => undefined });

  client.system.clock.subscribe(
    { count: 1 },
    {
      onData(event) {
        // @ts-expect-error a tracked event is {id, data}: seq is on event.data
        void event.seq;
        const seq: number = event.data.seq;
        void seq;
      },
    },
  );
}

// The inference helpers of @trpc/server see the same types.
// @ts-expect-error cacheRead is a number
export const cacheRead: Outputs['chat']['sendMessage']['usage']['cacheRead'] = '1';
// @ts-expect-error message is required
export const noMessage: Inputs['chat']['sendMessage'] = {};
// @ts-expect-error the tone is one of formal, neutral, friendly
export const tone: Extract<Outputs['chat']['executeAction']['result'], { type: 'draft_reply' }>['tone'] = 'angry';
// @ts-expect-error the union is tagged by `type`: nothing in it has `action`
export const byAction: Extract<Outputs['chat']['executeAction']['result'], { action: 'draft_reply' }>['tone'] =
  'formal';
// @ts-expect-error TokenTotals is now TokenCounts
export type { TokenTotals } from './app-router.js';
// @ts-expect-error money is a string, even a total
export const total: Outputs['chat']['listConversations']['conversations'][number]['totals']['totalCostUsd'] = 0;
