"""The bank-py component: `Bank/Account` with its `Balance` projection, and
the welcome letters its new accounts get.

Built with `cargo xtask components` (componentize-py, world
`domain-component` of `wit/`) into `target/components/bank_py.wasm`.
"""

from cqrs_wasi import export

from bank import account, balance
from letters import letter, welcome_new_accounts

CommandHandler, Projection, NotificationHandler = export(
    commands=[account, letter],
    projections=[balance],
    notifications=[welcome_new_accounts],
)
