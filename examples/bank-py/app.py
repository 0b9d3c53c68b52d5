"""The bank-py component: `Bank/Account` with its `Balance` projection, and
the letters its customers get.

Built with `cargo xtask components` (componentize-py, world
`domain-component` of `wit/`) into `target/components/bank_py.wasm`.
"""

from cqrs_wasi import export

from bank import account, balance
from letters import congratulate_savers, letter, welcome_new_accounts

CommandHandler, Projection, NotificationHandler = export(
    commands=[account, letter],
    projections=[balance],
    notifications=[welcome_new_accounts, congratulate_savers],
)
