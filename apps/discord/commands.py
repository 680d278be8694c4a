"""The slash commands, as registered with Discord (`manage.py discord_commands sync`)."""

from __future__ import annotations

from typing import Any

from apps.discord.interactions import COMMAND_NAME, STRING, SUB_COMMAND, USER

# Where the command may be used: 0 a server, 1 the bot's DMs (Discord's interaction context types).
_CONTEXTS = [0, 1]

COMMANDS: list[dict[str, Any]] = [
    {
        "name": COMMAND_NAME,
        "type": 1,  # CHAT_INPUT
        "description": "Trade safely: the money is held until the item is delivered",
        "contexts": _CONTEXTS,
        "integration_types": [0],
        "options": [
            {
                "type": SUB_COMMAND,
                "name": "create",
                "description": "Open a deal with someone",
                "options": [
                    {
                        "type": USER,
                        "name": "counterparty",
                        "description": "The other party of the deal",
                        "required": True,
                    },
                    {
                        "type": STRING,
                        "name": "amount",
                        "description": "The price, e.g. 149.99",
                        "required": True,
                        "max_length": 16,
                    },
                    {
                        "type": STRING,
                        "name": "item",
                        "description": "What is traded",
                        "required": True,
                        "max_length": 500,
                    },
                    {
                        "type": STRING,
                        "name": "role",
                        "description": "Your side of the deal (buyer if not given)",
                        "required": False,
                        "choices": [{"name": "buyer", "value": "buyer"}, {"name": "seller", "value": "seller"}],
                    },
                ],
            },
            {"type": SUB_COMMAND, "name": "list", "description": "Your latest deals"},
            {
                "type": SUB_COMMAND,
                "name": "status",
                "description": "One deal, and what you can do now",
                "options": [
                    {
                        "type": STRING,
                        "name": "id",
                        "description": "The deal's id (from /escrow list)",
                        "required": True,
                    },
                ],
            },
        ],
    }
]
