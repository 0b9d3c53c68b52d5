// Example domain `Letters/Letter` in JavaScript, driven by the bank's
// notifications: "when an account is opened, send a welcome letter".
//
// The twin of `welcome-new-accounts` and the `Letter` handler of
// `examples/welcome` (Rust). The command's id derives from the
// notification's, so a notification delivered twice sends one letter.

import {
  Rejected,
  defineCommandHandler,
  defineNotificationHandler,
  message,
  streamId,
} from '../../sdk/js/cqrs-wasi.js';

export const SendWelcome = message('SendWelcome', { account: 'string' });
export const WelcomeSent = message('WelcomeSent', { account: 'string' });

export const letter = defineCommandHandler('Letters', 'Letter', [SendWelcome], (command, ctx) => {
  if (ctx.sequence() > 0) throw new Rejected('this letter was sent already');
  return [new WelcomeSent({ account: command.account })];
});

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
