// Test fixture: the JavaScript part of a mixed deployment (the welcome
// letters of `examples/bank-js`: the notification handler and the `Letter`
// handler of the commands it sends), and `Test/FaultyJs`, a handler that misbehaves on
// request, to show that the host limits a JavaScript component as it limits
// a Rust one (`tests/components/faulty`).

import { defineCommandHandler, exportComponent, message } from '../../../sdk/js/cqrs-wasi.js';
import { letter, welcomeNewAccounts } from '../../../examples/bank-js/letters.js';

const Fail = message('Fail');
const Loop = message('Loop');
const Allocate = message('Allocate');

const faulty = defineCommandHandler('Test', 'FaultyJs', [Fail, Loop, Allocate], (command) => {
  switch (command.constructor) {
    case Fail:
      throw new Error('the handler failed on purpose');
    case Loop:
      for (;;) {
        // spin
      }
    case Allocate: {
      const hoard = [];
      for (;;) hoard.push(new Uint8Array(1 << 20).fill(1));
    }
  }
  return [];
});

export const { commandHandler, projection, notificationHandler } = exportComponent({
  commands: [letter, faulty],
  notifications: [welcomeNewAccounts],
});
