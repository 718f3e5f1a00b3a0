// Lines that must NOT compile against the generated AppRouter. Each is marked `@ts-expect-error`, so `tsc` fails
// when one of them starts compiling: that is, when the generated types become too loose (an `any`, a missing
// procedure type, an optional field that should be required...). Never run; only type-checked.

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
  await client.chat.executeAction.mutate({ action: 'translate', input: 'x' });

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

  const action = await client.chat.executeAction.mutate({ action: 'classify_intent', input: 'x' });

  // @ts-expect-error `intent` exists only once the union is narrowed to classify_intent
  void action.result.intent;

  if (action.result.action === 'draft_reply') {
    // @ts-expect-error `tasks` belongs to extract_tasks results
    void action.result.tasks;
  }

  // @ts-expect-error whoami has no email
  void (await client.system.whoami.query()).email;

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
export const tone: Extract<Outputs['chat']['executeAction']['result'], { action: 'draft_reply' }>['tone'] = 'angry';
