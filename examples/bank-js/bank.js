// Example domain `Bank/Account` in JavaScript: open an account, deposit,
// withdraw without overdrawing, close it once it is empty.
//
// The twin of `examples/bank` (Rust): the same commands, events, rules,
// error messages and `Balance` state, byte for byte. Amounts are safe
// integers (below 2^53): a larger one is an invalid payload here, where the
// Rust twin takes any 64-bit integer.

import {
  InvalidPayload,
  Rejected,
  defineCommandHandler,
  defineProjection,
  message,
} from '../../sdk/js/cqrs-wasi.js';

// What can be asked of an account.
export const OpenAccount = message('OpenAccount', { owner: 'string' });
export const Deposit = message('Deposit', { amount: 'integer' });
export const Withdraw = message('Withdraw', { amount: 'integer' });
export const CloseAccount = message('CloseAccount');

// What happened to an account.
export const AccountOpened = message('AccountOpened', { owner: 'string' });
export const MoneyDeposited = message('MoneyDeposited', { amount: 'integer' });
export const MoneyWithdrawn = message('MoneyWithdrawn', { amount: 'integer' });
export const AccountClosed = message('AccountClosed');

/** How much is in the account, and whether it is open. */
export const BalanceState = message(
  'BalanceState',
  { balance: 'integer', open: 'boolean' },
  { balance: 0, open: false },
);

export const balance = defineProjection(
  'Bank',
  'Account',
  'Balance',
  [AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountClosed],
  BalanceState,
  (state, event) => {
    switch (event.constructor) {
      case AccountOpened:
        state.open = true;
        break;
      case MoneyDeposited:
        state.balance += event.amount;
        break;
      case MoneyWithdrawn:
        state.balance -= event.amount;
        break;
      case AccountClosed:
        state.open = false;
        break;
    }
  },
);

function positive(amount) {
  if (amount <= 0) {
    throw new InvalidPayload(`amount must be more than zero, got ${amount}`);
  }
}

export const account = defineCommandHandler(
  'Bank',
  'Account',
  [OpenAccount, Deposit, Withdraw, CloseAccount],
  (command, ctx) => {
    if (command instanceof OpenAccount) {
      if (ctx.sequence() > 0) throw new Rejected('the account already exists');
      if (command.owner.trim() === '') throw new Rejected('an account needs an owner');
      return [new AccountOpened({ owner: command.owner })];
    }

    const state = ctx.project(balance);
    if (!state.open) {
      throw new Rejected(ctx.sequence() === 0 ? 'the account does not exist' : 'the account is closed');
    }
    switch (command.constructor) {
      case Deposit:
        positive(command.amount);
        if (!Number.isSafeInteger(state.balance + command.amount)) {
          throw new Rejected('the balance would overflow');
        }
        return [new MoneyDeposited({ amount: command.amount })];
      case Withdraw:
        positive(command.amount);
        if (command.amount > state.balance) {
          throw new Rejected(`insufficient funds: balance ${state.balance} is less than ${command.amount}`);
        }
        return [new MoneyWithdrawn({ amount: command.amount })];
      case CloseAccount:
        if (state.balance !== 0) {
          throw new Rejected(`the balance is ${state.balance}; only an empty account can be closed`);
        }
        return [new AccountClosed()];
    }
  },
);
