// Example domain `Letters/Letter` in JavaScript, driven by the bank's
// notifications: "when an account is opened, send a welcome letter"; "when an
// account's balance reaches 1,000, write to congratulate".
//
// The twin of `examples/welcome` (Rust). Each command's id derives from the
// notification's, so a notification delivered twice sends each letter once.

import {
  Rejected,
  SendError,
  defineCommandHandler,
  defineNotificationHandler,
  message,
  streamId,
} from '../../sdk/js/cqrs-wasi.js';

export const SendWelcome = message('SendWelcome', { account: 'string' });
export const SendCongratulations = message('SendCongratulations', { account: 'string', balance: 'integer' });
export const WelcomeSent = message('WelcomeSent', { account: 'string' });
export const CongratulationsSent = message('CongratulationsSent', { account: 'string', balance: 'integer' });

/** Each letter goes out once. */
export const letter = defineCommandHandler(
  'Letters',
  'Letter',
  [SendWelcome, SendCongratulations],
  (command, ctx) => {
    if (ctx.sequence() > 0) throw new Rejected('this letter was sent already');
    if (command instanceof SendWelcome) return [new WelcomeSent({ account: command.account })];
    return [new CongratulationsSent({ account: command.account, balance: command.balance })];
  },
);

export const welcomeNewAccounts = defineNotificationHandler(
  'welcome-new-accounts',
  { eventTypes: ['Bank.Account.NewEntity'] },
  (notification, ctx) => {
    const account = notification.json().instanceKey;
    ctx.send(
      streamId('Letters', 'Letter', `welcome-${account}`),
      new SendWelcome({ account }),
      `${notification.id}:welcome`,
    );
  },
);

export const congratulateSavers = defineNotificationHandler(
  'congratulate-savers',
  { eventTypes: ['Bank.Account.Projection.Balance'] },
  (notification, ctx) => {
    const about = notification.json();
    // Sent without its value (over the size limit): nothing to judge.
    if (about.value == null || about.value.balance < 1000) return;
    const account = about.instanceKey;
    // One congratulation per account, whichever notification crossed the
    // line first: the letter's own rule refuses a second one.
    try {
      ctx.send(
        streamId('Letters', 'Letter', `savings-${account}`),
        new SendCongratulations({ account, balance: about.value.balance }),
        `${notification.id}:congratulate`,
      );
    } catch (error) {
      if (!(error instanceof SendError && error.kind === 'rejected')) throw error;
    }
  },
);
