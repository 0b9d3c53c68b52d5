// The bank-js component: `Bank/Account` with its `Balance` projection, and
// the letters its customers get.
//
// Built with `cargo xtask components` (ComponentizeJS, world
// `domain-component` of `wit/`) into `target/components/bank_js.wasm`.

import { exportComponent } from '../../sdk/js/cqrs-wasi.js';
import { account, balance } from './bank.js';
import { congratulateSavers, letter, welcomeNewAccounts } from './letters.js';

const component = exportComponent({
  commands: [account, letter],
  projections: [balance],
  notifications: [welcomeNewAccounts, congratulateSavers],
});

export const { commandHandler, projection, notificationHandler } = component;
